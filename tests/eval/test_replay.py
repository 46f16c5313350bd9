"""Tests of counterfactual replay on a four-example run whose numbers are worked out by hand.

The examples (tests/db/synthetic.py, `HAND_CHECKED`): ex1 a right proposal scored 0.9 by the
verifier, ex2 a wrong-kind proposal scored 0.6, ex3 an unparsed proposal, ex4 a right-kind proposal
with wrong arguments scored 0.3 whose strong action is wrong. Prices: cheap 0.15, verifier 0.05,
judge 1.0, strong 1.0, so D costs 0.2 per example plus 1.0 per escalation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest

from spec_agent.db.replay import ReplayFrame, ReplaySetting, load_frame, replay, sweep, threshold_grid
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import ConfigError
from spec_agent.eval.metrics import apgr_and_cpt, compute_metrics, reliability_curve, roc_auc
from spec_agent.eval.report import write_report
from tests.db.synthetic import hand_checked_rows, random_rows


@pytest.fixture
def frame():
    return ReplayFrame.from_rows(hand_checked_rows("run"))


def _only(result, key):
    [value] = getattr(result, key)
    return float(value)


def test_frame_joins_examples(frame):
    assert frame.example_ids == ("ex1", "ex2", "ex3", "ex4")
    assert frame.valid.tolist() == [True, True, False, True]
    assert frame.proposal_kind_correct.tolist() == [True, False, False, True]
    assert frame.strong_kind_correct.tolist() == [True, True, True, False]
    assert frame.cheap_cost.tolist() == pytest.approx([0.15] * 4)
    assert frame.score_cost["verifier"].tolist() == pytest.approx([0.05, 0.05, 0.0, 0.05])
    assert frame.weak_kind_accuracy == 0.5


def test_replay_threshold_half(frame):
    result = sweep(frame, [0.5])
    assert _only(result, "kind_accuracy") == pytest.approx(0.5)
    assert _only(result, "full_accuracy") == pytest.approx(0.25)
    # ex3 has no verifier call: (0.2 + 0.15 + 0.2 + 0.2) + 2 escalations, over 4 examples.
    assert _only(result, "cost") == pytest.approx((0.75 + 2.0) / 4)
    assert _only(result, "accept_rate") == pytest.approx(0.5)
    assert _only(result, "escalation_rate") == pytest.approx(0.5)
    assert _only(result, "false_accept_rate") == pytest.approx(0.5)
    assert _only(result, "false_reject_rate") == pytest.approx(0.0)
    assert _only(result, "wasted_tokens") == pytest.approx(2 * 110 / 4)
    assert _only(result, "wasted_cost") == pytest.approx((0.15 + 0.2) / 4)


def test_replay_matches_stored_decisions(frame):
    # The run was stored with threshold 0.5, so replaying 0.5 must give D's own numbers.
    rows = [row for row in hand_checked_rows("run") if row.config == "D"]
    result = sweep(frame, [0.5])
    assert _only(result, "kind_accuracy") == pytest.approx(np.mean([row.kind_correct for row in rows]))
    assert _only(result, "cost") == pytest.approx(np.mean([float(row.cost) for row in rows]))


def test_replay_grid_ends(frame):
    result = sweep(frame, [0.0, 1.0])
    assert result.kind_accuracy.tolist() == pytest.approx([0.75, 0.75])
    assert result.full_accuracy.tolist() == pytest.approx([0.25, 0.5])
    assert result.cost.tolist() == pytest.approx([(0.75 + 1.0) / 4, (0.75 + 4.0) / 4])
    assert result.escalation_rate.tolist() == pytest.approx([0.25, 1.0])


def test_replay_judge_score(frame):
    result = sweep(frame, [0.5], score="judge")
    assert _only(result, "kind_accuracy") == pytest.approx(1.0)
    # 0.15 cheap for all, 1.0 judge for the three parsed proposals, 2 escalations.
    assert _only(result, "cost") == pytest.approx((0.6 + 3.0 + 2.0) / 4)


def test_replay_confidence_costs_nothing(frame):
    result = sweep(frame, [0.5], score="confidence")
    assert _only(result, "kind_accuracy") == pytest.approx(0.5)
    assert _only(result, "cost") == pytest.approx((0.6 + 2.0) / 4)


def test_replay_per_kind_threshold(frame):
    setting = ReplaySetting(threshold=0.5, by_kind={"final_answer": 0.7})
    result = replay(frame, [setting])
    assert _only(result, "kind_accuracy") == pytest.approx(0.75)
    assert _only(result, "escalation_rate") == pytest.approx(0.75)
    assert result.rows()[0]["setting"] == "verifier>=0.5 (final_answer=0.7)"


def test_replay_without_b_marks_unknown():
    rows = [row for row in hand_checked_rows("run") if row.config != "B"]
    result = sweep(ReplayFrame.from_rows(rows), [0.0])
    # D rejected ex4 at 0.5, so once accepted its proposal's full correctness is unknown.
    assert _only(result, "full_unknown") == 1
    assert _only(result, "kind_accuracy") == pytest.approx(0.75)


def test_replay_missing_a_rejected():
    rows = [row for row in hand_checked_rows("run") if row.config != "A"]
    with pytest.raises(ConfigError, match="configuration A"):
        ReplayFrame.from_rows(rows)


def test_replay_missing_score_rejected(frame):
    rows = [row for row in hand_checked_rows("run") if row.config != "C"]
    with pytest.raises(ConfigError, match="judge"):
        sweep(ReplayFrame.from_rows(rows), [0.5], score="judge")


def test_rows_turn_nan_into_none(frame):
    row = sweep(frame, [1.0]).rows()[0]
    assert row["false_accept_rate"] is None
    assert row["threshold"] == 1.0
    assert not any(isinstance(value, float) and math.isnan(value) for value in row.values())


def test_replay_from_store(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="replay", config={})
    store.log_decisions(run_id, hand_checked_rows(run_id))
    result = sweep(load_frame(store, run_id), [0.5])
    assert _only(result, "kind_accuracy") == pytest.approx(0.5)


def test_grid_of_hundred_is_fast():
    frame = ReplayFrame.from_rows(random_rows("run", 10_000))
    started = time.perf_counter()
    result = sweep(frame, threshold_grid(100))
    elapsed = time.perf_counter() - started
    assert len(result.settings) == 100
    assert elapsed < 1.0


def test_roc_auc_values():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert roc_auc([0.2, 0.3], [True, True]) is None


def test_reliability_bins():
    curve = reliability_curve([0.05, 0.15, 0.95, 0.95], [False, True, True, True], bins=2)
    assert curve.counts == (2, 2)
    assert curve.mean_score[0] == pytest.approx(0.1)
    assert curve.observed == (0.5, 1.0)
    assert curve.ece == pytest.approx((2 * 0.4 + 2 * 0.05) / 4)


def test_apgr_and_cpt_by_hand():
    # Points (0.5, 0.8) and the anchors: area 0.5 * 0.4 + 0.5 * 0.9 = 0.65.
    area, cpt = apgr_and_cpt(np.asarray([0.5]), np.asarray([0.8]))
    assert area == pytest.approx(0.65)
    assert cpt == {"50": 0.5, "80": 0.5}


def test_routing_metrics_hand_checked():
    rows = hand_checked_rows("run")
    metrics = compute_metrics(rows, resamples=10)
    routing = metrics.routing
    assert routing is not None
    # D escalated ex3 and ex4; B's proposal was fully correct for neither.
    assert routing.false_reject_rate["D"] == pytest.approx(0.0)
    assert routing.wasted_tokens["D"] == pytest.approx((110 + 220) / 4)
    assert routing.wasted_cost["D"] == pytest.approx((0.15 + 0.2) / 4)
    # B's kind accuracy is 0.5 and A's 0.75, so PGR = (accuracy - 0.5) / 0.25.
    assert routing.pgr[routing.thresholds.index(0.5)] == pytest.approx(0.0)
    assert routing.pgr[-1] == pytest.approx(1.0)
    assert routing.apgr is not None
    [verifier] = [item for item in routing.verifiers if item.score == "verifier"]
    assert verifier.n == 3
    assert verifier.roc_auc == pytest.approx(1.0)
    # Right kinds ex1 (0.9) and ex4 (0.3) against wrong kind ex2 (0.6): one pair of two ranked right.
    assert verifier.kind_n == 3
    assert verifier.kind_roc_auc == pytest.approx(0.5)


def test_target_check_hand_checked(frame):
    from spec_agent.eval.metrics import target_check

    configs = compute_metrics(hand_checked_rows("run"), resamples=10).configs
    result = sweep(frame, threshold_grid())
    target = target_check(frame, result, configs, max_accuracy_drop=0.02, max_cost_ratio=0.7)
    assert target.a_kind_accuracy == pytest.approx(0.75)
    assert target.points[0].label == "D as run"
    # Accepting every parsed proposal keeps A's 0.75: 0.2 + 0.2 + 0.2 and ex3's 1.15, over 4.
    [cheapest] = [point for point in target.points if point.label.startswith("D's score, cheapest")]
    assert cheapest.threshold == 0.0
    assert cheapest.kind_accuracy == pytest.approx(0.75)
    assert cheapest.cost_ratio == pytest.approx(1.75 / 4)
    # The perfect router also escalates ex2, the one parsed proposal A corrects, for 1.0 more.
    [perfect] = [point for point in target.points if point.label.startswith("perfect router, most accurate")]
    assert perfect.kind_accuracy == pytest.approx(1.0)
    assert perfect.cost_ratio == pytest.approx(2.75 / 4)
    assert perfect.escalation_rate == pytest.approx(0.5)
    assert target.meets(perfect) == (True, True)


def test_target_check_leaves_out_unaffordable_points(frame):
    from spec_agent.eval.metrics import target_check

    configs = compute_metrics(hand_checked_rows("run"), resamples=10).configs
    target = target_check(frame, sweep(frame, threshold_grid()), configs)
    labels = [point.label for point in target.points]
    # The unparsed ex3 alone costs 1.15 of the 1.6 that 0.40 of A's cost allows over 4 examples.
    assert not any("0.40 of A's cost" in label for label in labels)
    assert labels[-1] == "perfect router, cheapest within 0.02 of A"


def test_report_has_routing(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="report", config={"seed": 0})
    store.log_decisions(run_id, random_rows(run_id, 60))
    paths = write_report(store, run_id, tmp_path / "report")
    results = json.loads(paths.results.read_text())
    assert paths.reliability.exists()
    assert results["routing"]["apgr"] is not None
    assert len(results["routing"]["thresholds"]) == 101
    assert "## Routing" in paths.markdown.read_text()
    assert "## D against its target" in paths.markdown.read_text()
    assert results["routing"]["target"]["points"][0]["label"] == "D as run"


def test_replay_kind_source_from_store(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="kind", config={})
    probabilities = {"ex1": 0.9, "ex2": 0.4, "ex3": 0.8, "ex4": 0.7}
    rows = [
        dataclasses.replace(row, proposals=[{**item, "kind_probability": probabilities[row.example_id]}
                                            for item in row.proposals])
        for row in hand_checked_rows(run_id)
    ]
    store.log_decisions(run_id, rows)
    frame = load_frame(store, run_id)
    assert frame.scores["kind"].tolist() == [probabilities[example] for example in frame.example_ids]
    # ex2 (wrong kind, 0.4) escalates and ex3 does not parse; ex1 and ex4 keep the right-kind proposal.
    result = sweep(frame, [0.5], score="kind")
    assert _only(result, "escalation_rate") == pytest.approx(0.5)
    assert _only(result, "cost") == pytest.approx((0.15 * 4 + 2.0) / 4)
