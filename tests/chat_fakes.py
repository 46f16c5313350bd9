"""Scripted LangChain chat models for graph tests: tool calling, streaming and call recording."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.utils.function_calling import convert_to_openai_tool


class ToolCallingFake(GenericFakeChatModel):
    """`GenericFakeChatModel` with `bind_tools`, streaming of tool calls and a record of prompts."""

    prompts: list[Any] = []
    bound_tools: list[Any] = []

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Bind tools in the OpenAI layout, as provider integrations do."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        self.bound_tools.append([tool["function"]["name"] for tool in formatted])
        return self.bind(tools=formatted, **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.prompts.append(messages)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop=stop, run_manager=run_manager, **kwargs).generations[0].message
        words = message.content.split(" ") if message.content else [""]
        for index, word in enumerate(words):
            last = index == len(words) - 1
            chunk = AIMessageChunk(
                content=word if last else word + " ",
                id=message.id,
                tool_call_chunks=_call_chunks(message) if last else [],
                response_metadata=dict(message.response_metadata) if last else {},
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)


def _call_chunks(message: AIMessage) -> list[dict[str, Any]]:
    return [
        {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": index}
        for index, call in enumerate(message.tool_calls)
    ]


def tool_reply(tool_name: str, /, *, call_id: str = "call_1", **arguments: Any) -> AIMessage:
    """Return an AIMessage with one tool call."""
    return AIMessage(content="", tool_calls=[{"name": tool_name, "args": arguments, "id": call_id}])


def scripted(*replies: AIMessage | str) -> ToolCallingFake:
    """Return a tool-calling fake that answers with `replies` in order."""
    return ToolCallingFake(messages=iter(list(replies)), prompts=[], bound_tools=[])


class ScriptedVerifier:
    """Returns fixed scores in order and records the proposals it scored."""

    name = "scripted"

    def __init__(self, *scores: float | None, fail: bool = False) -> None:
        self.scores = list(scores)
        self.fail = fail
        self.seen: list[Any] = []

    def score(self, messages, tools, proposal):
        self.seen.append(proposal)
        if self.fail:
            raise TimeoutError("verifier timed out")
        return self.scores.pop(0), []


class TagRecorder(BaseCallbackHandler):
    """Records the tags and metadata of every chat model run."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], dict[str, Any]]] = []

    def on_chat_model_start(self, serialized, messages, *, tags=None, metadata=None, **kwargs):
        self.runs.append((list(tags or []), dict(metadata or {})))
