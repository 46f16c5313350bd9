"""Tests of the benchmark metrics on a hand-computed table of 4 examples and configurations A, B, D.

The table (kind correct / full correct, cost, FLOPs, decision):

    example  gold          A (direct)   B (unverified)      D
    e1       final_answer  T/T 1.0 100  T/T 0.15 10         accept   T/T 0.20 15
    e2       file_read     T/F 1.0 100  F/F 0.15 10         escalate T/F 1.20 115
    e3       final_answer  F/F 1.0 100  T/F 0.15 10         accept   T/F 0.20 15
    e4       tool_call     T/T 1.0 100  F/F 0.15 10 invalid escalate T/T 1.20 115
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from spec_agent.cost import CostModel, ModelCall
from spec_agent.db.store import DecisionRow
from spec_agent.eval.metrics import (
    METRICS,
    bootstrap_ci,
    compute_metrics,
    pareto_frontier,
)

GOLD = {"e1": "final_answer", "e2": "file_read", "e3": "final_answer", "e4": "tool_call"}


def _row(
    config, example_id, decision, kind, full, cost, flops, *, latency=0.1, valid=True, calls=()
):
    proposals = []
    if decision != "direct":
        action = {"kind": "final_answer", "content": "x"} if valid else None
        proposals = [{"text": "x", "action": action, "error": None, "confidence": None}]
    return DecisionRow(
        run_id="run",
        config=config,
        example_id=example_id,
        source="test",
        scenario=example_id,
        gold_kind=GOLD[example_id],
        decision=decision,
        gold={"kind": GOLD[example_id]},
        kind_correct=kind,
        full_correct=full,
        proposals=proposals,
        cost=Decimal(cost),
        flops=flops,
        latency_s=latency,
        calls=[call.to_dict() for call in calls],
    )


def _table() -> list[DecisionRow]:
    return [
        _row("A", "e1", "direct", True, True, "1.0", 100, latency=1.0),
        _row("A", "e2", "direct", True, False, "1.0", 100, latency=2.0),
        _row("A", "e3", "direct", False, False, "1.0", 100, latency=3.0),
        _row("A", "e4", "direct", True, True, "1.0", 100, latency=4.0),
        _row("B", "e1", "unverified", True, True, "0.15", 10),
        _row("B", "e2", "unverified", False, False, "0.15", 10),
        _row("B", "e3", "unverified", True, False, "0.15", 10),
        _row("B", "e4", "unverified", False, False, "0.15", 10, valid=False),
        _row("D", "e1", "accept", True, True, "0.20", 15),
        _row("D", "e2", "escalate", True, False, "1.20", 115),
        _row("D", "e3", "accept", True, False, "0.20", 15),
        _row("D", "e4", "escalate", True, True, "1.20", 115),
    ]


@pytest.fixture(scope="module")
def metrics():
    return compute_metrics(_table(), seed=7)


def test_accuracy_per_config(metrics):
    assert metrics.configs["A"].kind_accuracy == pytest.approx(0.75)
    assert metrics.configs["A"].full_accuracy == pytest.approx(0.5)
    assert metrics.configs["B"].kind_accuracy == pytest.approx(0.5)
    assert metrics.configs["B"].full_accuracy == pytest.approx(0.25)
    assert metrics.configs["D"].kind_accuracy == pytest.approx(1.0)
    assert metrics.configs["D"].full_accuracy == pytest.approx(0.5)


def test_cost_and_flops(metrics):
    assert metrics.configs["A"].cost == pytest.approx(1.0)
    assert metrics.configs["B"].cost == pytest.approx(0.15)
    assert metrics.configs["D"].cost == pytest.approx(0.7)
    assert metrics.configs["A"].flops_vs_a == pytest.approx(1.0)
    assert metrics.configs["B"].flops_vs_a == pytest.approx(0.1)
    assert metrics.configs["D"].flops_vs_a == pytest.approx(0.65)


def test_acceptance_and_escalation(metrics):
    assert metrics.configs["A"].accept_rate is None
    assert metrics.configs["A"].escalation_rate is None
    assert metrics.configs["B"].accept_rate == pytest.approx(1.0)
    assert metrics.configs["B"].escalation_rate == pytest.approx(0.0)
    assert metrics.configs["D"].accept_rate == pytest.approx(0.5)
    assert metrics.configs["D"].escalation_rate == pytest.approx(0.5)


def test_false_accept(metrics):
    assert metrics.configs["A"].false_accept_rate is None
    assert metrics.configs["B"].false_accept_rate == pytest.approx(0.75)
    assert metrics.configs["B"].false_accept_share == pytest.approx(0.75)
    assert metrics.configs["D"].false_accept_rate == pytest.approx(0.5)
    assert metrics.configs["D"].false_accept_share == pytest.approx(0.25)


def test_invalid_rate(metrics):
    assert metrics.configs["A"].invalid_rate is None
    assert metrics.configs["B"].invalid_rate == pytest.approx(0.25)
    assert metrics.configs["B"].invalid_proposals == 1
    assert metrics.configs["D"].invalid_rate == pytest.approx(0.0)


def test_latency_percentiles(metrics):
    assert metrics.configs["A"].latency_p50 == pytest.approx(2.5)
    assert metrics.configs["A"].latency_p95 == pytest.approx(3.85)


def test_frontier_membership(metrics):
    assert metrics.frontier == ("B", "D")
    assert metrics.configs["A"].on_frontier is False
    assert metrics.configs["B"].on_frontier is True
    assert metrics.configs["D"].on_frontier is True


def test_pareto_frontier_keeps_ties():
    points = {"x": (0.5, 0.6), "y": (0.5, 0.6), "z": (0.6, 0.6), "w": (0.1, 0.2)}
    assert pareto_frontier(points) == ("w", "x", "y")


def test_random_row(metrics):
    random = metrics.references["random"]
    assert random.kind_accuracy == pytest.approx(1 / 9)
    assert random.cost == 0.0
    assert random.n == 4


def test_majority_row(metrics):
    majority = metrics.references["majority"]
    assert majority.kind_accuracy == pytest.approx(0.5)
    assert majority.cost == 0.0
    assert "final_answer" in majority.description


def test_oracle_row(metrics):
    oracle = metrics.references["oracle"]
    assert oracle.kind_accuracy == pytest.approx(1.0)
    assert oracle.cost == pytest.approx(0.575)
    assert oracle.full_accuracy == pytest.approx(0.5)


def test_random_escalation_row(metrics):
    row = metrics.references["random-escalation"]
    assert row.kind_accuracy == pytest.approx(0.625)
    assert row.full_accuracy == pytest.approx(0.375)
    assert row.cost == pytest.approx(0.70)
    assert row.flops_vs_a == pytest.approx(0.6)


def test_random_escalation_needs_d():
    rows = [row for row in _table() if row.config != "D"]
    metrics = compute_metrics(rows)
    assert "random-escalation" not in metrics.references
    assert set(metrics.configs) == {"A", "B"}


def test_deltas_vs_a(metrics):
    assert metrics.deltas["D"]["kind_accuracy"] == pytest.approx(0.25)
    assert metrics.deltas["D"]["cost"] == pytest.approx(-0.3)
    assert metrics.deltas["D"]["cost_ratio"] == pytest.approx(0.7)
    assert metrics.deltas["A"]["kind_accuracy"] == pytest.approx(0.0)


def test_deltas_without_a():
    metrics = compute_metrics([row for row in _table() if row.config != "A"])
    assert metrics.deltas == {}
    assert metrics.configs["B"].flops_vs_a is None


def test_per_kind_support(metrics):
    by_kind = {item.kind: item for item in metrics.per_kind["A"]}
    assert by_kind["final_answer"].support == 2
    assert by_kind["final_answer"].accuracy == pytest.approx(0.5)
    assert by_kind["file_read"].accuracy == pytest.approx(1.0)
    assert by_kind["repair"].support == 0
    assert by_kind["repair"].accuracy is None
    assert len(by_kind) == 9


def test_bootstrap_contains_estimate(metrics):
    for row in metrics.configs.values():
        low, high = row.kind_accuracy_ci
        assert low <= row.kind_accuracy <= high
        low, high = row.cost_ci
        assert low <= row.cost <= high


def test_bootstrap_deterministic():
    values = [0.15, 1.2, 0.2, 1.0, 0.35, 0.15, 1.25, 0.2, 0.4, 1.1]
    first = bootstrap_ci(values, seed=3)
    assert first == bootstrap_ci(values, seed=3)
    assert first != bootstrap_ci(values, seed=4)
    assert first[0] < sum(values) / len(values) < first[1]


def test_bootstrap_empty():
    assert bootstrap_ci([]) is None


def test_constant_values_give_point_interval():
    assert bootstrap_ci([0.15] * 5) == pytest.approx((0.15, 0.15))


def test_cost_model_reprices_calls():
    calls = (
        ModelCall(role="cheap", model="c", prompt_tokens=10),
        ModelCall(role="verifier", model="v"),
    )
    rows = [_row("D", "e1", "accept", True, True, "0", 0, calls=calls)]
    prices = {"strong": Decimal(1), "cheap": Decimal("0.3"), "verifier": Decimal("0.1")}
    model = CostModel(call_prices=prices, parameters={"cheap": 1e6})
    metrics = compute_metrics(rows, cost_model=model)
    assert metrics.configs["D"].cost == pytest.approx(0.4)
    assert metrics.configs["D"].flops == pytest.approx(2e7)


def test_metric_directions():
    directions = {spec.key: spec.direction for spec in METRICS}
    assert directions["kind_accuracy"] == "higher"
    assert directions["cost"] == "lower"
    assert directions["false_accept_rate"] == "lower"
