"""Proposers: models that produce candidate actions for a context of messages and tools.

Any model can propose: a local transformers model (`LocalProposer`), a LangChain chat model
prompted with the one-line action format (`LangChainProposer`), or a chat model with native tool
calling (`ChatModelProposer`). `as_proposer` picks the right one for a model argument.

Draft calls (every role but `strong`) run with LangGraph's `nostream` tag, so that
`stream_mode="messages"` never shows a user a draft that the verifier may reject.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from spec_agent.actions import ACTION_KINDS, TOOL_KINDS, Action, ToolCall
from spec_agent.cost import ModelCall, Role
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError
from spec_agent.prompts import KIND_OPENINGS, parse_action, render_action, render_chat

NOSTREAM_TAG = "nostream"
"""LangGraph's tag (`langgraph.constants.TAG_NOSTREAM`) that keeps a model call out of the
`messages` stream."""


@runtime_checkable
class Proposer(Protocol):
    """Anything that turns a context into one or more candidate actions."""

    name: str

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Return `n` proposals (the first greedy, the rest sampled) and the calls made."""
        ...


class LocalProposer:
    """A proposer over a local model (`HFChatModel` or a `CachedModel` around one).

    The first proposal is the greedy action; further proposals are sampled, so configuration E's
    first proposal is exactly configuration D's.

    By default every generation is made to open with one of the nine `kind:` prefixes, chosen by
    the model's likelihood of each in full. A small model then always names one of the nine
    kinds, and that kind is the most likely of the nine rather than whatever its first greedy
    token led to. A model with an opening head (`HFChatModel(opening_head=...)`) lets the head
    choose the kind instead. After a tool kind's opening, the payload is decoded within the call
    grammar of the context's tools (`CallGrammar`), so it parses, names an available tool and fits
    its schema.

    Args:
        model: An object with `name` and `generate(chat, *, n, sample, seed, openings, tools)`.
        openings: Allowed openings of each generation; None decodes freely.
        constrain_calls: Decode tool payloads within the call grammar; False leaves them free.
    """

    def __init__(
        self, model: Any, *, openings: Sequence[str] | None = KIND_OPENINGS, constrain_calls: bool = True
    ) -> None:
        self.model = model
        self.name = model.name
        self.openings = tuple(openings) if openings is not None else None
        self.constrain_calls = constrain_calls

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Return `n` parsed proposals and the model calls behind them."""
        chat = render_chat(messages, tools)
        constraint: dict[str, Any] = {}
        if self.openings is not None:
            constraint["openings"] = self.openings
            if self.constrain_calls and tools:
                constraint["tools"] = tools
        generations, calls = self.model.generate(chat, **constraint)
        if n > 1:
            extra, extra_calls = self.model.generate(chat, n=n - 1, sample=True, seed=seed, **constraint)
            generations, calls = generations + extra, calls + extra_calls
        proposals = [parse_action(item.text, confidence=item.confidence,
                                  kind_probability=item.kind_probability)
                     for item in generations]
        return proposals, calls


class LangChainProposer:
    """A proposer over any LangChain chat model, prompted with the same action format.

    The model's confidence is read from token log-probabilities in its response metadata when the
    provider returns them; otherwise it is None, and a confidence verifier rejects the proposal.

    Args:
        model: A `BaseChatModel`.
        role: Cost role of its calls.
    """

    def __init__(self, model: Any, *, role: Role = "cheap") -> None:
        self.model = model
        self.role = role
        self.name = model_name(model)

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Invoke the chat model `n` times, one after the other, and parse each reply."""
        chat = render_chat(messages, tools)
        timed = [_timed_invoke(self.model, chat, self.role) for _ in range(n)]
        return self._parse(timed)

    async def apropose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Invoke the chat model `n` times concurrently and parse each reply."""
        chat = render_chat(messages, tools)
        timed = await asyncio.gather(*(_atimed_invoke(self.model, chat, self.role) for _ in range(n)))
        return self._parse(list(timed))

    def _parse(self, timed: list[tuple[Any, float]]) -> tuple[list[Proposal], list[ModelCall]]:
        proposals = [parse_action(_text(reply), confidence=_confidence(reply)) for reply, _ in timed]
        calls = [_usage_call(reply, self.role, self.name, latency) for reply, latency in timed]
        return proposals, calls


class ChatModelProposer:
    """A proposer over a LangChain chat model with native tool calling (`bind_tools`).

    The tools are bound on each call, and the reply's `tool_calls` become the action. The action
    kind follows one rule: the reply's `response_metadata["action_kind"]` when it names a kind that
    fits the reply (a tool kind for calls, a text kind for text); else, for text, a leading
    `<kind>:` prefix in the one-line action format; else `tool_call` for calls and `final_answer`
    for text. A reply with malformed tool calls (`invalid_tool_calls`) or no content at all is an
    invalid proposal, which the decision rejects.

    Args:
        model: A `BaseChatModel` that implements `bind_tools`.
        role: Cost role of its calls; every role but `strong` runs with the `nostream` tag.
    """

    def __init__(self, model: Any, *, role: Role = "cheap") -> None:
        self.model = model
        self.role = role
        self.name = model_name(model)
        self._bound: dict[str, Any] = {}

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Invoke the tool-bound model `n` times, one after the other, and map each reply."""
        model, chat = self._bind(tools), to_langchain_messages(messages)
        timed = [_timed_invoke(model, chat, self.role) for _ in range(n)]
        return self._parse(timed)

    async def apropose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Invoke the tool-bound model `n` times concurrently and map each reply."""
        model, chat = self._bind(tools), to_langchain_messages(messages)
        timed = await asyncio.gather(*(_atimed_invoke(model, chat, self.role) for _ in range(n)))
        return self._parse(list(timed))

    def _bind(self, tools: list[dict[str, Any]]) -> Any:
        key = json.dumps(tools, sort_keys=True, default=str)
        if key not in self._bound:
            self._bound[key] = self.model.bind_tools(tools) if tools else self.model
        return self._bound[key]

    def _parse(self, timed: list[tuple[Any, float]]) -> tuple[list[Proposal], list[ModelCall]]:
        proposals = [proposal_from_message(reply) for reply, _ in timed]
        calls = [_usage_call(reply, self.role, self.name, latency) for reply, latency in timed]
        return proposals, calls


def proposal_from_message(reply: Any) -> Proposal:
    """Map a chat model's `AIMessage` to a proposal by the kind rule of `ChatModelProposer`.

    `response_metadata["kind_probability"]`, which `SpecAgentChatModel` reports, goes onto the
    proposal.
    """
    proposal = _message_proposal(reply)
    probability = (getattr(reply, "response_metadata", None) or {}).get("kind_probability")
    # Metadata of a served model is untrusted: only a probability (NaN fails both checks) counts.
    if isinstance(probability, (int, float)) and not isinstance(probability, bool) and 0.0 <= probability <= 1.0:
        return dataclasses.replace(proposal, kind_probability=float(probability))
    return proposal


def _message_proposal(reply: Any) -> Proposal:
    confidence = _confidence(reply)
    invalid = getattr(reply, "invalid_tool_calls", None) or []
    if invalid:
        names = [str(call.get("name")) for call in invalid]
        return Proposal(text=_text(reply) or json.dumps(invalid, default=str)[:300], action=None,
                        error=f"malformed tool call(s): {names}", confidence=confidence)
    hinted = ((getattr(reply, "response_metadata", None) or {}).get("action_kind"))
    if getattr(reply, "tool_calls", None):
        return _tool_proposal(reply, hinted, confidence)
    return _text_proposal(_text(reply), hinted, confidence)


def _tool_proposal(reply: Any, hinted: Any, confidence: float | None) -> Proposal:
    kind = hinted if hinted in TOOL_KINDS else "tool_call"
    calls = []
    for call in reply.tool_calls:
        if not isinstance(call.get("args"), dict):
            return Proposal(text=_text(reply), action=None, confidence=confidence,
                            error=f"tool call {call.get('name')!r} has non-object arguments")
        calls.append(ToolCall(name=str(call["name"]), arguments=dict(call["args"])))
    action = Action(kind=kind, tool_calls=tuple(calls))
    return Proposal(text=render_action(action), action=action, confidence=confidence)


def _text_proposal(text: str, hinted: Any, confidence: float | None) -> Proposal:
    if not text.strip():
        return Proposal(text=text, action=None, error="empty reply", confidence=confidence)
    if hinted in ACTION_KINDS and hinted not in TOOL_KINDS:
        return Proposal(text=text, action=Action(kind=hinted, content=text.strip()),
                        confidence=confidence)
    parsed = parse_action(text, confidence=confidence)
    if parsed.action is not None and parsed.action.kind not in TOOL_KINDS:
        return parsed
    action = Action(kind="final_answer", content=text.strip())
    return Proposal(text=text, action=action, confidence=confidence)


def model_name(model: Any) -> str:
    """Return a readable name of a model: its `model_name`, `model` or `name`, else its class."""
    for attribute in ("model_name", "model", "name"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def supports_tool_calling(model: Any) -> bool:
    """Return True when a LangChain chat model overrides `bind_tools`."""
    from langchain_core.language_models import BaseChatModel

    bind_tools = getattr(type(model), "bind_tools", None)
    return bind_tools is not None and bind_tools is not BaseChatModel.bind_tools


def as_proposer(model: Any, *, role: Role) -> Proposer | None:
    """Wrap a model argument as a proposer.

    Args:
        model: None; a `Proposer`; a string naming an embedded asset, a local directory or a hub id
            (loaded with `HFChatModel`); an `HFChatModel`; or a LangChain `BaseChatModel`, which
            gets native tool calling when it implements `bind_tools` and the one-line action
            format otherwise.
        role: Cost role of the model's calls.

    Raises:
        ConfigError: The argument is none of these.
    """
    from langchain_core.language_models import BaseChatModel

    if model is None or isinstance(model, Proposer):
        return model
    if isinstance(model, str):
        from spec_agent.hf import HFChatModel

        return LocalProposer(HFChatModel(model, role=role))
    if isinstance(model, BaseChatModel):
        if supports_tool_calling(model):
            return ChatModelProposer(model, role=role)
        return LangChainProposer(model, role=role)
    if callable(getattr(model, "generate", None)) and isinstance(getattr(model, "name", None), str):
        return LocalProposer(model)
    raise ConfigError(
        f"Invalid model {type(model).__name__!r} for role {role!r}; pass a LangChain chat model, "
        "an HFChatModel, a Proposer or a model name (asset, local directory or hub id)."
    )


async def apropose(
    proposer: Proposer, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int,
    seed: int,
) -> tuple[list[Proposal], list[ModelCall]]:
    """Run a proposer's async path: its `apropose`, else `propose` in a worker thread."""
    method = getattr(proposer, "apropose", None)
    if method is not None:
        return await method(messages, tools, n=n, seed=seed)
    return await asyncio.to_thread(proposer.propose, messages, tools, n=n, seed=seed)


def to_langchain_messages(messages: list[dict[str, Any]]) -> list[Any]:
    """Convert OpenAI-layout message dicts (this package's context format) to LangChain messages.

    Keys outside the OpenAI layout (`action_kind`) are dropped; the kind survives in the
    `AIMessage`'s `response_metadata`.
    """
    from langchain_core.messages import AIMessage, convert_to_messages

    converted = []
    for message in messages:
        plain = {key: value for key, value in message.items() if key != "action_kind"}
        item = convert_to_messages([plain])[0]
        if isinstance(item, AIMessage) and message.get("action_kind"):
            item.response_metadata["action_kind"] = message["action_kind"]
        converted.append(item)
    return converted


def _draft_config(role: Role) -> dict[str, Any]:
    return {} if role == "strong" else {"tags": [NOSTREAM_TAG]}


def _timed_invoke(model: Any, chat: Any, role: Role) -> tuple[Any, float]:
    started = time.perf_counter()
    reply = model.invoke(chat, config=_draft_config(role))
    return reply, time.perf_counter() - started


async def _atimed_invoke(model: Any, chat: Any, role: Role) -> tuple[Any, float]:
    started = time.perf_counter()
    reply = await model.ainvoke(chat, config=_draft_config(role))
    return reply, time.perf_counter() - started


def _text(reply: Any) -> str:
    content = getattr(reply, "content", "")
    if isinstance(content, str):
        return content
    parts = [part.get("text", "") if isinstance(part, dict) else str(part) for part in content]
    return "".join(parts)


def _confidence(reply: Any) -> float | None:
    metadata = getattr(reply, "response_metadata", None) or {}
    if isinstance(metadata.get("confidence"), (int, float)):
        return float(metadata["confidence"])
    logprobs = (metadata.get("logprobs") or {}).get("content")
    if not logprobs:
        return None
    values = [item["logprob"] for item in logprobs if "logprob" in item]
    return math.exp(sum(values) / len(values)) if values else None


def _usage_call(reply: Any, role: Role, name: str, latency: float) -> ModelCall:
    # Providers that report no usage leave the token counts unknown rather than zero.
    usage = getattr(reply, "usage_metadata", None) or {}
    return ModelCall(
        role=role,
        model=name,
        prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"),
        latency_s=latency,
    )
