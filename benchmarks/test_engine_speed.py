"""Speed of the benchmark engine: shared calls and prefix reuse against the unshared path.

Both paths run the same BFCL trajectory through configurations A-E in one session. The shared path
wraps each model in `CachedModel` and reuses each model's prefix KV cache; the unshared path
computes every call of every configuration from scratch. SmolLM2 plays both the cheap and the
strong role here, so the suite finishes in minutes on a CPU; the ratio is a property of the engine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spec_agent import assets
from spec_agent._memo import CachedModel
from spec_agent.cost import CostModel
from spec_agent.db.store import SqlTraceStore
from spec_agent.eval.bench import BenchConfig, BenchRunner, Models, select_examples
from spec_agent.hf import HFChatModel
from spec_agent.verifiers import ConfidenceVerifier

MODEL = os.environ.get("SPEC_AGENT_BENCH_MODEL", "smollm2-135m-instruct")
STEPS = int(os.environ.get("SPEC_AGENT_BENCH_STEPS", "4"))


def trajectory() -> list:
    from spec_agent._commands import default_dataset_dir
    from spec_agent.eval.dataset import load_split

    folder = default_dataset_dir()
    if not (folder / "eval.jsonl").exists():
        pytest.skip(f"no BFCL eval split in {folder}: run `spec-agent data build` first")
    examples = select_examples(load_split(folder, "eval"), limit=0, seed=0)
    base = [example for example in examples if example.source == "bfcl/multi_turn_base"]
    first = base[0].scenario
    return [example for example in base if example.scenario == first][:STEPS]


def run_path(examples: list, *, shared: bool, tmp_path: Path) -> tuple[list, float]:
    import torch

    torch.set_num_threads(int(os.environ.get("SPEC_AGENT_BENCH_THREADS", "2")))
    cheap = HFChatModel(MODEL, role="cheap", reuse_prefix=shared).load()
    strong = HFChatModel(MODEL, role="strong", reuse_prefix=shared).load()
    wrap = CachedModel if shared else (lambda model: model)
    models = Models(cheap=wrap(cheap), strong=wrap(strong), verifier=ConfidenceVerifier())
    store = SqlTraceStore(f"sqlite:///{tmp_path / ('shared' if shared else 'unshared')}.sqlite")
    runner = BenchRunner(config=BenchConfig(limit=0), models=models, store=store, cost_model=CostModel())
    run_id = store.start_run(name="speed", config={})
    started = time.perf_counter()
    runner.run(examples, run_id=run_id)
    elapsed = time.perf_counter() - started
    return store.decisions(run_id), elapsed


@pytest.mark.skipif(not assets.is_fetched(MODEL), reason=f"run `spec-agent assets fetch {MODEL}`")
def test_shared_path_speedup(benchmark, tmp_path):
    examples = trajectory()
    unshared_rows, unshared_seconds = run_path(examples, shared=False, tmp_path=tmp_path)
    shared = benchmark.pedantic(
        run_path, kwargs={"examples": examples, "shared": True, "tmp_path": tmp_path}, rounds=1, iterations=1
    )
    shared_rows, shared_seconds = shared
    ratio = unshared_seconds / shared_seconds
    benchmark.extra_info.update(
        examples=len(examples),
        shared_examples_per_s=len(examples) / shared_seconds,
        unshared_examples_per_s=len(examples) / unshared_seconds,
        speedup=ratio,
    )
    print(f"\nshared {len(examples) / shared_seconds:.3f} examples/s, unshared "
          f"{len(examples) / unshared_seconds:.3f} examples/s, speedup {ratio:.2f}x")
    final = {(row.config, row.example_id): row.final_action for row in shared_rows}
    assert final == {(row.config, row.example_id): row.final_action for row in unshared_rows}
    assert ratio >= 3.0


@pytest.mark.skipif(not assets.is_fetched("qwen2.5-coder-0.5b-instruct"), reason="run `spec-agent assets fetch`")
def test_default_bench_peak_memory(tmp_path):
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "spec_agent.cli", "bench", "--limit", "2", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\npeak RSS of `spec-agent bench --limit 2`: {peak_gib:.2f} GiB in {time.perf_counter() - started:.0f}s")
    assert peak_gib <= 6.0
