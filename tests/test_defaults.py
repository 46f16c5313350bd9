"""Which adapters and verifier a benchmark run uses: explicit options, shipped defaults, --untrained."""

from __future__ import annotations

import logging

import pytest

from spec_agent import defaults
from spec_agent.defaults import bench_models


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
