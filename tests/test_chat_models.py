"""SpecAgentChatModel: the local backend as a LangChain chat model with native tool calls."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from spec_agent.chat_models import SpecAgentChatModel
from spec_agent.cost import ModelCall
from spec_agent.hf import Generation, GenerationConfig, HFChatModel
from spec_agent.prompts import KIND_OPENINGS
from spec_agent.proposers import ChatModelProposer, as_proposer, proposal_from_message
from tests.tiny_models import build_causal_lm


@tool
def touch(file_name: str) -> str:
    """Create an empty file."""
    return ""


@tool
def lock(unlock: bool) -> str:
    """Lock or unlock the doors."""
    return ""


class ScriptedBackend:
    """Stands in for HFChatModel: returns fixed texts and records the chats it got."""

    name = "scripted-backend"

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.chats: list[list[dict[str, str]]] = []
        self.options: list[dict] = []

    def generate(self, chat, **options):
        self.chats.append(chat)
        self.options.append(options)
        text = self.texts.pop(0)
        call = ModelCall(role="cheap", model=self.name, prompt_tokens=12, completion_tokens=5)
        kind_probability = 0.6 if options.get("openings") else None
        return [Generation(text=text, confidence=0.75, completion_tokens=5, kind_probability=kind_probability)], [call]


def test_tool_line_becomes_native_call():
    model = SpecAgentChatModel(model_name="scripted", backend=ScriptedBackend("file_write: touch(file_name='a.txt')"))
    reply = model.bind_tools([touch]).invoke([HumanMessage("Create a.txt")])
    assert reply.tool_calls[0]["name"] == "touch"
    assert reply.tool_calls[0]["args"] == {"file_name": "a.txt"}
    assert reply.response_metadata["action_kind"] == "file_write"
    assert reply.response_metadata["confidence"] == 0.75
    assert reply.usage_metadata["input_tokens"] == 12


def test_prompt_lists_bound_tools():
    backend = ScriptedBackend("final_answer: done")
    SpecAgentChatModel(backend=backend).bind_tools([touch]).invoke("Create a.txt")
    assert "- touch(file_name: string)" in backend.chats[0][0]["content"]


def test_bound_tools_constrain_decoding():
    backend = ScriptedBackend("final_answer: done", "final_answer: done", "Hello")
    SpecAgentChatModel(backend=backend).bind_tools([touch]).invoke("Create a.txt")
    SpecAgentChatModel(backend=backend, constrained=False).bind_tools([touch]).invoke("Create a.txt")
    SpecAgentChatModel(backend=backend).invoke("hi")
    assert backend.options[0]["openings"] == KIND_OPENINGS
    assert [tool["name"] for tool in backend.options[0]["tools"]] == ["touch"]
    assert backend.options[1] == {}
    assert backend.options[2] == {}


def test_text_action_keeps_kind():
    model = SpecAgentChatModel(backend=ScriptedBackend("ask_clarification: Which folder?"))
    reply = model.bind_tools([touch]).invoke("Create a file")
    assert reply.content == "Which folder?"
    assert reply.tool_calls == []
    assert reply.response_metadata["action_kind"] == "ask_clarification"


def test_unparsed_output_is_invalid_call():
    model = SpecAgentChatModel(backend=ScriptedBackend("I think touch maybe", "touch it"))
    reply = model.bind_tools([touch]).invoke("Create a file")
    assert reply.tool_calls == []
    assert len(reply.invalid_tool_calls) == 1
    tools = [{"name": "touch", "parameters": {"type": "object", "properties": {}}}]
    proposals, _ = ChatModelProposer(model).propose([{"role": "user", "content": "x"}], tools)
    assert proposals[0].valid is False
    assert "malformed tool call" in proposals[0].error


def test_without_tools_replies_plain_text():
    model = SpecAgentChatModel(backend=ScriptedBackend("Hello there"))
    reply = model.invoke("hi")
    assert reply.content == "Hello there"
    assert reply.invalid_tool_calls == []


def test_chat_model_proposer_maps_calls():
    model = SpecAgentChatModel(backend=ScriptedBackend("file_write: touch(file_name='b.txt')"))
    proposer = as_proposer(model, role="cheap")
    assert isinstance(proposer, ChatModelProposer)
    tools = [{"name": "touch", "description": "Create a file.",
              "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}}}}]
    proposals, calls = proposer.propose([{"role": "user", "content": "make b.txt"}], tools)
    assert proposals[0].action.kind == "file_write"
    assert proposals[0].action.tool_call.arguments == {"file_name": "b.txt"}
    assert proposals[0].confidence == 0.75
    assert proposals[0].kind_probability == 0.6
    assert calls[0].prompt_tokens == 12


@pytest.mark.parametrize("value", [float("nan"), 1.5, -0.1, True, "0.9"])
def test_reported_kind_probability_checked(value):
    reply = AIMessage("final_answer: done", response_metadata={"kind_probability": value})
    assert proposal_from_message(reply).kind_probability is None


def test_tiny_transformers_model_runs(tmp_path):
    directory = build_causal_lm(tmp_path)
    backend = HFChatModel(str(directory), role="cheap", generation=GenerationConfig(max_new_tokens=6))
    model = SpecAgentChatModel(model_name=str(directory), backend=backend)
    reply = model.bind_tools([touch]).invoke([HumanMessage("Create a.txt")])
    assert reply.usage_metadata["output_tokens"] >= 1
    assert 0.0 < reply.response_metadata["confidence"] <= 1.0
    assert len(reply.tool_calls) + len(reply.invalid_tool_calls) + int(bool(reply.content)) >= 1


def test_tiny_model_calls_bound_tool(tmp_path):
    """A random model's calls parse only because decoding stays within the bound tool's grammar.

    The argument is a boolean, so no string can run past the token budget.
    """
    directory = build_causal_lm(tmp_path)
    backend = HFChatModel(str(directory), role="cheap", generation=GenerationConfig(max_new_tokens=32))
    model = SpecAgentChatModel(model_name=str(directory), backend=backend)
    reply = model.bind_tools([lock]).invoke([HumanMessage("Lock the doors.")])
    assert reply.invalid_tool_calls == []
    for call in reply.tool_calls:
        assert call["name"] == "lock"
        assert isinstance(call["args"]["unlock"], bool)


def test_string_model_builds_local_backend():
    model = SpecAgentChatModel(model_name="some/local-dir")
    backend = model._backend()
    assert isinstance(backend, HFChatModel)
    assert backend.name == "some/local-dir"
    with pytest.raises(Exception, match="some/local-dir"):
        backend.load()
