"""Tests of `BufferedTraceWriter`: failures keep rows queued, counted and retried, never dropped."""

from __future__ import annotations

import logging
import os
import stat
import time

import pytest

from spec_agent.db.store import SqlTraceStore
from spec_agent.db.writer import BufferedTraceWriter, WritePolicy
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from tests.db.synthetic import hand_checked_rows


class FlakyStore:
    """A store that raises a run-time error for its first `failures` writes, then delegates."""

    def __init__(self, store: SqlTraceStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0

    def log_decisions(self, run_id, rows):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise SpecAgentRuntimeError("Failed to log decisions: database is locked")
        return self.store.log_decisions(run_id, rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture
def sqlite_store(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    yield store
    store.close()


def test_failed_writes_retried(sqlite_store, caplog):
    run_id = sqlite_store.start_run(name="flaky", config={})
    writer = BufferedTraceWriter(FlakyStore(sqlite_store, failures=2), policy=WritePolicy(batch_size=4, retry_interval_s=0))
    rows = hand_checked_rows(run_id)
    with caplog.at_level(logging.ERROR, logger="spec_agent.db.writer"):
        for index in range(0, len(rows), 4):
            writer.log_decisions(run_id, rows[index : index + 4])
    assert writer.failed_writes == 2
    assert writer.pending == 0
    assert len(sqlite_store.decisions(run_id)) == len(rows)
    assert run_id in caplog.text
    assert "A/ex1" in caplog.text


def test_pending_kept_until_flush(sqlite_store):
    run_id = sqlite_store.start_run(name="flaky", config={})
    writer = BufferedTraceWriter(FlakyStore(sqlite_store, failures=1), policy=WritePolicy(batch_size=100))
    rows = hand_checked_rows(run_id)
    writer.log_decisions(run_id, rows)
    assert writer.pending == len(rows)
    assert writer.flush() == len(rows)
    assert writer.failed_writes == 1
    assert writer.flush() == 0
    assert writer.written == len(rows)
    assert len(sqlite_store.decisions(run_id)) == len(rows)


def test_done_ids_include_queued(sqlite_store):
    run_id = sqlite_store.start_run(name="queued", config={})
    writer = BufferedTraceWriter(sqlite_store, policy=WritePolicy(batch_size=100))
    writer.log_decisions(run_id, hand_checked_rows(run_id))
    assert writer.done_example_ids(run_id, "D") == {"ex1", "ex2", "ex3", "ex4"}
    assert sqlite_store.done_example_ids(run_id, "D") == set()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_keeps_rows(tmp_path):
    path = tmp_path / "traces.sqlite"
    store = SqlTraceStore(f"sqlite:///{path}")
    run_id = store.start_run(name="read-only", config={})
    store.close()
    path.chmod(stat.S_IRUSR)
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        writer = BufferedTraceWriter(SqlTraceStore(f"sqlite:///{path}", upgrade=False))
        writer.log_decisions(run_id, hand_checked_rows(run_id))
        assert writer.flush() == 16
    finally:
        tmp_path.chmod(stat.S_IRWXU)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_query_only_store_keeps_rows(sqlite_store, caplog):
    # SQLite's query_only pragma makes every write fail like a read-only file does, even as root.
    run_id = sqlite_store.start_run(name="read-only", config={})
    from sqlalchemy import event

    event.listen(sqlite_store._engine, "connect", lambda connection, _: connection.execute("PRAGMA query_only=ON"))
    sqlite_store._engine.dispose()
    writer = BufferedTraceWriter(sqlite_store, policy=WritePolicy(batch_size=1, retry_interval_s=0))
    with caplog.at_level(logging.ERROR, logger="spec_agent.db.writer"):
        writer.log_decisions(run_id, hand_checked_rows(run_id))
    assert writer.pending == 16
    assert writer.failed_writes == 1
    assert "readonly" in caplog.text
    with pytest.raises(SpecAgentRuntimeError, match="16 decision rows"):
        writer.close()
    assert writer.pending == 16


def test_misuse_raises(sqlite_store):
    writer = BufferedTraceWriter(sqlite_store, policy=WritePolicy(batch_size=1))
    with pytest.raises(ConfigError, match="not found"):
        writer.log_decisions("missing", hand_checked_rows("missing"))
    with pytest.raises(ConfigError, match="other"):
        writer.log_decisions("run", hand_checked_rows("other"))


def test_policy_rejects_bad_values():
    with pytest.raises(ConfigError, match="batch_size"):
        WritePolicy(batch_size=0)
    with pytest.raises(ConfigError, match="retry_interval_s"):
        WritePolicy(retry_interval_s=-1)
    with pytest.raises(ConfigError, match="flush_interval_s must be > 0 seconds or None"):
        WritePolicy(flush_interval_s=0)


def wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def test_background_writer_commits_without_flush(sqlite_store):
    run_id = sqlite_store.start_run(name="background", config={})
    policy = WritePolicy(batch_size=1000, retry_interval_s=0, flush_interval_s=0.02)
    writer = BufferedTraceWriter(FlakyStore(sqlite_store, failures=1), policy=policy)
    rows = hand_checked_rows(run_id)
    assert writer.log_decisions(run_id, rows) == len(rows)
    # The first background write fails; the next tick retries and commits every row once.
    assert wait_for(lambda: len(sqlite_store.decisions(run_id)) == len(rows))
    assert writer.failed_writes == 1
    assert writer.pending == 0
    writer.log_decisions(run_id, rows)
    writer.close()
    assert writer._thread is not None and not writer._thread.is_alive()
    assert len(sqlite_store.decisions(run_id)) == len(rows)


def test_background_writer_wakes_at_batch_size(sqlite_store):
    run_id = sqlite_store.start_run(name="batch", config={})
    writer = BufferedTraceWriter(sqlite_store, policy=WritePolicy(batch_size=4, flush_interval_s=60))
    rows = hand_checked_rows(run_id)
    writer.log_decisions(run_id, rows[:4])
    assert wait_for(lambda: writer.pending == 0)
    assert len(sqlite_store.decisions(run_id)) == 4
    writer.close()
