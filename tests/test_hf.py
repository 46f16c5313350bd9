"""The local transformers backend on a tiny model built from a config."""

from __future__ import annotations

import pytest

from spec_agent.errors import ConfigError
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.proposers import LocalProposer
from tests.tiny_models import build_causal_lm

CHAT = [{"role": "system", "content": "Available tools:"}, {"role": "user", "content": "ls"}]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    directory = build_causal_lm(tmp_path_factory.mktemp("tiny"))
    return HFChatModel(str(directory), role="cheap", generation=GenerationConfig(max_new_tokens=8))


def test_greedy_generation_is_deterministic(tiny_model):
    first, calls = tiny_model.generate(CHAT)
    second, _ = tiny_model.generate(CHAT)
    assert first == second
    assert len(calls) == 1
    assert calls[0].prompt_tokens > 0
    assert 1 <= calls[0].completion_tokens <= 8
    assert 0.0 < first[0].confidence <= 1.0


def test_sampling_is_seeded(tiny_model):
    first, calls = tiny_model.generate(CHAT, n=2, sample=True, seed=7)
    second, _ = tiny_model.generate(CHAT, n=2, sample=True, seed=7)
    assert [item.text for item in first] == [item.text for item in second]
    assert len(calls) == 2


def test_greedy_with_several_generations_rejected(tiny_model):
    with pytest.raises(ConfigError, match="n=3"):
        tiny_model.generate(CHAT, n=3)


def test_label_probability_is_a_probability(tiny_model):
    probability, call = tiny_model.label_probability(CHAT)
    assert 0.0 < probability < 1.0
    assert call.completion_tokens == 0
    assert call.prompt_tokens > 0


def test_long_prompt_drops_oldest_messages(tiny_model):
    model = HFChatModel(tiny_model.name, role="cheap", generation=GenerationConfig(max_prompt_tokens=60))
    chat = [{"role": "system", "content": "tools"}] + [
        {"role": "user" if index % 2 else "assistant", "content": "ls(a=True)"}
        for index in range(10)
    ]
    assert model.encode(chat).shape[1] <= 60


def test_random_model_output_never_crashes_proposer(tiny_model):
    proposals, calls = LocalProposer(tiny_model).propose(
        [{"role": "user", "content": "list files"}], [], n=3, seed=1
    )
    assert len(proposals) == 3
    assert len(calls) == 3
    assert all(proposal.valid or proposal.error for proposal in proposals)


def test_missing_model_directory_names_path(tmp_path):
    model = HFChatModel(str(tmp_path / "nowhere"), role="cheap")
    with pytest.raises(ConfigError, match="nowhere"):
        model.load()


def test_prefix_reuse_matches_fresh_computation(tiny_model):
    judge_chat = CHAT + [{"role": "user", "content": "ACCEPT or REJECT?"}]
    fresh = HFChatModel(tiny_model.name, role="strong")
    expected, fresh_call = fresh.label_probability(judge_chat)
    expected_text = fresh.generate(CHAT)[0][0].text

    warm = HFChatModel(tiny_model.name, role="strong")
    generations, _ = warm.generate(CHAT)
    probability, call = warm.label_probability(judge_chat)
    again, again_calls = warm.generate(CHAT)

    assert fresh_call.reused_tokens == 0
    assert call.reused_tokens > 0
    assert probability == pytest.approx(expected, abs=1e-5)
    assert generations[0].text == expected_text
    assert again[0].text == expected_text
    assert 0 < again_calls[0].reused_tokens < again_calls[0].prompt_tokens


def test_prefix_reuse_can_be_disabled(tiny_model):
    model = HFChatModel(tiny_model.name, role="cheap", reuse_prefix=False)
    first, _ = model.generate(CHAT)
    second, calls = model.generate(CHAT)
    assert calls[0].reused_tokens == 0
    assert first[0].text == second[0].text
