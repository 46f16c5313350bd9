"""Verifier training on tiny models, metrics, threshold choice and the trained verifier."""

from __future__ import annotations

import dataclasses
import json

import pytest

from spec_agent.decision import Proposal
from spec_agent.training.datasets import PairSplits, build_verifier_pairs, load_training_examples
from spec_agent.training.recipes import VerifierConfig
from spec_agent.training.verifier import TrainedVerifier, choose_threshold, roc_auc, train_verifier
from tests.training.conftest import make_example

SETTINGS = VerifierConfig(max_length=128, batch_size=8, learning_rate=1e-3, max_steps=6, save_steps=100,
                          logging_steps=1, calibration_fraction=0.25, heldout_fraction=0.25)


@pytest.fixture(scope="module")
def pairs(dataset_dir):
    examples, eval_scenarios = load_training_examples(dataset_dir)
    splits = PairSplits(positives=0, calibration=0.25, heldout=0.25, seed=0)
    rows = build_verifier_pairs(examples, splits, negatives={}, eval_scenarios=eval_scenarios)
    by_split = {name: [row for row in rows if row["split"] == name] for name in ("train", "calibration", "heldout")}
    return by_split, {example.id: example for example in examples}


def test_roc_auc_values():
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert roc_auc([0.5], [1]) is None


def test_threshold_youden_separates():
    scores, labels = [0.9, 0.7, 0.4, 0.2], [1, 1, 0, 0]
    assert choose_threshold(scores, labels, policy="youden", target_precision=0.9) == 0.7


def test_threshold_precision_target():
    scores, labels = [0.9, 0.8, 0.6, 0.5, 0.3], [1, 0, 1, 0, 0]
    assert choose_threshold(scores, labels, policy="precision", target_precision=0.99) == 0.9
    assert choose_threshold(scores, labels, policy="precision", target_precision=0.6) == 0.6


@pytest.mark.parametrize("method", ["full", "lora"])
def test_classifier_trains_and_reloads(method, tiny_bert, pairs, tmp_path):
    by_split, examples = pairs
    settings = dataclasses.replace(SETTINGS, model=str(tiny_bert), method=method, target_modules=("query", "value"))
    result = train_verifier(settings, by_split, examples, tmp_path)
    saved = json.loads((result.folder / "verifier.json").read_text())
    verifier = TrainedVerifier(result.folder)
    example = make_example(1, "train")
    score, calls = verifier.score(example.messages, example.tools, Proposal(text="", action=example.action))
    again, _ = TrainedVerifier(result.folder).score(example.messages, example.tools,
                                                    Proposal(text="", action=example.action))
    assert result.training.outcome.global_step == 6
    assert saved["threshold"] == result.threshold
    assert saved["method"] == method
    assert 0.0 <= result.metrics["heldout_roc_auc"] <= 1.0
    assert 0.0 < score < 1.0
    assert again == pytest.approx(score, abs=1e-6)
    assert calls[0].role == "verifier"
    assert calls[0].prompt_tokens <= 128


def test_unparsed_proposal_not_scored(tiny_bert, pairs, tmp_path):
    by_split, examples = pairs
    settings = dataclasses.replace(SETTINGS, model=str(tiny_bert), max_steps=1)
    result = train_verifier(settings, by_split, examples, tmp_path)
    score, calls = TrainedVerifier(result.folder).score([], [], Proposal(text="garbage", action=None))
    assert score is None
    assert calls == []


def test_causal_lm_verifier_path(tiny_lm, pairs, tmp_path):
    by_split, examples = pairs
    settings = dataclasses.replace(SETTINGS, model=str(tiny_lm), kind="causal-lm", method="lora",
                                   max_length=2048, max_steps=2, batch_size=2,
                                   target_modules=("q_proj", "v_proj"))
    small = {name: rows[:8] for name, rows in by_split.items()}
    result = train_verifier(settings, small, examples, tmp_path)
    example = make_example(2, "train")
    score, calls = TrainedVerifier(result.folder).score(example.messages, example.tools,
                                                        Proposal(text="", action=example.action))
    assert result.folder == tmp_path
    assert 0.0 < score < 1.0
    assert calls[0].role == "verifier"
    assert result.threshold is not None
