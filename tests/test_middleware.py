"""SpeculativeMiddleware in agents built with langchain.agents.create_agent."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from spec_agent.errors import ConfigError
from spec_agent.middleware import SpeculativeMiddleware
from tests.chat_fakes import ScriptedVerifier, scripted, tool_reply

EXECUTED: list[str] = []


@tool
def cat(file_name: str) -> str:
    """Print a file's content."""
    EXECUTED.append(file_name)
    return "hello"


@pytest.fixture(autouse=True)
def _clear_executed():
    EXECUTED.clear()


def run_agent(cheap, strong, verifier, **options):
    middleware = SpeculativeMiddleware(cheap, verifier, **options)
    agent = create_agent(model=strong, tools=[cat], middleware=[middleware], system_prompt="Be brief.")
    return agent.invoke({"messages": [HumanMessage("Show notes.txt")]})["messages"]


def test_accepted_proposal_skips_agent_model():
    cheap = scripted(tool_reply("cat", file_name="notes.txt"), AIMessage("final_answer: It says hello."))
    strong = scripted()
    messages = run_agent(cheap, strong, ScriptedVerifier(0.9, 0.9))
    assert EXECUTED == ["notes.txt"]
    assert messages[-1].content == "It says hello."
    assert messages[1].response_metadata["spec_agent"]["decision"] == "accept"
    assert strong.prompts == []


def test_rejection_calls_agent_model():
    cheap = scripted(tool_reply("cat", file_name="note.txt"), AIMessage("final_answer: draft"))
    strong = scripted(tool_reply("cat", file_name="notes.txt", call_id="own-1"),
                      AIMessage("It says hello.", id="own-2"))
    messages = run_agent(cheap, strong, ScriptedVerifier(0.2, 0.2))
    assert EXECUTED == ["notes.txt"]
    assert messages[1].tool_calls[0]["id"] == "own-1"
    assert messages[1].response_metadata["spec_agent"]["decision"] == "escalate"
    assert messages[-1].id == "own-2"
    assert messages[-1].response_metadata["spec_agent"]["role"] == "strong"
    assert len(strong.prompts) == 2


def test_system_prompt_reaches_proposer():
    cheap = scripted(AIMessage("final_answer: ok"))
    run_agent(cheap, scripted(), ScriptedVerifier(0.9))
    first_prompt = cheap.prompts[0]
    assert first_prompt[0].type == "system"
    assert first_prompt[0].content == "Be brief."
    assert cheap.bound_tools == [["cat"]]


def test_unknown_tool_rejected_by_schema():
    cheap = scripted(tool_reply("rm", file_name="notes.txt"))
    strong = scripted(AIMessage("I will not delete anything."))
    verifier = ScriptedVerifier(0.99)
    messages = run_agent(cheap, strong, verifier)
    assert messages[-1].content == "I will not delete anything."
    assert verifier.seen == []
    assert EXECUTED == []


def test_async_agent_matches_sync():
    cheap = scripted(tool_reply("cat", file_name="notes.txt"), AIMessage("final_answer: hello"))
    middleware = SpeculativeMiddleware(cheap, ScriptedVerifier(0.9, 0.9))
    agent = create_agent(model=scripted(), tools=[cat], middleware=[middleware])
    result = asyncio.run(agent.ainvoke({"messages": [HumanMessage("Show notes.txt")]}))
    assert EXECUTED == ["notes.txt"]
    assert result["messages"][-1].content == "hello"


def test_async_rejection_awaits_agent_model():
    cheap = scripted(AIMessage("final_answer: draft"))
    strong = scripted(AIMessage("Own answer."))
    middleware = SpeculativeMiddleware(cheap, ScriptedVerifier(0.1))
    agent = create_agent(model=strong, tools=[cat], middleware=[middleware])
    result = asyncio.run(agent.ainvoke({"messages": [HumanMessage("hi")]}))
    assert result["messages"][-1].content == "Own answer."
    assert result["messages"][-1].response_metadata["spec_agent"]["decision"] == "escalate"


def test_nothing_to_verify_is_config_error():
    with pytest.raises(ConfigError, match="validate_schema"):
        SpeculativeMiddleware(scripted(), None, validate_schema=False)


def test_threshold_out_of_range_is_config_error():
    with pytest.raises(ConfigError, match="threshold"):
        SpeculativeMiddleware(scripted(), ScriptedVerifier(), threshold=2.0)
