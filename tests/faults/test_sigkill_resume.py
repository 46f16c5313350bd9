"""A bench process killed with SIGKILL resumes from its last committed example."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

from typer.testing import CliRunner

from spec_agent.cli import app
from spec_agent.db.store import SqlTraceStore
from spec_agent.eval.schema import write_examples
from tests.bench_helpers import make_examples, tiny_model_dirs

EXAMPLES = 150


def wait_for_rows(store: SqlTraceStore, minimum: int, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = store.latest_run() if store_exists(store) else None
        if latest is not None and len(store.decisions(latest.run_id)) >= minimum:
            return latest.run_id
        time.sleep(0.2)
    raise AssertionError(f"no {minimum} stored decisions within {timeout_s}s")


def store_exists(store: SqlTraceStore) -> bool:
    try:
        return store.latest_run() is not None
    except Exception:  # noqa: BLE001 - the schema may not be created yet
        return False


def test_sigkill_then_resume_loses_nothing(tmp_path_factory, tmp_path):
    cheap, strong = tiny_model_dirs(tmp_path_factory)
    dataset = write_examples(make_examples(EXAMPLES), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    arguments = ["bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
                 "--cheap-model", cheap, "--strong-model", strong, "--configs", "AB"]
    process = subprocess.Popen([sys.executable, "-m", "spec_agent.cli", *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")
    try:
        run_id = wait_for_rows(store, minimum=4)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    before = len(store.decisions(run_id))

    result = CliRunner().invoke(app, [*arguments, "--resume", run_id])

    assert result.exit_code == 0, result.output
    rows = store.decisions(run_id)
    keys = Counter((row.config, row.example_id) for row in rows)
    assert 4 <= before < 2 * EXAMPLES
    assert len(keys) == 2 * EXAMPLES
    assert max(keys.values()) == 1
    assert store.latest_run().status == "finished"
