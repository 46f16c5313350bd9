"""Tests of the shared command helpers: which built-in split the benchmark reads."""

from __future__ import annotations

import pytest
from rich.console import Console

from spec_agent._commands import load_eval_examples
from spec_agent.errors import ConfigError
from spec_agent.eval.schema import write_examples
from spec_agent.training.datasets import assign_split
from spec_agent.training.recipes import load_recipe
from tests.bench_helpers import make_examples


@pytest.fixture
def built_in(tmp_path, monkeypatch):
    """A built-in dataset folder with 200 one-step train examples and 3 eval examples."""
    monkeypatch.setenv("SPEC_AGENT_CACHE", str(tmp_path))
    folder = tmp_path / "datasets" / "bfcl"
    train = make_examples(200)
    write_examples(train, folder / "train.jsonl")
    write_examples(make_examples(3), folder / "eval.jsonl")
    return train


def test_heldout_split_follows_recipe(built_in):
    recipe = load_recipe("cpu-default")
    expected = [example.id for example in built_in if assign_split(
        example.scenario, calibration=recipe.verifier.calibration_fraction,
        heldout=recipe.verifier.heldout_fraction, seed=recipe.seed) == "heldout"]
    examples, path = load_eval_examples(None, console=Console(), split="heldout")
    assert path.name == "train.jsonl"
    assert [example.id for example in examples] == expected
    assert 0 < len(examples) < len(built_in)


def test_train_eval_read_whole_files(built_in):
    assert len(load_eval_examples(None, console=Console(), split="train")[0]) == 200
    assert len(load_eval_examples(None, console=Console(), split="eval")[0]) == 3


def test_unknown_split_names_choices(built_in):
    with pytest.raises(ConfigError, match="'calibration'.*heldout"):
        load_eval_examples(None, console=Console(), split="calibration")
