"""Schema check, chat-model judge and verifier chains."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from langchain_core.messages import AIMessage

from spec_agent.actions import Action, ToolCall
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from spec_agent.verifiers import (
    ChatModelJudge,
    ConfidenceVerifier,
    KindVerifier,
    SchemaVerifier,
    VerifierChain,
    ascore,
)
from tests.chat_fakes import ScriptedVerifier, scripted

TOOLS = [
    {
        "name": "mv",
        "description": "Move a file.",
        "parameters": {
            "type": "object",
            "properties": {
                "source": {"type": "string"},
                "count": {"type": "integer"},
                "mode": {"type": "string", "enum": ["fast", "safe"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["source"],
        },
    }
]


def call(name="mv", **arguments) -> Proposal:
    action = Action(kind="file_write", tool_calls=(ToolCall(name=name, arguments=arguments),))
    return Proposal(text="", action=action, confidence=0.8)


@pytest.mark.parametrize(
    ("proposal", "expected"),
    [
        (call(source="a.txt"), 1.0),
        (call(source="a.txt", count=2, mode="safe", tags=["x"]), 1.0),
        (call(), 0.0),
        (call(source="a.txt", force=True), 0.0),
        (call(source=3), 0.0),
        (call(source="a", count=True), 0.0),
        (call(source="a", count=1.5), 0.0),
        (call(source="a", mode="slow"), 0.0),
        (call(source="a", tags=[1]), 0.0),
        (call(name="rm", source="a"), 0.0),
        (Proposal(text="final_answer: ok", action=Action(kind="final_answer", content="ok")), 1.0),
    ],
)
def test_schema_verifier_scores(proposal, expected):
    score, calls = SchemaVerifier().score([], TOOLS, proposal)
    assert score == expected
    assert calls == []


def test_schema_problems_name_argument():
    problems = SchemaVerifier().problems(TOOLS, call(source="a", force=True))
    assert problems == ["mv: unknown argument 'force'"]


def test_schema_reads_openai_layout():
    wrapped = [{"type": "function", "function": TOOLS[0]}]
    score, _ = SchemaVerifier().score([], wrapped, call(source="a"))
    assert score == 1.0


@pytest.mark.parametrize(("reply", "expected"), [("ACCEPT", 1.0), ("reject.", 0.0), ("I would ACCEPT it", 1.0)])
def test_chat_judge_reads_label(reply, expected):
    judge = ChatModelJudge(scripted(AIMessage(reply)))
    score, calls = judge.score([{"role": "user", "content": "hi"}], TOOLS, call(source="a"))
    assert score == expected
    assert calls[0].role == "judge"


def test_chat_judge_prefers_logprobs():
    logprobs = {"content": [{"token": "ACC", "logprob": -0.1,
                             "top_logprobs": [{"token": "ACC", "logprob": -0.2231},
                                              {"token": "REJ", "logprob": -1.6094}]}]}
    reply = AIMessage("ACCEPT", response_metadata={"logprobs": logprobs})
    score, _ = ChatModelJudge(scripted(reply)).score([], TOOLS, call(source="a"))
    assert score == pytest.approx(0.8, abs=1e-3)


def test_chat_judge_unclear_reply_raises():
    judge = ChatModelJudge(scripted(AIMessage("maybe")))
    with pytest.raises(SpecAgentRuntimeError, match="neither ACCEPT nor REJECT"):
        judge.score([], TOOLS, call(source="a"))


def test_chat_judge_async():
    judge = ChatModelJudge(scripted(AIMessage("REJECT")))
    score, _ = asyncio.run(judge.ascore([], TOOLS, call(source="a")))
    assert score == 0.0


def test_chain_stops_at_first_reject():
    later = ScriptedVerifier(0.9)
    chain = VerifierChain(verifiers=[SchemaVerifier(), later])
    score, _ = chain.score([], TOOLS, call(name="rm"))
    assert score == 0.0
    assert later.seen == []


@pytest.mark.parametrize(("combine", "expected"), [("min", 0.6), ("last", 0.9), ("product", 0.54)])
def test_chain_combines_scores(combine, expected):
    chain = VerifierChain(verifiers=[ScriptedVerifier(0.6), ScriptedVerifier(0.9)], combine=combine)
    score, _ = chain.score([], TOOLS, call(source="a"))
    assert score == pytest.approx(expected)


def test_product_chain_rejection_score():
    later = ScriptedVerifier(0.9)
    chain = VerifierChain(verifiers=[ScriptedVerifier(0.8), ScriptedVerifier(0.3), later], combine="product")
    score, _ = chain.score([], TOOLS, call(source="a"))
    assert score == pytest.approx(0.24)
    assert later.seen == []


def test_kind_verifier_score():
    proposal = dataclasses.replace(call(source="a"), kind_probability=0.35)
    assert KindVerifier().score([], TOOLS, proposal) == (0.35, [])
    chain = VerifierChain(verifiers=[KindVerifier()])
    with pytest.raises(SpecAgentRuntimeError, match="kind returned no score"):
        chain.score([], TOOLS, call(source="a"))


def test_chain_trained_classifier_plugs_in():
    class Classifier:
        name = "classifier"

        def score(self, messages, tools, proposal):
            return 0.73, []

    chain = VerifierChain(verifiers=[SchemaVerifier(), Classifier()], combine="last")
    score, _ = chain.score([], TOOLS, call(source="a"))
    assert score == 0.73


def test_chain_timeout_fails_closed():
    class Slow:
        name = "slow"

        def score(self, messages, tools, proposal):
            time.sleep(0.5)
            return 1.0, []

    chain = VerifierChain(verifiers=[Slow()], timeout_s=0.05)
    with pytest.raises(SpecAgentRuntimeError, match="slow timed out after 0.05s"):
        chain.score([], TOOLS, call(source="a"))


def test_async_timeout_fails_closed():
    class Slow:
        name = "slow"

        async def ascore(self, messages, tools, proposal):
            await asyncio.sleep(0.5)
            return 1.0, []

    with pytest.raises(SpecAgentRuntimeError, match="timed out"):
        asyncio.run(ascore(Slow(), [], TOOLS, call(source="a"), timeout_s=0.05))


def test_chain_missing_score_raises():
    chain = VerifierChain(verifiers=[ConfidenceVerifier()])
    proposal = Proposal(text="", action=Action(kind="final_answer", content="x"), confidence=None)
    with pytest.raises(SpecAgentRuntimeError, match="confidence returned no score"):
        chain.score([], TOOLS, proposal)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"verifiers": []}, "verifiers"), ({"combine": "max"}, "combine"), ({"timeout_s": 0}, "timeout_s"),
     ({"reject_below": 2}, "reject_below")],
)
def test_chain_misconfiguration(kwargs, name):
    arguments = {"verifiers": [SchemaVerifier()], **kwargs}
    with pytest.raises(ConfigError, match=name):
        VerifierChain(**arguments)
