"""The escalation target: the rate it keeps, its warm-up and window, and its agreement with replay."""

from __future__ import annotations

import logging
import math
import random
import re

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from spec_agent.actions import Action, ToolCall
from spec_agent.cost import CostModel
from spec_agent.db.replay import ReplayFrame, ReplaySetting, replay_target
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError
from spec_agent.escalation import EscalationTarget, rate_for_cost, step_margin
from spec_agent.graphs.configurations import escalation_target_for
from spec_agent.graphs.speculation import build_speculation_graph
from spec_agent.proposers import LangChainProposer
from spec_agent.verifiers import KindVerifier, VerifierChain
from tests.db.synthetic import example_rows

MESSAGES = [{"role": "user", "content": "List the files here."}]
TOOLS = [{"name": "ls", "description": "List files.", "parameters": {"type": "object", "properties": {}}}]
VALID = Proposal(text="file_read: ls()", action=Action(kind="file_read", tool_calls=(ToolCall(name="ls"),)))
INVALID = Proposal(text="no action here", action=None, error="unparsed")


def drive(target: EscalationTarget, margins: list[float]) -> list[bool]:
    """Decide each margin as the graph does (escalate below the offset) and record it."""
    escalated = []
    for margin in margins:
        escalate = not margin >= target.offset()
        target.record(margin, escalated=escalate)
        escalated.append(escalate)
    return escalated


def test_target_keeps_rate_on_shifted_scores():
    # Scores far above the fixed thresholds would escalate nothing, but the target escalates a quarter.
    rng = random.Random(0)
    margins = [rng.gauss(0.3, 0.1) if rng.random() > 0.05 else -math.inf for _ in range(2000)]
    target = EscalationTarget(rate=0.25)
    escalated = drive(target, margins)
    assert target.realised_rate == pytest.approx(0.25, abs=0.01)
    assert sum(escalated[1000:]) / 1000 == pytest.approx(0.25, abs=0.02)


def test_offset_stays_zero_during_warmup():
    target = EscalationTarget(rate=0.5, warmup=3, window=10)
    for margin in (0.4, 0.2):
        assert target.offset() == 0.0
        target.record(margin, escalated=False)
    target.record(0.3, escalated=False)
    # Three margins, none escalated: the level is 0.5 + 1.5 / 50, so two of three fall below.
    assert target.offset() == pytest.approx(0.4)


def test_surplus_lowers_offset():
    calm = EscalationTarget(rate=0.25, warmup=4, horizon=10)
    spent = EscalationTarget(rate=0.25, warmup=4, horizon=10)
    for margin in (0.1, 0.2, 0.3, 0.4):
        calm.record(margin, escalated=False)
        spent.record(margin, escalated=True)
    assert spent.offset() < calm.offset()
    assert spent.offset() == pytest.approx(0.1)


def test_extreme_rates():
    never = EscalationTarget(rate=0.0, warmup=2)
    always = EscalationTarget(rate=1.0, warmup=2)
    for target in (never, always):
        target.record(0.2, escalated=False)
        target.record(-0.1, escalated=False)
    assert never.offset() == pytest.approx(-0.1)
    assert always.offset() == math.inf


def test_window_forgets_old_margins():
    target = EscalationTarget(rate=0.0, warmup=2, window=2)
    for margin in (-5.0, 1.0, 2.0):
        target.record(margin, escalated=False)
    assert target.offset() == pytest.approx(1.0)


def test_nan_margin_counts_as_unscored():
    target = EscalationTarget(rate=0.0, warmup=1, window=1)
    target.record(math.nan, escalated=True)
    assert target.offset() == -math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 1.5}, "Escalation rate 1.5"),
        ({"rate": 0.2, "warmup": 0}, "warmup must be at least 1"),
        ({"rate": 0.2, "horizon": 0}, "horizon must be at least 1"),
        ({"rate": 0.2, "warmup": 50, "window": 10}, "window (10) must be at least warmup (50)"),
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        EscalationTarget(**kwargs)


def test_rate_for_cost():
    prices = CostModel()
    assert rate_for_cost(0.40, cost_model=prices) == pytest.approx(0.25)
    assert rate_for_cost(0.40, cost_model=prices, verifier_calls=1) == pytest.approx(0.20)
    assert rate_for_cost(3.0, cost_model=prices) == 1.0
    with pytest.raises(ConfigError, match="below the 0.450"):
        rate_for_cost(0.40, cost_model=prices, n_proposals=3)
    with pytest.raises(ConfigError, match="no price"):
        rate_for_cost(0.40, cost_model=CostModel(call_prices={"cheap": 0.15}))


def test_step_margin_skips_unscored():
    assert step_margin([VALID, VALID], [0.7, 0.4], [0.5, 0.1]) == pytest.approx(0.3)
    assert step_margin([INVALID, VALID], [0.9, None], [0.5, 0.5]) == -math.inf
    assert step_margin([VALID], [1.7], [0.5]) == -math.inf
    assert step_margin([], [], []) == -math.inf


def test_target_per_configuration(caplog):
    verifier = KindVerifier()
    d = escalation_target_for("D", 0.40, cost_model=CostModel(), verifier=verifier)
    assert d is not None
    assert d.rate == pytest.approx(0.25)
    assert escalation_target_for("C", 0.40, cost_model=CostModel(), verifier=verifier) is None
    chained = escalation_target_for("D", 0.40, cost_model=CostModel(),
                                    verifier=VerifierChain(verifiers=[KindVerifier(), Scripted([])]))
    assert chained is not None
    assert chained.rate == pytest.approx(0.20)
    with caplog.at_level(logging.WARNING):
        assert escalation_target_for("E", 0.40, cost_model=CostModel(), verifier=verifier) is None
    assert "Configuration E keeps its thresholds fixed" in caplog.text


class Scripted:
    name = "scripted"

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)

    def score(self, messages, tools, proposal):
        return self.scores.pop(0), []


def test_graph_and_replay_decide_alike():
    rng = random.Random(3)
    scores = [round(rng.random(), 3) for _ in range(40)]
    kinds = [rng.choice(["file_read", "final_answer"]) for _ in scores]
    by_kind = {"final_answer": 0.7}
    replies = [f"{kind}: ls()" if kind == "file_read" else f"{kind}: done" for kind in kinds]
    graph = build_speculation_graph(
        proposer=LangChainProposer(GenericFakeChatModel(messages=iter(AIMessage(content=text) for text in replies))),
        verifier=Scripted(scores),
        fallback=LangChainProposer(GenericFakeChatModel(messages=iter(
            AIMessage(content="file_read: ls()") for _ in scores)), role="strong"),
        threshold=0.4,
        thresholds_by_kind=by_kind,
        escalation_target=EscalationTarget(rate=0.3, warmup=5, horizon=10),
    )
    live = [graph.invoke({"messages": MESSAGES, "tools": TOOLS, "seed": 0, "step_id": f"ex{index}"})["decision"]
            for index in range(len(scores))]
    rows = []
    for index, (score, kind) in enumerate(zip(scores, kinds, strict=True)):
        rows += example_rows("run", f"ex{index:02d}", gold_kind="file_read", proposal_kind=kind,
                             proposal_full=True, strong_kind="file_read", strong_full=True,
                             verifier_score=score, judge_score=None)
    frame = ReplayFrame.from_rows(rows)
    result = replay_target(frame, ReplaySetting(threshold=0.4, by_kind=by_kind),
                           EscalationTarget(rate=0.3, warmup=5, horizon=10))
    escalated = [decision.decision == "escalate" for decision in live]
    assert float(result.escalation_rate[0]) == pytest.approx(sum(escalated) / len(escalated))
    # Fixed thresholds would accept 26 of the 40; the target escalates close to 30% instead.
    assert sum(escalated) == pytest.approx(12, abs=3)
    assert live[-1].threshold != 0.4


def test_replay_target_in_run_order_and_reversed():
    # Worked by hand (rate 0.5, warm-up 1, horizon 1): in run order the target accepts ex0, ex3
    # and ex5, in reverse order ex4, ex2 and ex0. The odd examples propose the wrong kind.
    rows = []
    for index, score in enumerate([0.9, 0.1, 0.8, 0.2, 0.7, 0.3]):
        kind = "final_answer" if index % 2 else "file_read"
        rows += example_rows("run", f"ex{index}", gold_kind="file_read", proposal_kind=kind,
                             proposal_full=kind == "file_read", strong_kind="file_read", strong_full=True,
                             verifier_score=score, judge_score=None)
    frame = ReplayFrame.from_rows(rows)
    setting = ReplaySetting(threshold=0.5)
    in_order = replay_target(frame, setting, EscalationTarget(rate=0.5, warmup=1, horizon=1))
    reversed_order = replay_target(frame, setting, EscalationTarget(rate=0.5, warmup=1, horizon=1),
                                   order=list(range(5, -1, -1)))
    assert in_order.rows()[0]["setting"].endswith("escalation target 0.500")
    assert float(in_order.escalation_rate[0]) == 0.5
    assert float(reversed_order.escalation_rate[0]) == 0.5
    assert float(in_order.kind_accuracy[0]) == pytest.approx(4 / 6)
    assert float(reversed_order.kind_accuracy[0]) == 1.0
    with pytest.raises(ConfigError, match="each of the frame's 6 example indices once"):
        replay_target(frame, setting, EscalationTarget(rate=0.5), order=[0, 0, 1, 2, 3, 4])
