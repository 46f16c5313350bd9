"""Graph logic of the speculation loop with langchain-core fake chat models."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from spec_agent.graphs.configurations import build_configuration, get_configuration
from spec_agent.graphs.speculation import SpeculationLoop, build_speculation_graph
from spec_agent.proposers import LangChainProposer

MESSAGES = [{"role": "user", "content": "List the files here."}]
TOOLS = [{"name": "ls", "description": "List files.", "parameters": {"type": "object", "properties": {}}}]


def fake_proposer(*replies: str, role: str = "cheap") -> LangChainProposer:
    model = GenericFakeChatModel(messages=iter([AIMessage(content=text) for text in replies]))
    return LangChainProposer(model, role=role)


class ScriptedVerifier:
    """Returns fixed scores in order and records what it scored."""

    name = "scripted"

    def __init__(self, *scores: float | None, fail: bool = False) -> None:
        self.scores = list(scores)
        self.fail = fail
        self.seen: list[Proposal] = []

    def score(self, messages, tools, proposal):
        self.seen.append(proposal)
        if self.fail:
            raise TimeoutError("verifier timed out")
        return self.scores.pop(0), []


def run(graph) -> dict:
    return graph.invoke({"messages": MESSAGES, "tools": TOOLS, "seed": 0, "step_id": "ex1"})


def test_accepted_proposal_skips_fallback():
    strong = fake_proposer("file_read: ls(a=True)", role="strong")
    graph = build_speculation_graph(
        proposer=fake_proposer("file_read: ls()"), verifier=ScriptedVerifier(0.9), fallback=strong
    )
    decision = run(graph)["decision"]
    assert decision.decision == "accept"
    assert decision.fallback is None
    assert decision.action.tool_call.name == "ls"
    assert decision.action.tool_call.arguments == {}
    assert [call.role for call in decision.calls] == ["cheap"]


def test_rejected_proposal_escalates_and_charges_fallback():
    graph = build_speculation_graph(
        proposer=fake_proposer("file_read: ls()"),
        verifier=ScriptedVerifier(0.2),
        fallback=fake_proposer("file_read: ls(a=True)", role="strong"),
    )
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.verdicts == ("REJECT",)
    assert decision.action.tool_call.arguments == {"a": True}
    assert str(decision.cost) == "1.15"


def test_unparsed_proposal_rejected_without_verifier_call():
    verifier = ScriptedVerifier(0.99)
    graph = build_speculation_graph(
        proposer=fake_proposer("I think we should list files"),
        verifier=verifier,
        fallback=fake_proposer("final_answer: done", role="strong"),
    )
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.proposals[0].valid is False
    assert verifier.seen == []


def test_verifier_failure_fails_closed():
    graph = build_speculation_graph(
        proposer=fake_proposer("file_read: ls()"),
        verifier=ScriptedVerifier(fail=True),
        fallback=fake_proposer("file_read: ls(a=True)", role="strong"),
    )
    result = run(graph)
    assert result["decision"].decision == "escalate"
    assert result["errors"] == ["verifier: TimeoutError: verifier timed out"]


def test_best_of_n_picks_highest_accepted():
    graph = build_speculation_graph(
        proposer=fake_proposer("file_read: ls()", "file_read: pwd()", "file_read: cd(folder='x')"),
        verifier=ScriptedVerifier(0.6, 0.95, 0.4),
        fallback=fake_proposer("final_answer: unused", role="strong"),
        n_proposals=3,
    )
    decision = run(graph)["decision"]
    assert decision.chosen == 1
    assert decision.verdicts == ("ACCEPT", "ACCEPT", "REJECT")
    assert decision.action.tool_call.name == "pwd"


def test_fallback_failure_names_step():
    class Broken:
        name = "broken"

        def propose(self, *args, **kwargs):
            raise ConnectionError("server down")

    graph = build_speculation_graph(proposer=None, verifier=None, fallback=Broken())
    with pytest.raises(SpecAgentRuntimeError, match="ex1"):
        run(graph)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proposer": None, "verifier": None, "fallback": None}, "neither"),
        ({"n_proposals": 0}, "n_proposals"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {
        "proposer": fake_proposer("final_answer: x"),
        "verifier": ScriptedVerifier(0.5),
        "fallback": fake_proposer("final_answer: y"),
    }
    arguments.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        build_speculation_graph(**arguments)


def test_configuration_a_calls_only_strong():
    graph = build_configuration(
        "A",
        cheap=fake_proposer(),
        strong=fake_proposer("final_answer: done", role="strong"),
        judge=ScriptedVerifier(),
        verifier=ScriptedVerifier(),
    )
    decision = run(graph)["decision"]
    assert decision.decision == "direct"
    assert [call.role for call in decision.calls] == ["strong"]


def test_unknown_configuration_lists_choices():
    with pytest.raises(ConfigError, match="A, B, C, D, E"):
        get_configuration("F")


SCENARIOS = {
    "accept": dict(cheap=["file_read: ls()"], scores=[0.9], n=1),
    "escalate": dict(cheap=["file_read: ls()"], scores=[0.1], n=1),
    "invalid proposal": dict(cheap=["not an action"], scores=[], n=1),
    "best of three": dict(cheap=["file_read: ls()", "final_answer: done", "tool_call: ls()"],
                          scores=[0.6, 0.95, 0.2], n=3),
    "verifier failure": dict(cheap=["file_read: ls()"], scores=[0.9], n=1, fail=True),
}


def loop_for(scenario: dict) -> SpeculationLoop:
    return SpeculationLoop(
        proposer=fake_proposer(*scenario["cheap"]),
        verifier=ScriptedVerifier(*scenario["scores"], fail=scenario.get("fail", False)),
        fallback=fake_proposer("final_answer: strong", role="strong"),
        n_proposals=scenario["n"],
    )


def comparable(state: dict) -> tuple:
    decision = state["decision"]
    calls = tuple((call.role, call.prompt_tokens, call.completion_tokens) for call in decision.calls)
    return (decision.decision, decision.action, decision.scores, decision.verdicts, decision.chosen,
            decision.cost, calls, tuple(state.get("errors", [])))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_walk_and_compiled_graph_agree(name):
    inputs = {"messages": MESSAGES, "tools": TOOLS, "seed": 0, "step_id": "ex1"}
    walked = loop_for(SCENARIOS[name]).invoke(dict(inputs))
    compiled = loop_for(SCENARIOS[name]).compile().invoke(dict(inputs))
    awalked = asyncio.run(loop_for(SCENARIOS[name]).ainvoke(dict(inputs)))
    assert comparable(walked) == comparable(compiled) == comparable(awalked)
    assert walked["decision"].decision == {"accept": "accept", "best of three": "accept"}.get(name, "escalate")
