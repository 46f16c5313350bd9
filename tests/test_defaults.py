"""Which adapters and verifier a benchmark run uses: explicit options, shipped defaults, --untrained."""

from __future__ import annotations

import json
import logging

import pytest

from spec_agent import defaults
from spec_agent.defaults import bench_models, package_trained
from spec_agent.errors import ConfigError


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    (tmp_path / "proposer-cheap-asset").mkdir()
    (tmp_path / "proposer-cheap-asset" / "adapter_config.json").write_text("{}")
    (tmp_path / "verifier").mkdir()
    (tmp_path / "verifier" / "verifier.json").write_text("{}")
    monkeypatch.setattr(defaults, "TRAINED_DIR", tmp_path)
    return tmp_path


def choose(**overrides):
    options = dict(cheap_model="cheap-asset", strong_model="strong-asset", verifier=None, cheap_adapter=None,
                   strong_adapter=None, untrained=False)
    return bench_models(**{**options, **overrides})


def test_shipped_defaults_used(shipped):
    chosen = choose()
    assert chosen.cheap_adapter == str(shipped / "proposer-cheap-asset")
    assert chosen.strong_adapter is None
    assert chosen.verifier == str(shipped / "verifier")


def _save_head(folder, metrics):
    import torch

    from spec_agent.opening_head import OpeningHead
    from spec_agent.prompts import KIND_OPENINGS

    count = len(KIND_OPENINGS)
    OpeningHead(openings=KIND_OPENINGS, weight=torch.zeros(count, 2 + count), bias=torch.zeros(count),
                mean=torch.zeros(2 + count), scale=torch.ones(2 + count), metrics=metrics).save(folder)


def test_calibrated_head_picks_kind(shipped):
    _save_head(shipped / "proposer-cheap-asset", {"kind_threshold": 0.8})
    assert choose().verifier == "kind"
    assert defaults.kind_threshold(shipped / "proposer-cheap-asset") == 0.8
    assert choose(opening_heads=False).verifier == str(shipped / "verifier")
    assert choose(verifier="/mine").verifier == "/mine"


def test_uncalibrated_head_keeps_verifier(shipped):
    _save_head(shipped / "proposer-cheap-asset", {"l2": 0.1})
    assert defaults.kind_threshold(shipped / "proposer-cheap-asset") is None
    assert choose().verifier == str(shipped / "verifier")
    assert defaults.kind_threshold(None) is None


def test_kind_thresholds_follow_strong_model(shipped):
    escalation = {"strong_model": "strong-asset", "threshold": 0.7, "by_kind": {"tool_call": 0.78}}
    _save_head(shipped / "proposer-cheap-asset", {"kind_threshold": 0.8, "escalation": escalation})
    adapter = shipped / "proposer-cheap-asset"
    assert defaults.kind_thresholds(adapter, "strong-asset") == {"verifier": 0.7, "by_kind": {"tool_call": 0.78}}
    # Per-kind thresholds depend on what the strong model gets right, so another one gets none.
    assert defaults.kind_thresholds(adapter, "other-strong") == {"verifier": 0.8, "by_kind": {}}
    assert defaults.kind_thresholds(None, "strong-asset") is None


def test_untrained_uses_base_models(shipped):
    chosen = choose(untrained=True)
    assert chosen.cheap_adapter is None
    assert chosen.verifier == "confidence"


def test_explicit_choices_win(shipped):
    chosen = choose(cheap_adapter="/mine", verifier="confidence", untrained=True, strong_adapter="/strong")
    assert (chosen.cheap_adapter, chosen.strong_adapter, chosen.verifier) == ("/mine", "/strong", "confidence")


def test_missing_verifier_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(defaults, "TRAINED_DIR", tmp_path)
    with caplog.at_level(logging.WARNING):
        chosen = choose()
    assert chosen.verifier == "confidence"
    assert "No trained verifier ships" in caplog.text


def fake_run(output, *, verifier_lora=True):
    for role, model in (("proposer-cheap", "cheap-asset"), ("proposer-strong", "strong-asset"), ("verifier", "minilm")):
        folder = output / role / "adapter"
        folder.mkdir(parents=True)
        (folder / "training-manifest.json").write_text(json.dumps({"base_model": {"name": model}}))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        (folder / "tokenizer.json").write_text("{}")
        if role != "verifier" or verifier_lora:
            (folder / "adapter_config.json").write_text("{}")
        if role == "proposer-cheap":
            (folder / "opening-head.safetensors").write_bytes(b"head")
    (output / "verifier" / "adapter" / "verifier.json").write_text("{}")


def test_package_copies_adapters_only(tmp_path):
    fake_run(tmp_path / "run")
    folders = package_trained(tmp_path / "run", target=tmp_path / "trained")
    assert [folder.name for folder in folders] == ["proposer-cheap-asset", "proposer-strong-asset", "verifier"]
    assert sorted(path.name for path in (tmp_path / "trained" / "verifier").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "training-manifest.json", "verifier.json"]
    assert not (tmp_path / "trained" / "proposer-cheap-asset" / "tokenizer.json").exists()
    assert (tmp_path / "trained" / "proposer-cheap-asset" / "opening-head.safetensors").read_bytes() == b"head"


def test_package_rejects_full_verifier(tmp_path):
    fake_run(tmp_path / "run", verifier_lora=False)
    with pytest.raises(ConfigError, match=r"verifier/adapter; run `spec-agent train all"):
        package_trained(tmp_path / "run", target=tmp_path / "trained")
    assert not (tmp_path / "trained").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_shipped_adapter_changes_real_model(name):
    import torch

    from spec_agent.hf import HFChatModel
    from tests.test_assets import require_fetched

    adapter = defaults.shipped_adapter(name)
    assert adapter is not None, f"no adapter for {name} in {defaults.TRAINED_DIR}"
    require_fetched(name)
    tuned = HFChatModel(name, role="cheap", adapter=adapter)
    base = HFChatModel(name, role="cheap")
    ids = tuned.tokenizer("file_read: ls(a=True)", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert not torch.allclose(tuned.model(input_ids=ids).logits, base.model(input_ids=ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_shipped_opening_head_fits_real_model(name):
    from spec_agent.hf import GenerationConfig, HFChatModel
    from spec_agent.opening_head import find_opening_head
    from spec_agent.prompts import KIND_OPENINGS
    from tests.test_assets import require_fetched

    head = find_opening_head(defaults.shipped_adapter(name))
    assert head is not None, f"no opening head for {name} in {defaults.TRAINED_DIR}"
    require_fetched(name)
    model = HFChatModel(name, role="cheap", adapter=defaults.shipped_adapter(name), opening_head=head,
                        generation=GenerationConfig(max_new_tokens=2))
    assert model.opening_head.metrics["validation_accuracy"] > model.opening_head.metrics["validation_majority_accuracy"]
    generations, _ = model.generate([{"role": "user", "content": "Show me notes.txt"}], openings=KIND_OPENINGS)
    assert generations[0].text.startswith(KIND_OPENINGS)


@pytest.mark.slow
def test_shipped_verifier_scores_real_pairs():
    from spec_agent.actions import Action
    from spec_agent.decision import Proposal
    from spec_agent.training.verifier import TrainedVerifier
    from tests.test_assets import require_fetched

    folder = defaults.shipped_verifier()
    assert folder is not None, f"no verifier in {defaults.TRAINED_DIR}"
    require_fetched("all-minilm-l6-v2")
    verifier = TrainedVerifier(folder)
    messages = [{"role": "user", "content": "What is in notes.txt?"}]
    tools = [{"name": "cat", "description": "Print a file.",
              "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}}, "required": ["file_name"]}}]
    proposal = Proposal(text="", action=Action.from_dict({"kind": "file_read", "tool_calls": [
        {"name": "cat", "arguments": {"file_name": "notes.txt"}}]}))
    first, calls = verifier.score(messages, tools, proposal)
    again, _ = verifier.score(messages, tools, proposal)
    assert 0.0 <= first <= 1.0
    assert first == again
    assert 0.0 < verifier.threshold < 1.0
