"""Recipe loading and validation."""

from __future__ import annotations

import json

import pytest

from spec_agent.errors import ConfigError
from spec_agent.training.recipes import builtin_recipes, load_recipe, recipe_from_dict


def test_builtin_recipes_load():
    assert builtin_recipes() == ["cpu-default", "gpu-qwen3"]
    cpu = load_recipe("cpu-default")
    gpu = load_recipe("gpu-qwen3")
    assert cpu.proposer.cheap_model == "smollm2-135m-instruct"
    assert cpu.proposer.strong_model == "qwen2.5-coder-0.5b-instruct"
    assert cpu.verifier.model == "all-minilm-l6-v2"
    assert gpu.proposer.cheap_model == "Qwen/Qwen3-1.7B"
    assert gpu.proposer.strong_model == "Qwen/Qwen3-8B"
    assert gpu.verifier.model == "Qwen/Qwen3-4B"
    assert gpu.verifier.kind == "causal-lm"


def test_unknown_top_key_named():
    with pytest.raises(ConfigError, match="'learning_rat'"):
        recipe_from_dict({"name": "x", "learning_rat": 1})


def test_unknown_nested_key_named():
    with pytest.raises(ConfigError, match="'proposer.lora_rank'"):
        recipe_from_dict({"name": "x", "proposer": {"lora_rank": 8}})


def test_impossible_value_named():
    with pytest.raises(ConfigError, match="proposer.lora_r=0"):
        recipe_from_dict({"name": "x", "proposer": {"lora_r": 0}})


def test_wrong_type_named():
    with pytest.raises(ConfigError, match="verifier.epochs='two'"):
        recipe_from_dict({"name": "x", "verifier": {"epochs": "two"}})


def test_invalid_literal_named():
    with pytest.raises(ConfigError, match="verifier.kind='reward-model'"):
        recipe_from_dict({"name": "x", "verifier": {"kind": "reward-model"}})


def test_missing_name_named():
    with pytest.raises(ConfigError, match="'name' is missing"):
        recipe_from_dict({})


def test_accuracy_drop_checked():
    with pytest.raises(ConfigError, match=r"proposer.max_accuracy_drop=1.5: use a share of accuracy in \[0, 1\]"):
        recipe_from_dict({"name": "x", "proposer": {"max_accuracy_drop": 1.5}})


def test_split_shares_checked():
    with pytest.raises(ConfigError, match="verifier.calibration_fraction"):
        recipe_from_dict({"name": "x", "verifier": {"calibration_fraction": 0.0}})


def test_file_error_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "verifier": {"positivez": 3}}))
    with pytest.raises(ConfigError, match="bad.json.*'verifier.positivez'"):
        load_recipe(path)


def test_unknown_recipe_lists_builtins():
    with pytest.raises(ConfigError, match="cpu-default, gpu-qwen3"):
        load_recipe("no-such-recipe")


def test_max_steps_override_applies_to_both():
    recipe = load_recipe("cpu-default").with_max_steps(3)
    assert recipe.proposer.max_steps == 3
    assert recipe.verifier.max_steps == 3
