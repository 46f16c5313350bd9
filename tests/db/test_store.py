"""Tests of the trace store on a real SQLite file and a real PostgreSQL database.

The `store` fixture (tests/db/conftest.py) runs each test that uses it on both backends.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text

from spec_agent.actions import Action, ToolCall
from spec_agent.cost import ModelCall
from spec_agent.db.schema import SCHEMA_VERSION
from spec_agent.db.store import DecisionRow, SqlTraceStore, TraceStore
from spec_agent.decision import Decision, Proposal
from spec_agent.errors import ConfigError, SpecAgentRuntimeError

GOLD = Action(
    kind="file_read", tool_calls=(ToolCall(name="cat", arguments={"file_name": "a.txt"}),)
)


def _decision() -> Decision:
    wrong = Action(kind="final_answer", content="done")
    return Decision(
        decision="escalate",
        proposals=(
            Proposal(text="done", action=wrong),
            Proposal(text="{bad", action=None, error="json"),
        ),
        scores=(0.2, None),
        verdicts=("REJECT", "REJECT"),
        chosen=None,
        fallback=Proposal(text="cat a.txt", action=GOLD),
        threshold=0.5,
        calls=(
            ModelCall(role="cheap", model="small", prompt_tokens=120, completion_tokens=30),
            ModelCall(role="verifier", model="clf", prompt_tokens=150),
            ModelCall(role="strong", model="big", prompt_tokens=120, completion_tokens=12),
        ),
        cost=Decimal("1.20"),
        flops=3.5e9,
        latency_s=0.75,
    )


def _row(run_id: str, example_id: str = "ex-1", config: str = "D") -> DecisionRow:
    return DecisionRow.from_decision(
        _decision(),
        run_id=run_id,
        config=config,
        example_id=example_id,
        source="bfcl/multi_turn_base",
        scenario="multi_turn_base_3",
        gold=GOLD,
        kind_correct=True,
        full_correct=True,
        thread_id="thread-1",
        step=2,
    )


def test_from_decision_fills_usage():
    row = _row("run")
    assert row.prompt_tokens == 390
    assert row.completion_tokens == 42
    assert row.tokens_by_role["cheap"] == {"prompt": 120, "completion": 30}
    assert row.tokens_by_role["verifier"] == {"prompt": 150, "completion": 0}
    assert row.cost == Decimal("1.20")
    assert row.final_kind == "file_read"
    assert row.gold_kind == "file_read"
    assert row.proposals[1]["action"] is None
    assert len(row.calls) == 3


def test_store_satisfies_protocol(store):
    assert isinstance(store, TraceStore)


def test_row_round_trip(store):
    run_id = store.start_run(name="smoke", config={"seed": 1})
    row = _row(run_id)
    store.log_decisions(run_id, [row])
    [stored] = store.decisions(run_id)
    assert stored.created_at is not None
    assert dataclasses.replace(stored, created_at=None) == row
    assert isinstance(stored.cost, Decimal)
    assert isinstance(stored.prompt_tokens, int)


def test_duplicate_insert_ignored(store):
    run_id = store.start_run(name="dup", config={})
    assert store.log_decisions(run_id, [_row(run_id), _row(run_id)]) == 1
    assert store.log_decisions(run_id, [_row(run_id), _row(run_id, "ex-2")]) == 1
    assert [row.example_id for row in store.decisions(run_id)] == ["ex-1", "ex-2"]


def test_same_example_other_config_kept(store):
    run_id = store.start_run(name="configs", config={})
    store.log_decisions(run_id, [_row(run_id, config="A"), _row(run_id, config="D")])
    assert len(store.decisions(run_id)) == 2
    assert [row.config for row in store.decisions(run_id, "A")] == ["A"]


def test_run_lifecycle(store):
    assert store.latest_run() is None
    first = store.start_run(name="first", config={"b": 2, "a": 1})
    second = store.start_run(name="second", config={"seed": 3})
    assert store.latest_run().run_id == second
    assert store.runs()[0].status == "running"
    store.finish_run(first, "failed")
    store.finish_run(second, "finished")
    runs = {run.run_id: run for run in store.runs()}
    assert runs[first].status == "failed"
    assert runs[second].status == "finished"
    assert runs[second].finished_at >= runs[second].created_at
    assert runs[first].config == {"a": 1, "b": 2}
    assert runs[first].schema_version == SCHEMA_VERSION


def test_resume_run_replaces_settings(store):
    run_id = store.start_run(name="resumed", config={"settings": {"limit": 2}})
    store.log_decisions(run_id, [_row(run_id)])
    store.finish_run(run_id, "failed")

    store.resume_run(run_id, config={"settings": {"limit": 4}})

    run = store.run(run_id)
    assert run.status == "running"
    assert run.finished_at is None
    assert run.config == {"settings": {"limit": 4}}
    assert len(store.decisions(run_id)) == 1
    with pytest.raises(ConfigError, match="missing-run"):
        store.resume_run("missing-run", config={})


def test_config_stored_as_sorted_json(tmp_path):
    path = tmp_path / "traces.sqlite"
    SqlTraceStore(f"sqlite:///{path}").start_run(name="sorted", config={"b": 2, "a": 1})
    with sqlite3.connect(path) as connection:
        [(config_json,)] = connection.execute("SELECT config_json FROM runs").fetchall()
    assert config_json == '{"a": 1, "b": 2}'


def test_finish_run_rejects_running(store):
    run_id = store.start_run(name="x", config={})
    with pytest.raises(ConfigError, match="'running'"):
        store.finish_run(run_id, "running")


def test_unknown_run_rejected(store):
    with pytest.raises(ConfigError, match="not found"):
        store.log_decisions("missing", [_row("missing")])
    with pytest.raises(ConfigError, match="not found"):
        store.finish_run("missing", "finished")


def test_foreign_row_rejected(store):
    run_id = store.start_run(name="x", config={})
    with pytest.raises(ConfigError, match="other-run"):
        store.log_decisions(run_id, [_row("other-run")])


def test_failure_keeps_committed_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    store = SqlTraceStore(url)
    run_id = store.start_run(name="crash", config={})

    def run_benchmark() -> None:
        for index in range(3):
            store.log_decisions(run_id, [_row(run_id, f"ex-{index}")])
        raise RuntimeError("model backend crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        run_benchmark()
    store.close()

    reopened = SqlTraceStore(url)
    assert reopened.done_example_ids(run_id, "D") == {"ex-0", "ex-1", "ex-2"}
    assert reopened.latest_run().status == "running"


def test_failed_batch_stores_nothing(store):
    run_id = store.start_run(name="batch", config={})
    store.log_decisions(run_id, [_row(run_id, "ex-0")])
    bad = dataclasses.replace(_row(run_id, "ex-2"), decision="bogus")
    with pytest.raises(SpecAgentRuntimeError, match="log decisions"):
        store.log_decisions(run_id, [_row(run_id, "ex-1"), bad])
    assert store.done_example_ids(run_id, "D") == {"ex-0"}


def test_done_example_ids_per_config(store):
    run_id = store.start_run(name="resume", config={})
    store.log_decisions(run_id, [_row(run_id, "ex-1"), _row(run_id, "ex-2", config="A")])
    assert store.done_example_ids(run_id, "D") == {"ex-1"}
    assert store.done_example_ids(run_id, "A") == {"ex-2"}
    assert store.done_example_ids(run_id, "E") == set()


def test_sqlite_uses_wal(tmp_path):
    path = tmp_path / "nested" / "traces.sqlite"
    SqlTraceStore(f"sqlite:///{path}").start_run(name="wal", config={})
    with sqlite3.connect(path) as connection:
        [(mode,)] = connection.execute("PRAGMA journal_mode").fetchall()
    assert mode == "wal"


def test_schema_version_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    SqlTraceStore(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == [SCHEMA_VERSION]
    engine.dispose()


def test_other_schema_version_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    SqlTraceStore(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(SpecAgentRuntimeError, match="schema version"):
        SqlTraceStore(url)


def test_memory_database():
    store = SqlTraceStore("sqlite://")
    run_id = store.start_run(name="memory", config={})
    store.log_decisions(run_id, [_row(run_id)])
    assert len(store.decisions(run_id)) == 1


def test_checkpoint_keys_round_trip(store):
    run_id = store.start_run(name="keys", config={})
    row = dataclasses.replace(_row(run_id), checkpoint_id="1ef-abc", node="speculate")
    store.log_decisions(run_id, [row])
    [stored] = store.decisions(run_id)
    assert stored.checkpoint_id == "1ef-abc"
    assert stored.node == "speculate"
    assert stored.thread_id == "thread-1"


def test_child_tables_filled(store):
    run_id = store.start_run(name="children", config={})
    store.log_decisions(run_id, [_row(run_id)])
    store.log_decisions(run_id, [_row(run_id)])
    proposals = store.table_rows("proposals", run_id)
    calls = store.table_rows("model_calls", run_id)
    assert [(item["source"], item["position"]) for item in proposals] == [
        ("fallback", 0), ("proposal", 0), ("proposal", 1)
    ]
    assert [item["valid"] for item in proposals] == [True, True, False]
    assert proposals[1]["kind"] == "final_answer"
    assert proposals[1]["score"] == 0.2
    assert [item["role"] for item in calls] == ["cheap", "verifier", "strong"]
    assert calls[1]["completion_tokens"] is None


def test_unknown_table_rejected(store):
    with pytest.raises(ConfigError, match="Unknown trace table"):
        store.table_rows("runs", "x")


def test_lean_rows_replay_alike(store):
    import numpy as np

    from spec_agent.db.replay import ReplayFrame, sweep
    from tests.db.synthetic import random_rows

    run_id = store.start_run(name="lean", config={})
    rows = random_rows(run_id, 40)
    store.log_decisions(run_id, rows)
    lean = sweep(ReplayFrame.from_rows(store.lean_decisions(run_id)), [0.0, 0.4, 0.7])
    full = sweep(ReplayFrame.from_rows(rows), [0.0, 0.4, 0.7])
    for key in ("kind_accuracy", "full_accuracy", "cost", "wasted_tokens", "false_reject_rate"):
        assert np.allclose(getattr(lean, key), getattr(full, key), equal_nan=True), key


def test_decision_counts(store):
    run_id = store.start_run(name="counts", config={})
    store.log_decisions(run_id, [_row(run_id, "ex-1"), _row(run_id, "ex-2"), _row(run_id, config="A")])
    assert store.decision_counts() == {run_id: {"A": 1, "D": 2}}
    assert store.run(run_id).name == "counts"
