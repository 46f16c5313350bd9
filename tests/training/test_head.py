"""Fitting opening heads: feature caching, the pipeline step and the `train head` command."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from spec_agent._cli_train import train_app
from spec_agent.errors import ConfigError
from spec_agent.hf import HFChatModel
from spec_agent.opening_head import load_opening_head
from spec_agent.prompts import KIND_OPENINGS
from spec_agent.training.datasets import assign_split, load_training_examples
from spec_agent.opening_head import OpeningHead
from spec_agent.training.head import (
    FOLDS,
    L2_GRID,
    Features,
    _folds,
    calibrate_escalation,
    collect_features,
    escalation_frame,
    fit_head,
    kind_probability_calibration,
)
from tests.training.conftest import make_example
from tests.training.test_cli_train import _recipe

runner = CliRunner()


class CountingModel:
    """An `HFChatModel` that counts the feature passes it computes."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        self.passes = 0

    def opening_features(self, chat, openings):
        self.passes += 1
        return self.model.opening_features(chat, openings)


def test_features_cache_survives_torn_line(tmp_path, tiny_lm):
    examples = [make_example(index, "train") for index in range(4)]
    cache = tmp_path / "features.jsonl"
    model = CountingModel(HFChatModel(str(tiny_lm), role="cheap"))
    first = collect_features(model, examples[:3], cache)
    # A run killed mid-write leaves half a line behind.
    with cache.open("a", encoding="utf-8") as handle:
        handle.write('{"example_id": "train-003", "hid')
    second = collect_features(model, examples, cache)
    assert model.passes == 4
    assert torch.equal(second.hidden[:3], first.hidden)
    assert second.loglik.shape == (4, len(KIND_OPENINGS))
    assert second.gold.tolist()[:3] == first.gold.tolist()
    assert collect_features(model, examples, cache).hidden.shape == (4, 32)
    assert model.passes == 4


def test_folds_keep_scenarios_whole(tmp_path, tiny_lm):
    examples = [make_example(index, "train") for index in range(20)]
    features = collect_features(HFChatModel(str(tiny_lm), role="cheap"), examples, tmp_path / "f.jsonl")
    assert features.groups == tuple(example.scenario for example in examples)
    folds = _folds(features.take(range(20)), seed=0)
    assert sorted(row for fold in folds for row in fold) == list(range(20))
    for fold in folds:
        assert {features.groups[row] for row in fold}.isdisjoint(
            {features.groups[row] for other in folds if other is not fold for row in other})
    few = Features(features.hidden[:8], features.loglik[:8], features.gold[:8], groups=features.groups[:8])
    with pytest.raises(ConfigError, match=f"at least {FOLDS} scenarios, got 4"):
        fit_head(few, few, seed=0)


def test_kind_threshold_on_validation():
    count = len(KIND_OPENINGS)
    head = _likelihood_head()
    loglik = torch.zeros(4, count)
    loglik[:, 0] = torch.tensor([6.0, 5.0, 1.0, 0.5])
    # Rows 0 and 1 choose the right kind with high probability, rows 2 and 3 the wrong one with low.
    gold = torch.tensor([0, 0, 1, 1])
    calibration = kind_probability_calibration(head, Features(torch.zeros(4, 2), loglik, gold))
    lowest_right = float(torch.softmax(loglik[1], dim=0)[0])
    assert calibration["kind_roc_auc"] == 1.0
    assert calibration["kind_threshold"] == pytest.approx(lowest_right, abs=1e-4)
    assert kind_probability_calibration(head, Features(torch.zeros(4, 2), loglik, torch.zeros(4, dtype=torch.long))) == {}


def _likelihood_head():
    """Return a head whose logits are the log-likelihood columns, so each row's scores set its probabilities."""
    count = len(KIND_OPENINGS)
    return OpeningHead(openings=KIND_OPENINGS, weight=torch.cat([torch.zeros(count, 2), torch.eye(count)], dim=1),
                       bias=torch.zeros(count), mean=torch.zeros(2 + count), scale=torch.ones(2 + count))


def test_escalation_frame_replays_both_heads():
    count = len(KIND_OPENINGS)
    gold = torch.tensor([0, 0, 1, 1])
    # The cheap head chooses kind 0 everywhere, sure on the rows where it is right, unsure elsewhere.
    cheap = torch.zeros(4, count)
    cheap[:, 0] = torch.tensor([6.0, 5.0, 1.0, 0.5])
    # The strong head chooses the gold kind everywhere.
    strong = torch.nn.functional.one_hot(gold, count).float() * 8.0
    frame = escalation_frame(_likelihood_head(), Features(torch.zeros(4, 2), cheap, gold),
                             _likelihood_head(), Features(torch.zeros(4, 2), strong, gold))
    assert list(frame.proposal_kind) == ["tool_call"] * 4
    assert list(frame.gold_kind) == ["tool_call", "tool_call", "retrieval", "retrieval"]
    assert frame.proposal_kind_correct.tolist() == [True, True, False, False]
    assert frame.strong_kind_correct.all()
    assert frame.scores["verifier"][0] == pytest.approx(float(torch.softmax(cheap[0], dim=0)[0]))
    result = calibrate_escalation(frame, max_accuracy_drop=0.0, min_support=1)
    assert result.combined.met
    assert result.combined.accuracy == 1.0
    # Only the two unsure rows go to the strong model: 0.15 per cheap call, 1.0 per strong call.
    assert result.combined.escalation_rate == 0.5
    assert result.combined.cost == pytest.approx(0.65)


def test_escalation_frame_needs_same_rows():
    rows = Features(torch.zeros(2, 2), torch.zeros(2, len(KIND_OPENINGS)), torch.tensor([0, 1]))
    other = Features(torch.zeros(2, 2), torch.zeros(2, len(KIND_OPENINGS)), torch.tensor([1, 1]))
    with pytest.raises(ConfigError, match="not the same examples"):
        escalation_frame(_likelihood_head(), rows, _likelihood_head(), other)


def test_head_both_roles_calibrates_kind_thresholds(tmp_path, dataset_dir, tiny_lm):
    from spec_agent.defaults import kind_thresholds
    from spec_agent.training.recipes import load_recipe

    path = _recipe(tmp_path, dataset_dir, tiny_lm, head_examples=10, head_validation_examples=6)
    output = tmp_path / "out"
    for command in (["proposer", "--max-steps", "1", "--role", "both"], ["head", "--role", "both"]):
        result = runner.invoke(train_app, [*command, "--recipe", str(path), "--output", str(output)])
        assert result.exit_code == 0, result.output
    adapter = output / "proposer-cheap" / "adapter"
    manifest = json.loads((adapter / "training-manifest.json").read_text())
    rows = manifest["opening_head"]["validation"]["validation_rows"]
    assert f"D's kind thresholds on {rows} held-out rows" in " ".join(result.output.split())
    escalation = load_opening_head(adapter).metrics["escalation"]
    recipe = load_recipe(path)
    assert escalation["strong_model"] == recipe.proposer.strong_model
    assert escalation["rows"] == rows
    assert 0.0 <= escalation["escalation_rate"] <= 1.0
    assert manifest["opening_head"]["validation"]["escalation"] == escalation
    chosen = kind_thresholds(adapter, recipe.proposer.strong_model)
    assert chosen == {"verifier": escalation["threshold"], "by_kind": escalation["by_kind"]}


def test_fit_head_reports_accuracies(tmp_path, tiny_lm):
    examples = [make_example(index, "train") for index in range(20)]
    features = collect_features(HFChatModel(str(tiny_lm), role="cheap"), examples, tmp_path / "f.jsonl")
    head = fit_head(features.take(range(15)), features.take(range(15, 20)), seed=0)
    assert head.metrics["train_rows"] == 15
    assert head.metrics["validation_rows"] == 5
    assert head.metrics["l2"] in L2_GRID
    for key in ("validation_accuracy", "validation_likelihood_accuracy", "validation_majority_accuracy"):
        assert 0.0 <= head.metrics[key] <= 1.0


def test_head_command_saves_head_beside_adapter(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm, head_examples=12, head_validation_examples=4)
    output = tmp_path / "out"
    trained = runner.invoke(train_app, ["proposer", "--recipe", str(recipe), "--output", str(output),
                                        "--max-steps", "1", "--role", "cheap"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(train_app, ["head", "--recipe", str(recipe), "--output", str(output), "--role", "cheap"])
    assert result.exit_code == 0, result.output
    adapter = output / "proposer-cheap" / "adapter"
    head = load_opening_head(adapter)
    assert head.openings == KIND_OPENINGS
    manifest = json.loads((adapter / "training-manifest.json").read_text())
    assert manifest["steps"] == 1
    recorded = manifest["opening_head"]
    assert recorded["validation"]["train_rows"] == 12
    assert recorded["data"]["splits"]["train"]["rows"] == 12
    # Training rows come from the train split and measuring rows from held-out scenarios only.
    rows = [json.loads(line) for line in (output / "proposer-cheap" / "head-features.jsonl").read_text().splitlines()]
    splits = Counter(_split(row["example_id"]) for row in rows)
    assert splits == {"train": 12, "heldout": recorded["data"]["splits"]["validation"]["rows"]}


def _split(example_id):
    scenario = f"train:{int(example_id.split('-')[1]) // 2}"
    return assign_split(scenario, calibration=0.1, heldout=0.15, seed=0)


def test_head_before_proposer_names_the_command(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm)
    result = runner.invoke(train_app, ["head", "--recipe", str(recipe), "--output", str(tmp_path / "out"),
                                       "--role", "strong"])
    assert result.exit_code == 2
    assert "spec-agent train proposer --role strong" in result.output


def test_hard_negatives_come_from_trained_proposer(tmp_path, dataset_dir, tiny_lm):
    from spec_agent.training.pipeline import _hard_negatives
    from spec_agent.training.recipes import load_recipe

    path = _recipe(tmp_path, dataset_dir, tiny_lm, head_examples=10, head_validation_examples=2)
    recipe = load_recipe(path)
    recipe = dataclasses.replace(recipe, verifier=dataclasses.replace(recipe.verifier, hard_negative_generations=3))
    examples, _ = load_training_examples(dataset_dir)
    output = tmp_path / "out"
    _hard_negatives(recipe, examples, output, None)
    base_caches = set((output / "proposals").iterdir())
    assert len(base_caches) == 1
    for command in (["proposer", "--max-steps", "1"], ["head"]):
        result = runner.invoke(train_app, [*command, "--recipe", str(path), "--output", str(output), "--role", "cheap"])
        assert result.exit_code == 0, result.output
    _hard_negatives(recipe, examples, output, None)
    trained_caches = set((output / "proposals").iterdir()) - base_caches
    assert len(trained_caches) == 1
    assert "-trained-" in trained_caches.pop().name


def test_head_rerun_reads_cached_features(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm, head_examples=10, head_validation_examples=2)
    output = tmp_path / "out"
    for command in (["proposer", "--max-steps", "1"], ["head"], ["head"]):
        result = runner.invoke(train_app, [*command, "--recipe", str(recipe), "--output", str(output), "--role", "cheap"])
        assert result.exit_code == 0, result.output
    assert "every example cached" in result.output
    manifest = json.loads((output / "proposer-cheap" / "adapter" / "training-manifest.json").read_text())
    assert manifest["opening_head"]["computed_rows"] == 0
    assert manifest["opening_head"]["examples_per_second"] is None
