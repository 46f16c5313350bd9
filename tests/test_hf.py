"""The local transformers backend on a tiny model built from a config."""

from __future__ import annotations

import pytest

from spec_agent.errors import ConfigError
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.prompts import render_chat
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


OPENINGS = ("file_read:", "final_answer:", "BLOCKED:")


def _opening_logprob(model, opening):
    """Score an opening with one uncached forward pass over prompt and opening together."""
    import torch

    ids = model.encode(CHAT)
    tokens = torch.tensor([model.tokenizer.encode(opening, add_special_tokens=False)])
    with torch.inference_mode():
        logits = model.model(input_ids=torch.cat([ids, tokens], dim=1)).logits[0].float()
    logprobs = torch.log_softmax(logits[ids.shape[1] - 1:-1], dim=-1)
    return float(logprobs.gather(-1, tokens[0, :, None]).sum())


def test_greedy_opening_is_the_most_likely(tiny_model):
    generations, calls = tiny_model.generate(CHAT, openings=OPENINGS)
    best = max(OPENINGS, key=lambda opening: _opening_logprob(tiny_model, opening))
    assert generations[0].text.startswith(best)
    opening_tokens = len(tiny_model.tokenizer.encode(best, add_special_tokens=False))
    assert calls[0].completion_tokens >= opening_tokens
    assert 0.0 < generations[0].confidence <= 1.0


def test_tree_scores_equal_separate_forward_passes(tiny_model):
    import torch

    # Several openings share their first tokens, so a wrong tree mask would leak between them.
    openings = ["file_read:", "file_write:", "final_answer:", "BLOCKED:"]
    ids = tiny_model.encode(CHAT)
    with torch.inference_mode():
        tiny_model._prefill(ids)
        scored, _ = tiny_model._score_openings(ids, openings)
    assert tiny_model._cache.get_seq_length() == ids.shape[1] - 1
    for opening, (_, logprobs) in zip(openings, scored):
        assert float(logprobs.sum()) == pytest.approx(_opening_logprob(tiny_model, opening), abs=1e-4)


def test_sampled_openings_are_seeded_and_allowed(tiny_model):
    first, calls = tiny_model.generate(CHAT, n=6, sample=True, seed=3, openings=OPENINGS)
    second, _ = tiny_model.generate(CHAT, n=6, sample=True, seed=3, openings=OPENINGS)
    assert [item.text for item in first] == [item.text for item in second]
    assert len(calls) == 6
    assert all(item.text.startswith(OPENINGS) for item in first)


def test_openings_reuse_prefix_like_fresh(tiny_model):
    fresh = HFChatModel(tiny_model.name, role="cheap", reuse_prefix=False)
    warm = HFChatModel(tiny_model.name, role="cheap")
    warm.generate(CHAT[:1] + [{"role": "user", "content": "cat"}])
    expected = fresh.generate(CHAT, openings=OPENINGS)[0][0]
    twice = [warm.generate(CHAT, openings=OPENINGS)[0][0] for _ in range(2)]
    assert [item.text for item in twice] == [expected.text] * 2
    assert twice[1].confidence == pytest.approx(expected.confidence, rel=1e-4)


def test_empty_openings_rejected(tiny_model):
    with pytest.raises(ConfigError, match="openings"):
        tiny_model.generate(CHAT, openings=["", ""])


def test_local_proposer_opens_with_kinds(tiny_model):
    from spec_agent.prompts import KIND_OPENINGS

    proposals, _ = LocalProposer(tiny_model).propose([{"role": "user", "content": "list files"}], [],
                                                     n=3, seed=1)
    assert all(proposal.text.startswith(KIND_OPENINGS) for proposal in proposals)
    free, _ = LocalProposer(tiny_model, openings=None).propose([{"role": "user", "content": "list files"}], [])
    assert free[0].text == tiny_model.generate(render_chat([{"role": "user", "content": "list files"}], []))[0][0].text


def test_bfloat16_weights_generate_and_score(tiny_model):
    import torch

    model = HFChatModel(tiny_model.name, role="cheap", dtype="bfloat16",
                        generation=GenerationConfig(max_new_tokens=8))
    generations, calls = model.generate(CHAT)
    probability, _ = model.label_probability(CHAT)

    assert model.model.dtype == torch.bfloat16
    assert 1 <= calls[0].completion_tokens <= 8
    assert 0.0 < generations[0].confidence <= 1.0
    assert 0.0 < probability < 1.0


def test_auto_dtype_follows_the_cpu(monkeypatch):
    import torch

    from spec_agent.hf import compute_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert compute_dtype("auto") == "bfloat16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert compute_dtype("auto") == "float32"
    assert compute_dtype("float32") == "float32"


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ConfigError, match="got 'float16'"):
        HFChatModel("anything", role="cheap", dtype="float16")
