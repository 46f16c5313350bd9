"""Tests of the trace store commands through Typer's CliRunner on a temporary SQLite store."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from spec_agent import _cli_traces
from spec_agent._cli_traces import register
from spec_agent.db.migrate import head_revision
from spec_agent.db.store import SqlTraceStore
from tests.db.synthetic import hand_checked_rows

runner = CliRunner()


@pytest.fixture
def app(monkeypatch):
    # Wide enough that rich does not wrap table cells that the tests look for.
    monkeypatch.setattr(_cli_traces.console, "width", 250)
    monkeypatch.setattr(_cli_traces.errors, "width", 250)
    application = typer.Typer()
    register(application)
    return application


@pytest.fixture
def stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    store = SqlTraceStore(url)
    run_id = store.start_run(name="cli-run", config={"seed": 3})
    store.log_decisions(run_id, hand_checked_rows(run_id))
    store.finish_run(run_id, "finished")
    store.close()
    return url, run_id


def _invoke(app, *arguments):
    return runner.invoke(app, list(arguments), catch_exceptions=False)


def test_list_shows_run(app, stored):
    url, run_id = stored
    result = _invoke(app, "traces", "list", "--store", url)
    assert result.exit_code == 0
    assert run_id[:8] in result.output
    assert "A:4 B:4 C:4 D:4" in result.output


def test_show_latest_run(app, stored):
    url, _ = stored
    result = _invoke(app, "traces", "show", "--store", url, "--config", "d")
    assert result.exit_code == 0
    assert "cli-run" in result.output
    assert "escalate" in result.output
    assert "ex4" in result.output


def test_show_unknown_run(app, stored):
    url, _ = stored
    result = runner.invoke(app, ["traces", "show", "nope", "--store", url])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_export_parquet_and_csv(app, stored, tmp_path):
    url, run_id = stored
    out = tmp_path / "export"
    result = _invoke(app, "traces", "export", run_id, "--store", url, "--out", str(out), "--format", "both")
    assert result.exit_code == 0
    decisions = pq.read_table(out / run_id / "decisions.parquet")
    proposals = pq.read_table(out / run_id / "proposals.parquet")
    assert decisions.num_rows == 16
    # One proposal each in B, C and D; fallbacks in all four A rows and two escalations each of C, D.
    assert proposals.num_rows == 4 * 3 + 4 + 2 + 2
    assert decisions.column("cost").type == "double"
    assert (out / run_id / "model_calls.csv").read_text().startswith('"run_id"')


def test_export_bad_format(app, stored):
    url, _ = stored
    result = runner.invoke(app, ["traces", "export", "--store", url, "--format", "xlsx"])
    assert result.exit_code == 2
    assert "xlsx" in result.output


def test_replay_prints_grid(app, stored, tmp_path):
    url, _ = stored
    out = tmp_path / "replay.json"
    result = _invoke(app, "replay", "--store", url, "--thresholds", "0,0.5,1", "--json", str(out))
    rows = json.loads(out.read_text())
    assert result.exit_code == 0
    assert [row["kind_accuracy"] for row in rows] == pytest.approx([0.75, 0.5, 0.75])
    assert "verifier>=0.5" in result.output


def test_replay_per_kind(app, stored, tmp_path):
    url, _ = stored
    out = tmp_path / "replay.json"
    _invoke(app, "replay", "--store", url, "--thresholds", "0.5", "--by-kind", "final_answer=0.7",
            "--json", str(out))
    [row] = json.loads(out.read_text())
    assert row["kind_accuracy"] == pytest.approx(0.75)
    assert row["by_kind"] == {"final_answer": 0.7}


def test_replay_under_an_escalation_target(app, stored, tmp_path):
    url, _ = stored
    out = tmp_path / "replay.json"
    result = _invoke(app, "replay", "--store", url, "--thresholds", "0.5", "--escalation-rate", "0.25",
                     "--json", str(out))
    [row] = json.loads(out.read_text())
    assert result.exit_code == 0
    assert row["setting"] == "verifier>=0.5, escalation target 0.250"
    # Four examples are all within the target's warm-up, so the fixed threshold decides them.
    assert row["kind_accuracy"] == pytest.approx(0.5)


def test_replay_unknown_score(app, stored):
    url, _ = stored
    result = runner.invoke(app, ["replay", "--store", url, "--score", "oracle"])
    assert result.exit_code == 2
    assert "oracle" in result.output


def test_calibrate_writes_file(app, stored, tmp_path):
    url, _ = stored
    out = tmp_path / "thresholds.json"
    result = _invoke(app, "calibrate", "--store", url, "--max-escalation", "0.5", "--no-per-kind",
                     "--out", str(out))
    thresholds = json.loads(out.read_text())
    assert result.exit_code == 0
    assert thresholds["verifier"] == pytest.approx(0.3)
    assert thresholds["by_kind"] == {}


def test_calibrate_per_kind_row(app, stored, tmp_path):
    url, _ = stored
    out = tmp_path / "thresholds.json"
    result = _invoke(app, "calibrate", "--store", url, "--max-escalation", "0.5", "--min-support", "1",
                     "--out", str(out))
    assert result.exit_code == 0
    assert "all, with per-kind" in result.output
    assert json.loads(out.read_text())["by_kind"]


def test_calibrate_needs_target(app, stored, tmp_path):
    url, _ = stored
    result = runner.invoke(app, ["calibrate", "--store", url, "--out", str(tmp_path / "t.json")])
    assert result.exit_code == 2
    assert "exactly one" in result.output


def test_upgrade_reports_revision(app, stored):
    url, _ = stored
    result = _invoke(app, "traces", "upgrade", "--store", url)
    assert result.exit_code == 0
    assert f"already at schema revision {head_revision()}" in result.output
