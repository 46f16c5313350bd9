"""The benchmark runner end to end on tiny models, a real SQLite trace store and the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
from typer.testing import CliRunner

from spec_agent._memo import CachedModel
from spec_agent.cli import app
from spec_agent.cost import CostModel
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import ConfigError
from spec_agent.eval.bench import BenchConfig, BenchRunner, Models, select_examples
from spec_agent.eval.schema import write_examples
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.verifiers import ConfidenceVerifier
from tests.bench_helpers import make_examples, tiny_model_dirs

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory)


def make_runner(tiny_dirs, store, configurations="ABCDE"):
    generation = GenerationConfig(max_new_tokens=6)
    cheap = HFChatModel(tiny_dirs[0], role="cheap", generation=generation)
    strong = HFChatModel(tiny_dirs[1], role="strong", generation=generation)
    models = Models(cheap=CachedModel(cheap), strong=CachedModel(strong), verifier=ConfidenceVerifier())
    config = BenchConfig(configurations=tuple(configurations), limit=0)
    return BenchRunner(config=config, models=models, store=store, cost_model=CostModel())


def test_runner_stores_every_configuration(tiny_dirs, tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    runner = make_runner(tiny_dirs, store)
    run_id = store.start_run(name="test", config={})
    runner.run(make_examples(3), run_id=run_id)
    rows = store.decisions(run_id)
    assert len(rows) == 15
    assert {row.config for row in rows} == set("ABCDE")
    assert {row.decision for row in rows if row.config == "A"} == {"direct"}
    assert {row.decision for row in rows if row.config == "B"} == {"unverified"}
    assert all(row.cost > 0 for row in rows)


def test_runner_computes_shared_calls_once(tiny_dirs, tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    runner = make_runner(tiny_dirs, store)
    run_id = store.start_run(name="test", config={})
    runner.run(make_examples(2), run_id=run_id)
    # Per example: one greedy and one sampled cheap call; the strong action and one judge call.
    assert runner.models.cheap.misses == 4
    assert runner.models.cheap.hits > 0
    assert runner.stats["cheap"].calls == 2 * 3
    a_cost = {row.example_id: row.cost for row in store.decisions(run_id, "A")}
    assert set(a_cost.values()) == {1}


def test_resume_skips_stored_examples(tiny_dirs, tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="test", config={})
    make_runner(tiny_dirs, store, "AB").run(make_examples(2), run_id=run_id)
    resumed = make_runner(tiny_dirs, store, "AB")
    resumed.run(make_examples(3), run_id=run_id)
    assert len(store.decisions(run_id)) == 6
    assert resumed.models.strong.misses == 1


def test_resume_feeds_escalation_target(tiny_dirs, tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="test", config={})
    first = make_runner(tiny_dirs, store, "ABDE")
    # E's three proposals cost 0.45 before any escalation, above the default aim, so only D has one.
    assert set(first.targets) == {"D"}
    first.run(make_examples(3), run_id=run_id)
    resumed = make_runner(tiny_dirs, store, "ABD")
    resumed.run(make_examples(4), run_id=run_id)
    stored = store.decisions(run_id, "D")
    target = resumed.targets["D"]
    assert first.targets["D"].steps == 3
    assert target.steps == 4
    assert target.escalated == sum(row.decision == "escalate" for row in stored)
    resumed.run(make_examples(5), run_id=run_id)
    assert target.steps == 5


def test_failure_keeps_committed_examples(tiny_dirs, tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    runner = make_runner(tiny_dirs, store, "B")
    run_id = store.start_run(name="test", config={})
    seen = []

    def stop_after_first(example):
        seen.append(example.id)
        if len(seen) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(make_examples(3), run_id=run_id, on_example=stop_after_first)
    assert [row.example_id for row in store.decisions(run_id)] == ["ex0"]


def test_select_examples_shuffles_scenarios():
    examples = [
        dataclasses.replace(example, scenario=f"s{index // 3}", metadata={"step": index % 3})
        for index, example in enumerate(make_examples(30))
    ]
    chosen = select_examples(examples, limit=0, seed=1)
    scenarios = [example.scenario for example in chosen]
    runs = [scenario for index, scenario in enumerate(scenarios) if index == 0 or scenario != scenarios[index - 1]]
    assert sorted(runs) == sorted(set(scenarios))
    assert runs != sorted(runs)
    for scenario in runs:
        assert [example.metadata["step"] for example in chosen if example.scenario == scenario] == [0, 1, 2]
    assert [example.id for example in select_examples(examples, limit=0, seed=2)] != [example.id for example in chosen]


def test_select_examples_is_seeded():
    examples = make_examples(20)
    first = [example.id for example in select_examples(examples, limit=5, seed=3)]
    again = [example.id for example in select_examples(examples, limit=5, seed=3)]
    other = [example.id for example in select_examples(examples, limit=5, seed=4)]
    assert first == again
    assert first != other
    assert len(select_examples(examples, limit=0, seed=3)) == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"configurations": ("F",)}, "Unknown configuration"), ({"limit": -1}, "limit"),
     ({"thresholds": {"verifier": 2.0}}, "outside"), ({"thresholds": {"jduge": 0.5}}, "jduge"),
     ({"dtype": "auto"}, "dtype must be"), ({"max_cost": 0.0}, "max_cost 0.0")],
)
def test_bench_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig(**kwargs)


def _cli_bench(tiny_dirs, dataset, out, *options):
    return CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--out", str(out), "--threads", "1", "--cheap-model", tiny_dirs[0],
        "--strong-model", tiny_dirs[1], "--configs", "AB", "--untrained", *options,
    ])


def _stored_run(tiny_dirs, tmp_path, examples, limit):
    """Run A and B on `limit` of `examples` tiny examples; return the dataset, out folder, store and run."""
    dataset = write_examples(make_examples(examples), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    assert _cli_bench(tiny_dirs, dataset, out, "--limit", str(limit)).exit_code == 0
    store = SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")
    return dataset, out, store, store.latest_run()


def test_cli_resume_extends_with_larger_limit(tiny_dirs, tmp_path):
    dataset, out, store, run = _stored_run(tiny_dirs, tmp_path, 6, 2)
    first = store.done_example_ids(run.run_id, "A")

    result = _cli_bench(tiny_dirs, dataset, out, "--limit", "4", "--resume", run.run_id)

    assert result.exit_code == 0, result.output
    resumed = store.run(run.run_id)
    assert first < store.done_example_ids(run.run_id, "A")
    assert len(store.done_example_ids(run.run_id, "A")) == 4
    assert resumed.status == "finished"
    assert resumed.config["settings"]["limit"] == 4
    assert [entry["examples"] for entry in resumed.config["resumed"]] == [4]


def test_cli_resume_rejects_smaller_sample(tiny_dirs, tmp_path):
    dataset, out, _, run = _stored_run(tiny_dirs, tmp_path, 6, 4)

    result = _cli_bench(tiny_dirs, dataset, out, "--limit", "1", "--resume", run.run_id)

    assert result.exit_code != 0
    assert "--limit 1 with seed 0 does not select" in " ".join(result.output.split())


def test_cli_resume_rejects_changed_settings(tiny_dirs, tmp_path):
    dataset, out, store, run = _stored_run(tiny_dirs, tmp_path, 3, 2)

    result = _cli_bench(tiny_dirs, dataset, out, "--limit", "2", "--seed", "5", "--resume", run.run_id)

    assert result.exit_code != 0
    assert "seed (stored 0, now 5)" in result.output
    assert "drop --resume" in result.output
    assert len(store.decisions(run.run_id)) == 4


def test_cli_bench_writes_report(tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    dataset = write_examples(make_examples(3), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--cheap-model", tiny_dirs[0], "--strong-model", tiny_dirs[1], "--configs", "ABD", "--untrained",
    ])
    assert result.exit_code == 0, result.output
    run_dir = next(path for path in out.iterdir() if path.is_dir())
    results = json.loads((run_dir / "results.json").read_text())
    assert (run_dir / "REPORT.md").exists()
    assert (run_dir / "frontier.png").stat().st_size > 1000
    assert "examples/s" in result.output
    assert set(results["configs"]) == {"A", "B", "D"}
    assert [results["configs"][name]["n"] for name in "ABD"] == [3, 3, 3]
    assert results["configs"]["A"]["cost"] == 1.0


def test_cli_bench_unknown_model_lists_fix(tmp_path):
    dataset = write_examples(make_examples(1), tmp_path / "eval.jsonl")
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--out", str(tmp_path / "runs"),
        "--cheap-model", str(tmp_path / "missing-model"),
    ])
    assert result.exit_code == 2
    assert "missing-model" in result.output


@pytest.mark.parametrize("pool", [[], ["--ray-address", "local"]], ids=["processes", "ray"])
def test_cli_bench_shards_over_workers(tiny_dirs, tmp_path, pool):
    dataset = write_examples(make_examples(4), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--workers", "2", "--cheap-model", tiny_dirs[0], "--strong-model", tiny_dirs[1], "--configs", "AB",
        *pool,
    ])
    assert result.exit_code == 0, result.output
    store = SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")
    rows = store.decisions(store.latest_run().run_id)
    assert sorted((row.config, row.example_id) for row in rows) == sorted(
        (config, f"ex{index}") for config in "AB" for index in range(4)
    )


def test_cli_bench_missing_verifier_folder(tmp_path):
    dataset = write_examples(make_examples(1), tmp_path / "eval.jsonl")
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--out", str(tmp_path / "runs"),
        "--verifier", str(tmp_path / "no-verifier"),
    ])
    assert result.exit_code == 2
    assert "no-verifier" in result.output
    assert "spec-agent train verifier" in result.output


def test_ray_address_without_ray_names_extra(monkeypatch):
    from spec_agent._commands import _shard_pool

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'spec-agent\[ray\]'"):
        with _shard_pool(2, 1, "local"):
            pass


def run_untrained_bench(tiny_dirs, dataset, out, configs, *options):
    """Run `spec-agent bench` with the tiny base models on every example; return the trace store."""
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--cheap-model", tiny_dirs[0], "--strong-model", tiny_dirs[1], "--configs", configs, "--untrained", *options,
    ])
    assert result.exit_code == 0, result.output
    return SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")


def test_cli_bench_no_share_same_actions(tiny_dirs, tmp_path):
    dataset = write_examples(make_examples(3), tmp_path / "eval.jsonl")
    actions = {}
    for flag in ([], ["--no-share"]):
        store = run_untrained_bench(tiny_dirs, dataset, tmp_path / ("unshared" if flag else "shared"), "ACD", *flag)
        run = store.latest_run()
        assert run.config["settings"]["share"] is not bool(flag)
        actions[bool(flag)] = sorted((row.config, row.example_id, json.dumps(row.final_action, sort_keys=True))
                                     for row in store.decisions(run.run_id))
    assert actions[False] == actions[True]


@pytest.mark.slow
def test_cli_bench_defaults_to_shipped_verifier(tiny_dirs, tmp_path):
    from spec_agent.defaults import shipped_verifier
    from tests.test_assets import require_fetched

    require_fetched("all-minilm-l6-v2")
    dataset = write_examples(make_examples(2), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--cheap-model", tiny_dirs[0], "--strong-model", tiny_dirs[1], "--configs", "AD",
    ])
    assert result.exit_code == 0, result.output
    store = SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")
    run = store.latest_run()
    assert run.config["settings"]["verifier"] == str(shipped_verifier())
    assert run.config["trained"]["verifier"]["validation"]["heldout_roc_auc"] > 0.8
    scored = [row for row in store.decisions(run.run_id, "D") if row.scores]
    assert all(0.0 <= score <= 1.0 for row in scored for score in row.scores if score is not None)


def _adapter_with_forcing_head(base, folder, kind, metrics=None):
    """Save a LoRA adapter of the tiny model and a head that always chooses `kind`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from spec_agent.opening_head import OpeningHead
    from spec_agent.prompts import KIND_OPENINGS

    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    features = model.config.hidden_size + len(KIND_OPENINGS)
    bias = torch.full((len(KIND_OPENINGS),), -10.0)
    bias[KIND_OPENINGS.index(f"{kind}:")] = 10.0
    OpeningHead(openings=KIND_OPENINGS, weight=torch.zeros(len(KIND_OPENINGS), features), bias=bias,
                mean=torch.zeros(features), scale=torch.ones(features), metrics=metrics or {}).save(folder)
    (folder / "training-manifest.json").write_text(json.dumps({"opening_head": {"validation": {"l2": 0.01}}}))
    return folder


def test_cli_bench_uses_adapter_opening_head(tiny_dirs, tmp_path):
    adapter = _adapter_with_forcing_head(tiny_dirs[0], tmp_path / "adapter", "BLOCKED")
    dataset = write_examples(make_examples(3), tmp_path / "eval.jsonl")
    runs = {}
    for flag in ([], ["--no-opening-head"]):
        out = tmp_path / ("plain" if flag else "headed")
        store = run_untrained_bench(tiny_dirs, dataset, out, "B", "--cheap-adapter", str(adapter), *flag)
        runs[bool(flag)] = (store.latest_run(), store)
    headed, store = runs[False]
    assert headed.config["settings"]["opening_heads"] is True
    assert headed.config["trained"]["cheap"]["opening_head"] == {"l2": 0.01}
    assert {row.final_action["kind"] for row in store.decisions(headed.run_id)} == {"BLOCKED"}
    plain, _ = runs[True]
    assert plain.config["settings"]["opening_heads"] is False
    assert "opening_head" not in plain.config["trained"]["cheap"]


def test_cli_bench_free_calls_flag(tiny_dirs, tmp_path):
    dataset = write_examples(make_examples(3), tmp_path / "eval.jsonl")
    proposals = {}
    for flag in ([], ["--free-calls"]):
        out = tmp_path / ("free" if flag else "grammar")
        store = run_untrained_bench(tiny_dirs, dataset, out, "B", *flag)
        run = store.latest_run()
        assert run.config["settings"]["free_calls"] is bool(flag)
        proposals[bool(flag)] = [proposal for row in store.decisions(run.run_id) for proposal in row.proposals]
        report = next(out.glob("*/REPORT.md")).read_text()
        assert ("tool payloads free" in report) is bool(flag)
    # The tiny models are random, so only the grammar makes their calls parse.
    assert all(item["error"] is None for item in proposals[False])
    assert all(item["error"] is not None for item in proposals[True])


def test_cli_bench_kind_flags(tiny_dirs, tmp_path):
    adapter = _adapter_with_forcing_head(tiny_dirs[0], tmp_path / "adapter", "BLOCKED")
    dataset = write_examples(make_examples(2), tmp_path / "eval.jsonl")
    for verifier, flag in (("kind", "--no-kind-prior"), ("confidence", "--kind-prior")):
        out = tmp_path / verifier
        store = run_untrained_bench(tiny_dirs, dataset, out, "D", "--cheap-adapter", str(adapter),
                                    "--verifier", verifier, flag)
        run = store.latest_run()
        assert run.config["settings"]["kind_prior"] is (flag == "--kind-prior")
        rows = store.decisions(run.run_id, "D")
        # The forcing head is sure of its kind, so the product equals the confidence alone.
        for row in rows:
            [proposal] = row.proposals
            assert proposal["kind_probability"] == pytest.approx(1.0, abs=1e-6)
            expected = 1.0 if verifier == "kind" else proposal["confidence"]
            assert row.scores[-1] == pytest.approx(expected, abs=1e-6)


def _kind_head_settings(tiny_dirs, tmp_path, metrics):
    """Run D through the CLI with a forcing head carrying `metrics` and return the run's settings."""
    adapter = _adapter_with_forcing_head(tiny_dirs[0], tmp_path / "adapter", "BLOCKED", metrics)
    dataset = write_examples(make_examples(2), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--cheap-model", tiny_dirs[0], "--strong-model", tiny_dirs[1], "--configs", "D",
        "--cheap-adapter", str(adapter),
    ])
    assert result.exit_code == 0, result.output
    return SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}").latest_run().config["settings"]


def test_cli_bench_default_kind_verifier(tiny_dirs, tmp_path):
    settings = _kind_head_settings(tiny_dirs, tmp_path, {"kind_threshold": 0.75})
    assert settings["verifier"] == "kind"
    assert settings["thresholds"]["verifier"] == 0.75


def test_cli_bench_records_the_unused_shipped_verifier(tiny_dirs, tmp_path):
    from spec_agent.defaults import shipped_verifier

    _kind_head_settings(tiny_dirs, tmp_path, {"kind_threshold": 0.75})
    trained = SqlTraceStore(f"sqlite:///{tmp_path / 'runs' / 'traces.sqlite'}").latest_run().config["trained"]
    manifest = json.loads((shipped_verifier() / "training-manifest.json").read_text(encoding="utf-8"))
    assert "verifier" not in trained
    assert trained["shipped_verifier"]["validation"]["heldout_roc_auc"] == manifest["validation"]["heldout_roc_auc"]


def test_cli_bench_calibrated_kind_thresholds(tiny_dirs, tmp_path):
    escalation = {"strong_model": tiny_dirs[1], "threshold": 0.6, "by_kind": {"BLOCKED": 0.7}}
    settings = _kind_head_settings(tiny_dirs, tmp_path, {"kind_threshold": 0.75, "escalation": escalation})
    assert settings["thresholds"]["verifier"] == 0.6
    assert settings["thresholds_by_kind"] == {"BLOCKED": 0.7}
