"""Trace store failures and interruptions during a benchmark run, then resume with the run id.

Each case stops a run part-way on tiny models and a SQLite trace store, resumes it with a healthy
runner, and checks that every (configuration, example) pair is stored exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from spec_agent._memo import CachedModel
from spec_agent.cost import CostModel
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import SpecAgentRuntimeError
from spec_agent.eval.bench import BenchConfig, BenchRunner, Models
from spec_agent.eval.schema import Example
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.verifiers import ConfidenceVerifier
from tests.security.tally import TALLY
from tests.bench_helpers import make_examples, tiny_model_dirs

CONFIGS = "ABCDE"
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory)


def make_runner(tiny_dirs, store, configurations=CONFIGS) -> BenchRunner:
    generation = GenerationConfig(max_new_tokens=4)
    cheap = HFChatModel(tiny_dirs[0], role="cheap", generation=generation)
    strong = HFChatModel(tiny_dirs[1], role="strong", generation=generation)
    models = Models(cheap=CachedModel(cheap), strong=CachedModel(strong), verifier=ConfidenceVerifier())
    config = BenchConfig(configurations=tuple(configurations), limit=0)
    return BenchRunner(config=config, models=models, store=store, cost_model=CostModel())


class FailingStore(SqlTraceStore):
    """A SQLite trace store whose `log_decisions` raises `error` from call number `fail_on` on.

    With `after_commit`, the failing call first writes its batch, as when a process dies between
    the commit and the return.
    """

    def __init__(self, url: str, *, error: BaseException, fail_on: int, after_commit: bool = False):
        super().__init__(url)
        self.error = error
        self.fail_on = fail_on
        self.after_commit = after_commit
        self.writes = 0

    def log_decisions(self, run_id, rows):
        self.writes += 1
        if self.writes < self.fail_on:
            return super().log_decisions(run_id, rows)
        if self.after_commit:
            super().log_decisions(run_id, rows)
        raise self.error


def stored_keys(store: SqlTraceStore, run_id: str) -> list[tuple[str, str]]:
    return [(row.config, row.example_id) for row in store.decisions(run_id)]


def expected_keys(examples: list[Example], configurations: str = CONFIGS) -> set[tuple[str, str]]:
    return {(letter, example.id) for example in examples for letter in configurations}


def tally_losses(stored: list[tuple[str, str]], expected: set[tuple[str, str]]) -> None:
    TALLY["decisions lost"] += len(expected - set(stored))
    TALLY["decisions duplicated"] += sum(count - 1 for count in Counter(stored).values())


@pytest.mark.parametrize(
    "error",
    [SpecAgentRuntimeError("Failed to log decisions: disk I/O error"), OSError("disk full")],
    ids=["store-error", "os-error"],
)
def test_store_failure_surfaces_and_keeps_committed(tiny_dirs, tmp_path, error):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    examples = make_examples(3)
    store = FailingStore(url, error=error, fail_on=2)
    run_id = store.start_run(name="faults", config={})
    TALLY["faults injected"] += 1
    with pytest.raises(type(error), match=str(error)):
        make_runner(tiny_dirs, store).run(examples, run_id=run_id)
    assert set(stored_keys(store, run_id)) == expected_keys(examples[:1])
    assert len(stored_keys(store, run_id)) == len(CONFIGS)

    make_runner(tiny_dirs, SqlTraceStore(url)).run(examples, run_id=run_id)
    stored = stored_keys(SqlTraceStore(url), run_id)
    tally_losses(stored, expected_keys(examples))
    assert sorted(stored) == sorted(expected_keys(examples))
    TALLY["faults survived"] += 1


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_interrupt_then_resume_loses_nothing(tiny_dirs, tmp_path, stop_after):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    examples = make_examples(4)
    store = SqlTraceStore(url)
    run_id = store.start_run(name="faults", config={})
    seen: list[str] = []

    def interrupt(example):
        seen.append(example.id)
        if len(seen) == stop_after:
            raise KeyboardInterrupt

    TALLY["faults injected"] += 1
    with pytest.raises(KeyboardInterrupt):
        make_runner(tiny_dirs, store).run(examples, run_id=run_id, on_example=interrupt)
    assert set(stored_keys(store, run_id)) == expected_keys(examples[:stop_after])

    resumed = make_runner(tiny_dirs, SqlTraceStore(url))
    resumed.run(examples, run_id=run_id)
    stored = stored_keys(store, run_id)
    tally_losses(stored, expected_keys(examples))
    assert len(stored) == len(expected_keys(examples))
    assert set(stored) == expected_keys(examples)
    assert resumed.stats["cheap"].examples == {example.id for example in examples[stop_after:]}
    TALLY["faults survived"] += 1


def test_interrupt_after_commit_resumes_without_duplicates(tiny_dirs, tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    examples = make_examples(3)
    store = FailingStore(url, error=KeyboardInterrupt(), fail_on=2, after_commit=True)
    run_id = store.start_run(name="faults", config={})
    TALLY["faults injected"] += 1
    with pytest.raises(KeyboardInterrupt):
        make_runner(tiny_dirs, store).run(examples, run_id=run_id)
    assert set(stored_keys(store, run_id)) == expected_keys(examples[:2])

    make_runner(tiny_dirs, SqlTraceStore(url)).run(examples, run_id=run_id)
    stored = stored_keys(store, run_id)
    tally_losses(stored, expected_keys(examples))
    assert len(stored) == len(set(stored))
    assert set(stored) == expected_keys(examples)
    TALLY["faults survived"] += 1


def test_interrupt_inside_model_stores_nothing_partial(tiny_dirs, tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.sqlite'}"
    examples = make_examples(3)
    store = SqlTraceStore(url)
    run_id = store.start_run(name="faults", config={})
    runner = make_runner(tiny_dirs, store)
    real_generate = runner.models.strong.generate

    def generate_then_stop(chat, **options):
        if "request 1." in chat[-1]["content"]:
            raise KeyboardInterrupt
        return real_generate(chat, **options)

    runner.models.strong.generate = generate_then_stop
    TALLY["faults injected"] += 1
    with pytest.raises(KeyboardInterrupt):
        runner.run(examples, run_id=run_id)
    assert {example_id for _, example_id in stored_keys(store, run_id)} == {"ex0"}

    make_runner(tiny_dirs, SqlTraceStore(url)).run(examples, run_id=run_id)
    stored = stored_keys(store, run_id)
    tally_losses(stored, expected_keys(examples))
    assert len(stored) == len(set(stored))
    assert set(stored) == expected_keys(examples)
    TALLY["faults survived"] += 1
