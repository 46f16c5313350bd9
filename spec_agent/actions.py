"""The next action of an agent step, and its conversion to and from LangChain messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from spec_agent.errors import ConfigError

ActionKind = Literal[
    "tool_call",
    "retrieval",
    "file_read",
    "file_write",
    "repair",
    "verifier",
    "ask_clarification",
    "final_answer",
    "BLOCKED",
]
ACTION_KINDS: tuple[str, ...] = get_args(ActionKind)

# Kinds whose payload is one or more tool calls; the others carry text content.
TOOL_KINDS: frozenset[str] = frozenset(
    {"tool_call", "retrieval", "file_read", "file_write", "repair", "verifier"}
)


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call of one tool by name with keyword arguments."""

    name: str
    """Tool name as declared in the tool's JSON schema."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments; values are JSON-compatible literals."""

    def to_dict(self) -> dict[str, Any]:
        """Return the call as a JSON-compatible dict."""
        return {"name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True, kw_only=True)
class Action:
    """What one agent step decides: a kind plus tool calls or text content.

    Tool kinds (`tool_call`, `retrieval`, `file_read`, `file_write`, `repair`, `verifier`) carry
    one or more `tool_calls` (several for parallel calls); the other kinds carry `content`.
    """

    kind: ActionKind
    """One of `ACTION_KINDS`."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Calls to run, in order; empty for text kinds."""
    content: str = ""
    """Answer, question or refusal text; empty for tool kinds."""

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ConfigError(
                f"Invalid action kind {self.kind!r}; expected one of {', '.join(ACTION_KINDS)}."
            )
        if self.kind in TOOL_KINDS and not self.tool_calls:
            raise ConfigError(f"Action kind {self.kind!r} needs at least one tool call.")

    @property
    def tool_call(self) -> ToolCall | None:
        """The first tool call, or None for text kinds."""
        return self.tool_calls[0] if self.tool_calls else None

    def to_dict(self) -> dict[str, Any]:
        """Return the action as a JSON-compatible dict (the eval-v3 `action` field)."""
        data: dict[str, Any] = {"kind": self.kind}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.content:
            data["content"] = self.content
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        """Build an action from `to_dict` output; a single `tool_call` key is also accepted."""
        calls = data.get("tool_calls")
        if calls is None and data.get("tool_call") is not None:
            calls = [data["tool_call"]]
        tool_calls = tuple(
            ToolCall(name=str(call["name"]), arguments=dict(call.get("arguments") or {}))
            for call in calls or ()
        )
        return cls(kind=data["kind"], tool_calls=tool_calls, content=str(data.get("content") or ""))

    def to_message(self, **metadata: Any) -> Any:
        """Convert to a LangChain `AIMessage`; tool calls become its `tool_calls`.

        Args:
            **metadata: Extra entries for the message's `response_metadata`.
        """
        from langchain_core.messages import AIMessage

        tool_calls = [
            {"name": call.name, "args": dict(call.arguments), "id": f"call_{uuid.uuid4().hex[:12]}"}
            for call in self.tool_calls
        ]
        return AIMessage(
            content=self.content,
            tool_calls=tool_calls,
            response_metadata={"action_kind": self.kind, **metadata},
        )

    @classmethod
    def from_message(cls, message: Any, *, kind: ActionKind | None = None) -> Action:
        """Build an action from a LangChain `AIMessage`.

        Args:
            message: The message to convert.
            kind: Kind to use; defaults to the message's `action_kind` metadata, else
                `tool_call` when it has tool calls and `final_answer` when it has none.
        """
        calls = tuple(
            ToolCall(name=call["name"], arguments=dict(call.get("args") or {}))
            for call in getattr(message, "tool_calls", None) or ()
        )
        metadata = getattr(message, "response_metadata", None) or {}
        chosen = kind or metadata.get("action_kind") or ("tool_call" if calls else "final_answer")
        content = message.content if isinstance(message.content, str) else ""
        return cls(kind=chosen, tool_calls=calls, content="" if calls else content)
