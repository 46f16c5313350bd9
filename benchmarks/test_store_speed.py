"""Speed of the trace store: batched inserts against raw sqlite3, and replay of a threshold grid.

Run with `pytest benchmarks -s` (pytest-benchmark prints its table; `-s` shows the ratio line).
Both insert paths write the same 2,000 decisions (500 examples x A-D) with their proposals and
model calls into a new store file of the same schema, in one transaction, and both turn rows into
column values with the store's own conversion (JSON encoding included), so the ratio measures the
SQLAlchemy layer and the duplicate check. On a loaded 2-core CPU the ratio measured about 1.0.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

# The synthetic runs live with the tests; make the repository root importable to reuse them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spec_agent.db._normalise import call_values, proposal_values
from spec_agent.db.replay import load_frame, sweep, threshold_grid
from spec_agent.db.store import SqlTraceStore, _to_values
from tests.db.synthetic import random_rows  # noqa: E402

EXAMPLES = 500
ROUNDS = 3
MIN_RATIO = 0.5


def _fresh_store(tmp_path, name: str) -> tuple[SqlTraceStore, str, str]:
    path = tmp_path / f"{name}.sqlite"
    store = SqlTraceStore(f"sqlite:///{path}")
    return store, store.start_run(name=name, config={}), str(path)


def _insert(connection: sqlite3.Connection, table: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    connection.executemany(sql, [tuple(row.values()) for row in rows])


def _decision_values(row) -> dict:
    # Only the two columns sqlite3 cannot bind as they are get converted, the least work possible.
    values = _to_values(row)
    values["cost"] = float(values["cost"])
    values["created_at"] = values["created_at"].strftime("%Y-%m-%d %H:%M:%S.%f")
    return values


def _raw_insert(path: str, rows) -> float:
    started = time.perf_counter()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    decisions, proposals, calls = [], [], []
    for row in rows:
        decisions.append(_decision_values(row))
        key = {"run_id": row.run_id, "config": row.config, "example_id": row.example_id}
        proposals += proposal_values(key, proposals=row.proposals, scores=row.scores,
                                     verdicts=row.verdicts, chosen=row.chosen, fallback=row.fallback)
        calls += call_values(key, row.calls)
    _insert(connection, "decisions", decisions)
    _insert(connection, "proposals", proposals)
    _insert(connection, "model_calls", calls)
    connection.execute("COMMIT")
    connection.close()
    return time.perf_counter() - started


def _store_insert(store: SqlTraceStore, run_id: str, rows) -> float:
    started = time.perf_counter()
    store.log_decisions(run_id, rows)
    return time.perf_counter() - started


def test_insert_rate_against_raw(tmp_path, benchmark):
    raw_times, store_times = [], []
    for index in range(ROUNDS):
        store, run_id, path = _fresh_store(tmp_path, f"raw-{index}")
        store.close()
        raw_times.append(_raw_insert(path, random_rows(run_id, EXAMPLES)))
        store, run_id, _ = _fresh_store(tmp_path, f"store-{index}")
        store_times.append(_store_insert(store, run_id, random_rows(run_id, EXAMPLES)))
        store.close()
    decisions = EXAMPLES * 4
    ratio = min(raw_times) / min(store_times)
    benchmark.extra_info.update(
        raw_rows_per_s=decisions / min(raw_times),
        store_rows_per_s=decisions / min(store_times),
        ratio=ratio,
    )
    print(
        f"\nbatched inserts: store {decisions / min(store_times):,.0f} rows/s, raw sqlite3 "
        f"{decisions / min(raw_times):,.0f} rows/s, ratio {ratio:.2f} (best of {ROUNDS})"
    )
    counter = iter(range(1_000))

    def setup():
        store, run_id, _ = _fresh_store(tmp_path, f"bench-{next(counter)}")
        return (store, run_id, random_rows(run_id, EXAMPLES)), {}

    benchmark.pedantic(lambda store, run_id, rows: store.log_decisions(run_id, rows), setup=setup, rounds=ROUNDS)
    assert ratio >= MIN_RATIO


def test_replay_grid_of_hundred(tmp_path, benchmark):
    store, run_id, _ = _fresh_store(tmp_path, "replay")
    store.log_decisions(run_id, random_rows(run_id, 2_500))
    grid = threshold_grid(100)

    def replay_run():
        return sweep(load_frame(store, run_id), grid)

    result = benchmark.pedantic(replay_run, rounds=3)
    started = time.perf_counter()
    frame = load_frame(store, run_id)
    loaded = time.perf_counter()
    sweep(frame, grid)
    swept = time.perf_counter()
    print(f"\nreplay of 10,000 decisions: load {loaded - started:.3f}s, 100-threshold sweep {swept - loaded:.4f}s")
    assert len(result.settings) == 100
    assert benchmark.stats.stats.max < 1.0
