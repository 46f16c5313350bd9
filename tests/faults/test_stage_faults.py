"""Faults injected into each stage of the speculation graph: proposer, verifier and fallback.

A failing or silent proposer and a failing verifier must send the step to the fallback model
(the decision fails closed); a failing fallback has nothing left to escalate to, so its error
propagates as `SpecAgentRuntimeError` naming the step.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from langgraph.errors import GraphInterrupt

from spec_agent.cost import ModelCall
from spec_agent.errors import SpecAgentRuntimeError
from spec_agent.graphs.speculation import build_speculation_graph
from spec_agent.prompts import parse_action
from tests.security.tally import TALLY

MESSAGES = [{"role": "user", "content": "List the files here."}]
TOOLS = [{"name": "ls", "description": "List files.",
          "parameters": {"type": "object", "properties": {"a": {"type": "boolean"}}}}]
STEP_ID = "thread-7:step-3"


class ScriptedProposer:
    """Proposer that parses fixed outputs, or raises `error`, and counts its calls."""

    def __init__(self, *outputs: str, error: BaseException | None = None, name: str = "cheap",
                 role: str = "cheap") -> None:
        self.outputs = list(outputs)
        self.error = error
        self.name = name
        self.role = role
        self.calls = 0

    def propose(self, messages, tools, *, n=1, seed=0):
        self.calls += 1
        if self.error is not None:
            raise self.error
        texts = self.outputs[:n]
        calls = [ModelCall(role=self.role, model=self.name, prompt_tokens=10, completion_tokens=3)
                 for _ in texts]
        return [parse_action(text, confidence=0.9) for text in texts], calls


class ScriptedVerifier:
    """Verifier that returns fixed scores in order; an exception in the list is raised instead."""

    name = "scripted"

    def __init__(self, *scores) -> None:
        self.scores = list(scores)
        self.seen = []

    def score(self, messages, tools, proposal):
        self.seen.append(proposal)
        score = self.scores.pop(0)
        if isinstance(score, BaseException):
            raise score
        return score, [ModelCall(role="verifier", model=self.name)]


def strong(*outputs: str, error: BaseException | None = None) -> ScriptedProposer:
    return ScriptedProposer(*outputs, error=error, name="strong", role="strong")


def run(graph) -> dict:
    return graph.invoke({"messages": MESSAGES, "tools": TOOLS, "seed": 0, "step_id": STEP_ID})


def inject(count: int = 1) -> None:
    TALLY["faults injected"] += count


def survived(count: int = 1) -> None:
    TALLY["faults survived"] += count


@pytest.mark.parametrize(
    "error",
    [RuntimeError("model server returned 500"), TimeoutError("proposer timed out"),
     ConnectionError("connection reset"), ValueError("bad response"), MemoryError()],
    ids=["runtime", "timeout", "connection", "value", "memory"],
)
def test_proposer_exception_escalates(error):
    fallback = strong("file_read: ls(a=True)")
    verifier = ScriptedVerifier(0.99)
    graph = build_speculation_graph(
        proposer=ScriptedProposer(error=error), verifier=verifier, fallback=fallback
    )
    inject()
    result = run(graph)
    decision = result["decision"]
    assert decision.decision == "escalate"
    assert decision.proposals == ()
    assert decision.action.tool_call.arguments == {"a": True}
    assert fallback.calls == 1
    assert verifier.seen == []
    assert result["errors"] == [f"proposer: {type(error).__name__}: {error}"]
    assert [call.role for call in decision.calls] == ["strong"]
    survived()


@pytest.mark.parametrize("empty", ["", "   ", "\n\n", "\x00"], ids=["empty", "spaces", "newlines", "nul"])
def test_proposer_empty_output_escalates(empty):
    fallback = strong("final_answer: done")
    verifier = ScriptedVerifier(0.99)
    graph = build_speculation_graph(
        proposer=ScriptedProposer(empty), verifier=verifier, fallback=fallback
    )
    inject()
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.proposals[0].valid is False
    assert decision.proposals[0].error
    assert decision.verdicts == ("REJECT",)
    assert verifier.seen == []
    assert decision.action.content == "done"
    survived()


def test_proposer_returns_no_proposals_escalates():
    fallback = strong("final_answer: done")
    graph = build_speculation_graph(
        proposer=ScriptedProposer(), verifier=ScriptedVerifier(), fallback=fallback
    )
    inject()
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.proposals == ()
    assert fallback.calls == 1
    survived()


def test_best_of_n_all_empty_escalates():
    fallback = strong("final_answer: done")
    graph = build_speculation_graph(
        proposer=ScriptedProposer("", "", ""), verifier=ScriptedVerifier(),
        fallback=fallback, n_proposals=3,
    )
    inject(3)
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.verdicts == ("REJECT", "REJECT", "REJECT")
    assert decision.chosen is None
    survived(3)


@pytest.mark.parametrize(
    "error", [RuntimeError("verifier crashed"), TimeoutError("verifier timed out")],
    ids=["exception", "timeout"],
)
def test_verifier_failure_rejects_and_escalates(error):
    fallback = strong("file_read: ls(a=True)")
    graph = build_speculation_graph(
        proposer=ScriptedProposer("file_read: ls()"), verifier=ScriptedVerifier(error),
        fallback=fallback,
    )
    inject()
    result = run(graph)
    decision = result["decision"]
    assert decision.decision == "escalate"
    assert decision.verdicts == ("REJECT",)
    assert decision.scores == (None,)
    assert decision.chosen is None
    assert decision.action.tool_call.arguments == {"a": True}
    assert result["errors"] == [f"verifier: {type(error).__name__}: {error}"]
    survived()


@pytest.mark.parametrize(
    "score", [math.nan, math.inf, 1.5, -0.1, "0.9", [0.9]],
    ids=["nan", "inf", "above-one", "negative", "string", "list"],
)
def test_verifier_invalid_score_rejects(score):
    fallback = strong("final_answer: done")
    graph = build_speculation_graph(
        proposer=ScriptedProposer("file_read: ls()"), verifier=ScriptedVerifier(score),
        fallback=fallback,
    )
    inject()
    decision = run(graph)["decision"]
    assert decision.decision == "escalate"
    assert decision.verdicts == ("REJECT",)
    assert fallback.calls == 1
    survived()


def test_verifier_failure_on_one_of_three_keeps_others():
    graph = build_speculation_graph(
        proposer=ScriptedProposer("file_read: ls()", "file_read: ls(a=True)", "final_answer: x"),
        verifier=ScriptedVerifier(TimeoutError("slow"), 0.8, 0.6),
        fallback=strong("final_answer: unused"),
        n_proposals=3,
    )
    inject()
    result = run(graph)
    decision = result["decision"]
    assert decision.decision == "accept"
    assert decision.verdicts == ("REJECT", "ACCEPT", "ACCEPT")
    assert decision.chosen == 1
    assert result["errors"] == ["verifier: TimeoutError: slow"]
    survived()


@pytest.mark.parametrize(
    "error", [ConnectionError("server down"), TimeoutError("fallback timed out")],
    ids=["exception", "timeout"],
)
def test_fallback_failure_raises_with_step_id(error):
    graph = build_speculation_graph(
        proposer=ScriptedProposer("file_read: ls()"), verifier=ScriptedVerifier(0.1),
        fallback=strong(error=error),
    )
    inject()
    with pytest.raises(SpecAgentRuntimeError, match=STEP_ID) as raised:
        run(graph)
    assert raised.value.__cause__ is error
    assert "strong" in str(raised.value)
    survived()


def test_fallback_failure_after_proposer_failure_raises():
    graph = build_speculation_graph(
        proposer=ScriptedProposer(error=TimeoutError("cheap timed out")),
        verifier=ScriptedVerifier(), fallback=strong(error=TimeoutError("strong timed out")),
    )
    inject(2)
    with pytest.raises(SpecAgentRuntimeError, match="strong timed out"):
        run(graph)
    survived(2)


def test_fallback_failure_async_raises_with_step_id():
    graph = build_speculation_graph(
        proposer=None, verifier=None, fallback=strong(error=TimeoutError("fallback timed out"))
    )
    state = {"messages": MESSAGES, "tools": TOOLS, "seed": 0, "step_id": STEP_ID}
    inject()
    with pytest.raises(SpecAgentRuntimeError, match=STEP_ID):
        asyncio.run(graph.ainvoke(state))
    survived()


def test_unverified_proposer_failure_leaves_no_action():
    # Configuration B has no fallback: a failed proposer gives a decision without an action.
    graph = build_speculation_graph(
        proposer=ScriptedProposer(error=TimeoutError("cheap timed out")), verifier=None,
        fallback=None,
    )
    inject()
    result = run(graph)
    assert result["decision"].decision == "unverified"
    assert result["decision"].action is None
    assert result["errors"] == ["proposer: TimeoutError: cheap timed out"]
    survived()


def test_proposer_interrupt_is_not_swallowed():
    fallback = strong("final_answer: done")
    graph = build_speculation_graph(
        proposer=ScriptedProposer(error=GraphInterrupt()), verifier=ScriptedVerifier(0.9),
        fallback=fallback,
    )
    inject()
    result = run(graph)
    assert "decision" not in result
    assert fallback.calls == 0
    survived()


def test_keyboard_interrupt_in_proposer_propagates():
    fallback = strong("final_answer: done")
    graph = build_speculation_graph(
        proposer=ScriptedProposer(error=KeyboardInterrupt()), verifier=ScriptedVerifier(0.9),
        fallback=fallback,
    )
    inject()
    with pytest.raises(KeyboardInterrupt):
        run(graph)
    assert fallback.calls == 0
    survived()
