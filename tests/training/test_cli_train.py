"""The `spec-agent train` commands on a tiny model and a tiny dataset."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from spec_agent._cli_train import train_app

runner = CliRunner()


def _recipe(tmp_path, dataset_dir, tiny_lm, **proposer):
    recipe = {
        "name": "tiny",
        "dataset": str(dataset_dir),
        "proposer": {"cheap_model": str(tiny_lm), "strong_model": str(tiny_lm), "max_length": 2048,
                     "train_examples": 4, "validation_examples": 2, "lora_r": 4, "lora_alpha": 8,
                     "batch_size": 2, "gradient_accumulation_steps": 1, "logging_steps": 1, **proposer},
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def test_proposer_command_writes_manifest(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm)
    result = runner.invoke(train_app, ["proposer", "--recipe", str(recipe), "--output", str(tmp_path / "out"),
                                       "--max-steps", "2", "--role", "cheap"])
    manifest_path = tmp_path / "out" / "proposer-cheap" / "adapter" / "training-manifest.json"
    text = manifest_path.read_text()
    manifest = json.loads(text)
    assert result.exit_code == 0, result.output
    assert list(manifest) == sorted(manifest)
    assert manifest["steps"] == 2
    assert manifest["base_model"]["path"] == str(tiny_lm)
    assert manifest["recipe"]["proposer"]["max_steps"] == 2
    assert len(manifest["data"]["source_sha256"]) == 64
    assert "eval_loss_before" in manifest["validation"]
    assert "eval_loss_after" in manifest["validation"]
    assert manifest["wall_seconds"] > 0
    assert (tmp_path / "out" / "proposer-cheap" / "data" / "card.json").is_file()


def test_unknown_recipe_key_exits_with_name(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm, lora_rank=4)
    result = runner.invoke(train_app, ["proposer", "--recipe", str(recipe), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "proposer.lora_rank" in result.output


def test_missing_model_exits_with_fetch_hint(tmp_path, dataset_dir, tiny_lm):
    recipe = _recipe(tmp_path, dataset_dir, tiny_lm, cheap_model=str(tmp_path / "absent-model"))
    result = runner.invoke(train_app, ["proposer", "--recipe", str(recipe), "--output", str(tmp_path / "out"),
                                       "--role", "cheap"])
    assert result.exit_code == 2
    assert "absent-model" in result.output
    assert "assets fetch" in result.output
