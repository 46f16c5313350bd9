"""Tests of the Alembic migrations: new stores, schema-1 stores and the checks around them."""

from __future__ import annotations

import json
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from spec_agent.db.migrate import head_revision
from spec_agent.db.schema import SCHEMA_VERSION, Base
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import SpecAgentRuntimeError

# The tables as spec-agent wrote them before Alembic managed the schema (schema version 1),
# dumped from a store that the schema-1 code created.
SCHEMA_1 = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL, applied_at DATETIME NOT NULL, PRIMARY KEY (version)
);
CREATE TABLE runs (
    run_id VARCHAR(36) NOT NULL, created_at DATETIME NOT NULL, finished_at DATETIME,
    status VARCHAR(16) NOT NULL, name TEXT NOT NULL, config_json TEXT NOT NULL,
    schema_version INTEGER NOT NULL, PRIMARY KEY (run_id),
    CONSTRAINT ck_runs_status CHECK (status IN ('running', 'finished', 'failed'))
);
CREATE TABLE decisions (
    id INTEGER NOT NULL, run_id VARCHAR(36) NOT NULL, config VARCHAR(8) NOT NULL,
    example_id TEXT NOT NULL, source TEXT NOT NULL, scenario TEXT NOT NULL,
    gold_kind VARCHAR(32) NOT NULL, thread_id TEXT, step INTEGER, decision VARCHAR(16) NOT NULL,
    proposals_json TEXT NOT NULL, scores_json TEXT NOT NULL, verdicts_json TEXT NOT NULL,
    chosen INTEGER, fallback_json TEXT, threshold FLOAT, final_action_json TEXT,
    final_kind VARCHAR(32), gold_json TEXT NOT NULL, kind_correct BOOLEAN NOT NULL,
    full_correct BOOLEAN NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, tokens_by_role_json TEXT NOT NULL,
    calls_json TEXT NOT NULL, cost NUMERIC(12, 4) NOT NULL, flops FLOAT NOT NULL,
    latency_s FLOAT NOT NULL, error TEXT, created_at DATETIME NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_decisions_run_config_example UNIQUE (run_id, config, example_id),
    CONSTRAINT ck_decisions_decision
        CHECK (decision IN ('accept', 'escalate', 'direct', 'unverified')),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_decisions_run_config ON decisions (run_id, config);
"""

PROPOSALS = [
    {"text": "done", "action": {"kind": "final_answer", "content": "done", "tool_calls": []},
     "error": None, "confidence": 0.4},
    {"text": "{bad", "action": None, "error": "json", "confidence": None},
]
FALLBACK = {"text": "cat a.txt", "action": {"kind": "file_read", "content": None, "tool_calls": []},
            "error": None, "confidence": None}
CALLS = [
    {"role": "cheap", "model": "small", "prompt_tokens": 120, "completion_tokens": 30,
     "latency_s": 0.1, "reused_tokens": 0, "cached": False},
    {"role": "strong", "model": "big", "prompt_tokens": 120, "completion_tokens": 12,
     "latency_s": 0.4, "reused_tokens": 0, "cached": True},
]


def _schema_1_store(path) -> None:
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA_1)
    now = "2026-04-01 12:00:00.000000"
    connection.execute("INSERT INTO schema_version VALUES (1, ?)", (now,))
    connection.execute(
        "INSERT INTO runs VALUES ('run-1', ?, NULL, 'running', 'old', '{\"seed\": 1}', 1)", (now,)
    )
    connection.execute(
        "INSERT INTO decisions (run_id, config, example_id, source, scenario, gold_kind, "
        "thread_id, step, decision, proposals_json, scores_json, verdicts_json, chosen, "
        "fallback_json, threshold, final_action_json, final_kind, gold_json, kind_correct, "
        "full_correct, prompt_tokens, completion_tokens, tokens_by_role_json, calls_json, cost, "
        "flops, latency_s, error, created_at) VALUES "
        "('run-1', 'D', 'ex-1', 'bfcl', 's1', 'file_read', 't1', 2, 'escalate', ?, ?, ?, NULL, ?, "
        "0.5, ?, 'file_read', ?, 1, 1, 240, 42, '{}', ?, 1.15, 1.0, 0.5, NULL, ?)",
        (
            json.dumps(PROPOSALS), json.dumps([0.4, None]), json.dumps(["REJECT", "REJECT"]),
            json.dumps(FALLBACK), json.dumps(FALLBACK["action"]), json.dumps(FALLBACK["action"]),
            json.dumps(CALLS), now,
        ),
    )
    connection.commit()
    connection.close()


def test_schema_1_store_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    store = SqlTraceStore(f"sqlite:///{path}")
    assert store.upgraded_from == "0001"
    [row] = store.decisions("run-1")
    assert row.example_id == "ex-1"
    assert row.proposals == PROPOSALS
    assert row.checkpoint_id is None
    assert store.runs()[0].schema_version == 1
    store.close()


def test_upgrade_backfills_children(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    store = SqlTraceStore(f"sqlite:///{path}")
    proposals = store.table_rows("proposals", "run-1")
    calls = store.table_rows("model_calls", "run-1")
    assert [(item["source"], item["position"]) for item in proposals] == [
        ("fallback", 0), ("proposal", 0), ("proposal", 1)
    ]
    assert [item["valid"] for item in proposals] == [True, True, False]
    assert proposals[1]["score"] == 0.4
    assert proposals[1]["verdict"] == "REJECT"
    assert proposals[0]["chosen"] is True
    assert [item["role"] for item in calls] == ["cheap", "strong"]
    assert calls[1]["cached"] is True
    store.close()


def test_upgrade_sets_version(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    SqlTraceStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as connection:
        [(version,)] = connection.execute("SELECT version FROM schema_version").fetchall()
        [(revision,)] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert version == SCHEMA_VERSION
    assert revision == head_revision()


def test_upgrade_refused_names_command(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    with pytest.raises(SpecAgentRuntimeError, match="spec-agent traces upgrade --store"):
        SqlTraceStore(f"sqlite:///{path}", upgrade=False)
    with sqlite3.connect(path) as connection:
        [(version,)] = connection.execute("SELECT version FROM schema_version").fetchall()
    assert version == 1


def test_upgraded_store_accepts_writes(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    store = SqlTraceStore(f"sqlite:///{path}")
    run_id = store.start_run(name="new", config={})
    assert store.latest_run().run_id == run_id
    assert store.runs()[-1].schema_version == SCHEMA_VERSION
    store.close()


def test_migrations_match_models(store_url):
    SqlTraceStore(store_url).close()
    engine = create_engine(store_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_newer_revision_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    SqlTraceStore(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SpecAgentRuntimeError, match="newer than this spec-agent"):
        SqlTraceStore(url)


def test_foreign_database_rejected(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER)")
    with pytest.raises(SpecAgentRuntimeError, match="not a spec-agent trace store"):
        SqlTraceStore(f"sqlite:///{path}")


def test_reopen_keeps_revision(store_url):
    SqlTraceStore(store_url).close()
    store = SqlTraceStore(store_url)
    assert store.upgraded_from == head_revision()
    store.close()
