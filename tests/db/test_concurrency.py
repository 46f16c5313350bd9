"""Concurrent writers on one SQLite store: four processes with two threads each, eight writers.

Each writer logs its own decisions in batches and logs every fifth batch twice, like a retry after
a timeout whose commit went through. The store must end with every decision exactly once.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from spec_agent.db.store import DecisionRow, SqlTraceStore

PROCESSES = 4
THREADS = 2
BATCH = 250


def _rows(run_id: str, writer: int, start: int, count: int) -> list[DecisionRow]:
    return [
        DecisionRow(
            run_id=run_id, config="D", example_id=f"w{writer}-{index:06d}", source="s",
            scenario="s", gold_kind="file_read", decision="accept",
            gold={"kind": "file_read"}, kind_correct=True, full_correct=False,
            proposals=[{"text": "x", "action": {"kind": "file_read"}, "confidence": 0.9}],
            scores=[0.9], verdicts=["ACCEPT"], chosen=0,
            calls=[{"role": "cheap", "model": "m", "prompt_tokens": 10, "completion_tokens": 2}],
        )
        for index in range(start, start + count)
    ]


def _write(url: str, run_id: str, writer: int, decisions: int) -> None:
    store = SqlTraceStore(url)
    for batch, start in enumerate(range(0, decisions, BATCH)):
        rows = _rows(run_id, writer, start, min(BATCH, decisions - start))
        store.log_decisions(run_id, rows)
        if batch % 5 == 0:
            store.log_decisions(run_id, rows)
    store.close()


def _process(url: str, run_id: str, first_writer: int, decisions: int) -> None:
    threads = [
        threading.Thread(target=_write, args=(url, run_id, first_writer + offset, decisions))
        for offset in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _run_writers(tmp_path, decisions: int) -> tuple:
    path = tmp_path / "traces.sqlite"
    url = f"sqlite:///{path}"
    store = SqlTraceStore(url)
    run_id = store.start_run(name="concurrent", config={})
    store.close()
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_process, args=(url, run_id, number * THREADS, decisions))
        for number in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
    exit_codes = [process.exitcode for process in processes]
    with sqlite3.connect(path) as connection:
        decisions_stored = connection.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        distinct = connection.execute("SELECT COUNT(DISTINCT example_id) FROM decisions").fetchone()[0]
        proposals = connection.execute("SELECT COUNT(*) FROM proposals").fetchone()[0]
        calls = connection.execute("SELECT COUNT(*) FROM model_calls").fetchone()[0]
    return exit_codes, decisions_stored, distinct, proposals, calls


def _check(result, decisions: int) -> None:
    exit_codes, stored, distinct, proposals, calls = result
    writers = PROCESSES * THREADS
    assert exit_codes == [0] * PROCESSES
    assert stored == writers * decisions
    assert distinct == writers * decisions
    assert proposals == writers * decisions
    assert calls == writers * decisions


def test_eight_writers_lose_nothing(tmp_path):
    _check(_run_writers(tmp_path, 1_250), 1_250)


@pytest.mark.slow
def test_eight_writers_full_size(tmp_path):
    _check(_run_writers(tmp_path, 10_000), 10_000)
