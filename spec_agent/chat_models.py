"""The local transformers backend (`HFChatModel`) as a LangChain chat model with tool calling.

`SpecAgentChatModel` lets the embedded models (or any local directory or hub id) stand in
wherever LangChain expects a `BaseChatModel`: in `create_agent`, as a `speculative_node` model, or
as an ordinary agent's model. With tools bound, the model is prompted with the one-line action
format of `spec_agent.prompts` and decodes it as `LocalProposer` does: a `kind:` opening, then a
payload within the call grammar of the bound tools. The reply is parsed into native `tool_calls`.
Output that still does not parse (a call cut off by the token budget) becomes an
`invalid_tool_calls` entry, never a guessed call.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from spec_agent.actions import TOOL_KINDS
from spec_agent.prompts import KIND_OPENINGS, parse_action, render_chat


class SpecAgentChatModel(BaseChatModel):
    """A local causal LM, loaded with `HFChatModel`, behind LangChain's chat model interface.

    Generation is greedy and stops at the first newline (one action per reply). Each reply
    carries `usage_metadata` (token counts), `response_metadata["confidence"]` (geometric mean
    token probability) and, with tools bound, `response_metadata["action_kind"]` and
    `response_metadata["kind_probability"]` (the model's probability of that kind).

    Example:
        ```python
        model = SpecAgentChatModel(model_name="smollm2-135m-instruct")
        reply = model.bind_tools([ls]).invoke("List the files.")
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "smollm2-135m-instruct"
    """Embedded asset name, local directory or hub id."""
    role: str = "cheap"
    """Cost role recorded on the backend's calls."""
    backend: Any = Field(default=None, exclude=True)
    """A loaded `HFChatModel` to reuse; built from `model_name` on first use when None."""
    constrained: bool = True
    """Whether a reply with tools bound decodes a `kind:` opening, then calls within the bound
    tools' grammar. False lets the model write any text."""

    @property
    def _llm_type(self) -> str:
        return "spec-agent-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "role": self.role}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Bind tools (LangChain tools, functions or JSON schemas) to every later call.

        Args:
            tools: The tools on offer.
            **kwargs: Further call arguments; `tool_choice` is accepted and ignored, because the
                model decides between a call and a text action itself.
        """
        kwargs.pop("tool_choice", None)
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        from spec_agent.node import to_openai_messages

        tools = [tool["function"] for tool in kwargs.get("tools") or []]
        chat = _plain_chat(to_openai_messages(messages)) if not tools else render_chat(
            to_openai_messages(messages), tools
        )
        constraint = {"openings": KIND_OPENINGS, "tools": tools} if tools and self.constrained else {}
        generations, calls = self._backend().generate(chat, **constraint)
        generation, call = generations[0], calls[0]
        message = _reply(generation.text, parse=bool(tools))
        message.response_metadata.update({"confidence": generation.confidence, "model_name": self.model_name,
                                          "kind_probability": generation.kind_probability})
        message.usage_metadata = {
            "input_tokens": call.prompt_tokens or 0,
            "output_tokens": call.completion_tokens or 0,
            "total_tokens": (call.prompt_tokens or 0) + (call.completion_tokens or 0),
        }
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _backend(self) -> Any:
        if self.backend is None:
            from spec_agent.hf import HFChatModel

            self.backend = HFChatModel(self.model_name, role=self.role)  # type: ignore[arg-type]
        return self.backend


def _plain_chat(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"role": message.get("role", "user"), "content": str(message.get("content") or "")}
        for message in messages
    ]


def _reply(text: str, *, parse: bool) -> AIMessage:
    """Map generated text to a reply: native tool calls, a text action, or an invalid call."""
    if not parse:
        return AIMessage(content=text)
    proposal = parse_action(text)
    action = proposal.action
    if action is None:
        invalid = {"name": None, "args": text, "id": _call_id(), "error": proposal.error,
                   "type": "invalid_tool_call"}
        return AIMessage(content=text, invalid_tool_calls=[invalid])
    if action.kind in TOOL_KINDS:
        calls = [{"name": call.name, "args": dict(call.arguments), "id": _call_id()}
                 for call in action.tool_calls]
        return AIMessage(content="", tool_calls=calls, response_metadata={"action_kind": action.kind})
    return AIMessage(content=action.content, response_metadata={"action_kind": action.kind})


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"
