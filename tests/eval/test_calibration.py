"""Tests of threshold calibration on the hand-checked four-example run (tests/db/synthetic.py).

Verifier thresholds up to 0.3 accept ex1, ex2 and ex4 (kind accuracy 0.75, escalation 0.25),
thresholds in (0.3, 0.6] accept ex1 and ex2 (0.5, 0.5). Judge thresholds in (0.2, 0.8] accept ex1
and ex4 (kind accuracy 1.0, cost 1.4); up to 0.2 they also accept ex2 (0.75, cost 1.15).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spec_agent.db.replay import ReplayFrame, ReplaySetting, replay
from spec_agent.errors import ConfigError
from spec_agent.eval.calibration import (
    CalibrationConfig,
    calibrate,
    load_thresholds,
    write_thresholds,
)
from tests.db.synthetic import hand_checked_rows


@pytest.fixture
def frame():
    return ReplayFrame.from_rows(hand_checked_rows("run"))


def _choice(result, score, kind=None):
    [choice] = [item for item in result.choices if item.score == score and item.kind == kind]
    return choice


def test_escalation_budget_picks_accurate(frame):
    result = calibrate(frame, CalibrationConfig(max_escalation=0.5, per_kind=False))
    choice = _choice(result, "verifier")
    assert choice.threshold == pytest.approx(0.3)
    assert choice.met
    assert choice.escalation_rate == pytest.approx(0.25)
    assert choice.accuracy == pytest.approx(0.75)


def test_accuracy_floor_picks_cheapest(frame):
    result = calibrate(frame, CalibrationConfig(min_accuracy=0.8, per_kind=False))
    judge = _choice(result, "judge")
    assert judge.threshold == pytest.approx(0.8)
    assert judge.met
    assert judge.cost == pytest.approx(1.4)


def test_unreachable_floor_keeps_best(frame):
    result = calibrate(frame, CalibrationConfig(min_accuracy=0.8, per_kind=False))
    verifier = _choice(result, "verifier")
    assert not verifier.met
    assert verifier.accuracy == pytest.approx(0.75)
    assert verifier.threshold == pytest.approx(1.0)


def test_thresholds_content(frame):
    result = calibrate(frame, CalibrationConfig(max_escalation=0.5, per_kind=False))
    assert set(result.thresholds) == {"judge", "verifier", "by_kind"}
    assert result.thresholds["by_kind"] == {}


def test_per_kind_thresholds(frame):
    config = CalibrationConfig(max_escalation=0.0, min_support=1)
    result = calibrate(frame, config)
    assert result.thresholds["by_kind"]["file_read"] <= 0.9
    assert _choice(result, "verifier", "file_read").escalation_rate == 0.0
    assert set(result.thresholds["by_kind"]) == {"file_read", "file_write", "final_answer"}


def test_rare_kinds_use_global(frame):
    result = calibrate(frame, CalibrationConfig(max_escalation=0.5, min_support=2))
    assert result.thresholds["by_kind"] == {}


def test_config_needs_one_target():
    with pytest.raises(ConfigError, match="exactly one"):
        CalibrationConfig()
    with pytest.raises(ConfigError, match="exactly one"):
        CalibrationConfig(max_escalation=0.2, min_accuracy=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        CalibrationConfig(max_escalation=1.5)


def test_thresholds_round_trip(tmp_path):
    path = write_thresholds(tmp_path / "thresholds.json", {"verifier": 0.4, "by_kind": {"file_read": 0.2}})
    loaded = load_thresholds(path)
    assert loaded == {"judge": 0.5, "verifier": 0.4, "by_kind": {"file_read": 0.2}}
    assert json.loads(path.read_text())["verifier"] == 0.4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"verifier": 2}', "in \\[0, 1\\]"),
        ('{"verifer": 0.5}', "Unknown key"),
        ('{"by_kind": {"chat": 0.5}}', "Unknown action kind"),
        ("[0.5]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_load_thresholds_rejects(tmp_path, content, message):
    path = tmp_path / "thresholds.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_thresholds(path)


def test_load_thresholds_missing(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_thresholds(tmp_path / "missing.json")


def _two_kind_frame(full_correct=None):
    """Twenty proposals where one global threshold is costly and per-kind thresholds are not.

    final_answer: ten right proposals, all scored 0.3. tool_call: right proposals scored 0.6 to 1.0,
    wrong ones 0.1 to 0.4 and 0.95. The strong model is always right. Reaching kind accuracy 0.95
    needs the four low wrong tool calls escalated: one threshold above 0.4 also escalates every
    final_answer (escalation 0.7), per-kind thresholds do not (0.2).
    """
    kinds = ["final_answer"] * 10 + ["tool_call"] * 10
    scores = [0.3] * 10 + [0.6, 0.7, 0.8, 0.9, 1.0, 0.1, 0.2, 0.3, 0.4, 0.95]
    right = [True] * 15 + [False] * 5
    n = len(kinds)
    return ReplayFrame(
        example_ids=tuple(f"ex{index}" for index in range(n)),
        gold_kind=np.asarray(kinds, dtype=object),
        proposal_kind=np.asarray(kinds, dtype=object),
        valid=np.ones(n, dtype=bool),
        proposal_kind_correct=np.asarray(right),
        proposal_full_correct=np.asarray(full_correct if full_correct is not None else right, dtype=float),
        strong_kind_correct=np.ones(n, dtype=bool),
        strong_full_correct=np.ones(n, dtype=bool),
        scores={"verifier": np.asarray(scores)},
        cheap_cost=np.full(n, 0.15),
        score_cost={"verifier": np.zeros(n)},
        strong_cost=np.ones(n),
        cheap_tokens=np.zeros(n),
        position=np.arange(n),
        weak_kind_accuracy=0.75,
        weak_full_accuracy=0.75,
    )


def _replayed(frame, thresholds):
    setting = ReplaySetting(threshold=thresholds["verifier"], by_kind=thresholds["by_kind"])
    return replay(frame, [setting])


def test_per_kind_thresholds_meet_floor_together():
    frame = _two_kind_frame()
    result = calibrate(frame, CalibrationConfig(min_accuracy=0.95, min_support=5))
    assert _choice(result, "verifier").escalation_rate == pytest.approx(0.7)
    combined = result.combined
    assert combined.met
    assert combined.accuracy == pytest.approx(0.95)
    assert combined.escalation_rate == pytest.approx(0.2)
    # Held to 0.95 on its own, tool_call would escalate nine of its ten proposals.
    assert 0.4 < result.thresholds["by_kind"]["tool_call"] <= 0.6
    assert result.thresholds["by_kind"]["final_answer"] <= 0.3
    replayed = _replayed(frame, result.thresholds)
    assert replayed.kind_accuracy[0] == pytest.approx(combined.accuracy)
    assert replayed.cost[0] == pytest.approx(combined.cost)


def test_per_kind_thresholds_within_budget():
    frame = _two_kind_frame()
    result = calibrate(frame, CalibrationConfig(max_escalation=0.2, min_support=5))
    assert _choice(result, "verifier").accuracy == pytest.approx(0.85)
    assert result.combined.escalation_rate <= 0.2
    assert result.combined.accuracy == pytest.approx(0.95)


def test_per_kind_full_accuracy_skips_unknown():
    full = [1.0] * 10 + [1.0, 1.0, np.nan, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    frame = _two_kind_frame(full_correct=full)
    result = calibrate(frame, CalibrationConfig(min_accuracy=0.9, accuracy="full", min_support=5))
    replayed = _replayed(frame, result.thresholds)
    assert result.combined.met
    assert result.combined.accuracy == pytest.approx(replayed.full_accuracy[0])
    assert result.combined.escalation_rate == pytest.approx(replayed.escalation_rate[0])


def test_per_kind_never_worse_than_global(frame):
    for config in (CalibrationConfig(max_escalation=0.5, min_support=1),
                   CalibrationConfig(min_accuracy=0.7, min_support=1)):
        result = calibrate(frame, config)
        default = _choice(result, "verifier")
        if config.max_escalation is not None:
            assert result.combined.accuracy >= default.accuracy - 1e-9
        else:
            assert result.combined.cost <= default.cost + 1e-9
