"""Tests of threshold calibration on the hand-checked four-example run (tests/db/synthetic.py).

Verifier thresholds up to 0.3 accept ex1, ex2 and ex4 (kind accuracy 0.75, escalation 0.25),
thresholds in (0.3, 0.6] accept ex1 and ex2 (0.5, 0.5). Judge thresholds in (0.2, 0.8] accept ex1
and ex4 (kind accuracy 1.0, cost 1.4); up to 0.2 they also accept ex2 (0.75, cost 1.15).
"""

from __future__ import annotations

import json

import pytest

from spec_agent.db.replay import ReplayFrame
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
