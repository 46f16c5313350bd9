"""The opening head: fitting, saving, and choosing a tiny model's openings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from spec_agent.errors import ConfigError
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.opening_head import (
    HEAD_FILE,
    OpeningHead,
    find_opening_head,
    fit_opening_head,
    load_opening_head,
    opening_head_metrics,
)
from tests.tiny_models import build_causal_lm

CHAT = [{"role": "system", "content": "Available tools:"}, {"role": "user", "content": "ls"}]
OPENINGS = ("tool_call:", "final_answer:", "BLOCKED:")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("tiny"))


def _model(tiny_dir, head=None):
    return HFChatModel(str(tiny_dir), role="cheap", generation=GenerationConfig(max_new_tokens=4),
                       opening_head=head)


def _forcing_head(openings, chosen, hidden_size):
    """A head that ignores its features and always prefers `chosen`."""
    features = hidden_size + len(openings)
    bias = torch.full((len(openings),), -10.0)
    bias[openings.index(chosen)] = 10.0
    return OpeningHead(openings=tuple(openings), weight=torch.zeros(len(openings), features), bias=bias,
                       mean=torch.zeros(features), scale=torch.ones(features))


def _separable(rows=90, hidden=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    gold = torch.arange(rows) % len(OPENINGS)
    states = torch.randn(rows, hidden, generator=generator)
    states[torch.arange(rows), gold] += 4.0
    loglik = torch.randn(rows, len(OPENINGS), generator=generator)
    return states, loglik, gold


def test_fit_learns_a_separable_choice():
    states, loglik, gold = _separable()
    head = fit_opening_head(states, loglik, gold, OPENINGS, l2=1e-3)
    assert (head.logits(states, loglik).argmax(dim=1) == gold).float().mean() == 1.0
    fresh, fresh_loglik, fresh_gold = _separable(seed=1)
    assert (head.logits(fresh, fresh_loglik).argmax(dim=1) == fresh_gold).float().mean() > 0.9


def test_saved_head_reloads_with_identical_logits(tmp_path):
    states, loglik, gold = _separable()
    head = dataclasses.replace(fit_opening_head(states, loglik, gold, OPENINGS, l2=1e-2), metrics={"l2": 0.01})
    head.save(tmp_path)
    loaded = load_opening_head(tmp_path)
    assert loaded.openings == OPENINGS
    assert loaded.metrics == {"l2": 0.01}
    assert loaded.hidden_size == 6
    assert torch.equal(loaded.logits(states, loglik), head.logits(states, loglik))
    assert find_opening_head(tmp_path) == tmp_path / HEAD_FILE
    assert find_opening_head(tmp_path / "elsewhere") is None


def test_head_metrics_read_from_the_header(tmp_path):
    states, loglik, gold = _separable()
    head = dataclasses.replace(fit_opening_head(states, loglik, gold, OPENINGS, l2=1e-2), metrics={"l2": 0.01})
    path = head.save(tmp_path)
    assert opening_head_metrics(path) == {"l2": 0.01}
    (tmp_path / "broken.safetensors").write_bytes(b"not a head")
    with pytest.raises(ConfigError, match="broken.safetensors"):
        opening_head_metrics(tmp_path / "broken.safetensors")
    with pytest.raises(ConfigError, match="not an opening head"):
        load_opening_head(tmp_path / "broken.safetensors")


def test_missing_head_names_path_and_fix(tmp_path):
    with pytest.raises(ConfigError, match="spec-agent train head") as error:
        load_opening_head(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_mismatched_rows_rejected():
    states, loglik, gold = _separable()
    with pytest.raises(ConfigError, match="same non-zero number of rows"):
        fit_opening_head(states[:5], loglik, gold, OPENINGS, l2=1e-3)


def test_head_chooses_the_opening(tiny_dir):
    plain = _model(tiny_dir)
    likeliest = plain.generate(CHAT, openings=OPENINGS)[0][0].text
    other = next(opening for opening in OPENINGS if not likeliest.startswith(opening))
    headed = _model(tiny_dir, _forcing_head(OPENINGS, other, hidden_size=32))
    generations, _ = headed.generate(CHAT, openings=OPENINGS)
    assert generations[0].text.startswith(other)
    sampled, _ = headed.generate(CHAT, n=4, sample=True, seed=1, openings=OPENINGS)
    assert all(item.text.startswith(other) for item in sampled)


def test_generation_kind_probability(tiny_dir):
    plain = _model(tiny_dir)
    likelihood = torch.softmax(plain.opening_features(CHAT, OPENINGS)[1], dim=0)
    [greedy], _ = plain.generate(CHAT, openings=OPENINGS)
    chosen = next(index for index, opening in enumerate(OPENINGS) if greedy.text.startswith(opening))
    assert greedy.kind_probability == pytest.approx(float(likelihood.max()), abs=1e-5)
    assert greedy.kind_probability == pytest.approx(float(likelihood[chosen]), abs=1e-5)
    headed = _model(tiny_dir, _forcing_head(OPENINGS, "BLOCKED:", hidden_size=32))
    [forced], _ = headed.generate(CHAT, openings=OPENINGS)
    assert forced.kind_probability == pytest.approx(1.0, abs=1e-6)
    [free], _ = plain.generate(CHAT)
    assert free.kind_probability is None


def test_head_for_other_openings_leaves_likelihood(tiny_dir):
    head = _forcing_head(("retrieval:", "repair:"), "repair:", hidden_size=32)
    expected = _model(tiny_dir).generate(CHAT, openings=OPENINGS)[0]
    assert _model(tiny_dir, head).generate(CHAT, openings=OPENINGS)[0] == expected


def test_head_of_another_model_rejected_at_load(tiny_dir):
    model = _model(tiny_dir, _forcing_head(OPENINGS, "BLOCKED:", hidden_size=7))
    with pytest.raises(ConfigError, match="7 hidden features"):
        model.load()


def test_features_match_the_scores_used_for_decoding(tiny_dir):
    model = _model(tiny_dir)
    hidden, loglik = model.opening_features(CHAT, OPENINGS)
    assert hidden.shape == (32,)
    with torch.inference_mode():
        ids = model.encode(CHAT)
        scored, _ = model._score_openings(ids, list(OPENINGS))
    assert loglik.tolist() == pytest.approx([float(values.sum()) for _, values in scored], abs=1e-5)


def test_greedy_then_sampled_scores_openings_once(tiny_dir, monkeypatch):
    model = _model(tiny_dir)
    model.load()
    calls = []
    original = model._score_openings
    monkeypatch.setattr(model, "_score_openings", lambda *args: calls.append(1) or original(*args))
    model.generate(CHAT, openings=OPENINGS)
    model.generate(CHAT, n=3, sample=True, seed=2, openings=OPENINGS)
    assert len(calls) == 1
    model.generate(CHAT + [{"role": "user", "content": "and cat"}], openings=OPENINGS)
    assert len(calls) == 2
