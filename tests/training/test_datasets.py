"""Training data: shared prompt rendering, SFT rows, perturbations, pairs, caches and cards."""

from __future__ import annotations

import logging
from dataclasses import replace
import random

import pytest

from spec_agent.actions import Action, ToolCall
from spec_agent.decision import Proposal
from spec_agent.errors import DatasetError
from spec_agent.eval.matching import action_matches
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.prompts import render_action, render_chat
from spec_agent.training.datasets import (
    PairSplits,
    build_sft_rows,
    build_verifier_pairs,
    dataset_card,
    generate_proposals,
    hard_negatives,
    load_training_examples,
    perturb,
    render_prompt,
    render_target,
    action_checks,
    cached_proposals,
    verifier_texts,
)
from tests.training.conftest import make_example


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def test_training_prompt_equals_inference_prompt(tiny_lm, tokenizer):
    example = make_example(1, "train")
    inference = HFChatModel(str(tiny_lm), role="cheap").encode(render_chat(example.messages, example.tools))
    prompt = render_prompt(tokenizer, example.messages, example.tools)
    assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == inference[0].tolist()


def test_fitted_prompt_equals_inference_prompt(tiny_lm, tokenizer):
    example = make_example(2, "train")
    limit = 60
    inference = HFChatModel(str(tiny_lm), role="cheap", generation=GenerationConfig(max_prompt_tokens=limit))
    ids = inference.encode(render_chat(example.messages, example.tools))[0].tolist()
    prompt = render_prompt(tokenizer, example.messages, example.tools, max_tokens=limit)
    full = render_prompt(tokenizer, example.messages, example.tools)
    assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids
    assert len(prompt) < len(full)


def test_sft_row_prompt_is_inference_prompt(tokenizer):
    examples = [make_example(index, "train") for index in range(4)]
    rows, skipped = build_sft_rows(examples, tokenizer, count=0, max_length=4096, seed=0)
    by_id = {example.id: example for example in examples}
    assert skipped == 0
    assert len(rows) == 4
    for row in rows:
        example = by_id[row["id"]]
        assert row["prompt"] == render_prompt(tokenizer, example.messages, example.tools)
        assert row["completion"] == render_action(example.action) + "\n"


def test_sft_rows_take_kinds_in_turn(tokenizer):
    # 48 examples: half file_read, a quarter file_write and a quarter final_answer.
    examples = [make_example(index, "train") for index in range(48)]
    rows, _ = build_sft_rows(examples, tokenizer, count=9, max_length=4096, seed=0)
    kinds = [row["kind"] for row in rows]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {"file_read": 3, "file_write": 3, "final_answer": 3}
    rows, _ = build_sft_rows(examples, tokenizer, count=0, max_length=4096, seed=0)
    assert len(rows) == 48


def test_sft_rows_skip_unfittable(tokenizer):
    rows, skipped = build_sft_rows([make_example(0, "train")], tokenizer, count=0, max_length=40, seed=0)
    assert rows == []
    assert skipped == 1


def test_trl_tokenization_keeps_inference_prefix(tiny_lm, tokenizer, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from spec_agent.hf import HFChatModel

    example = make_example(1, "train")
    rows, _ = build_sft_rows([example], tokenizer, count=0, max_length=4096, seed=0)
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, use_cpu=True, report_to="none",
                     max_length=4096)
    trainer = SFTTrainer(model=str(tiny_lm), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([{"prompt": rows[0]["prompt"],
                                                           "completion": rows[0]["completion"]}]))
    prepared = trainer.train_dataset[0]
    inference = HFChatModel(str(tiny_lm), role="cheap").encode(render_chat(example.messages, example.tools))
    prompt_ids = inference[0].tolist()
    labels = prepared["labels"]
    target = [token for token in labels if token != -100]
    assert prepared["input_ids"][: len(prompt_ids)] == prompt_ids
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert tokenizer.decode(target) == render_target(example.action) + tokenizer.eos_token


def test_perturbations_never_match_gold():
    rng = random.Random(0)
    seen = set()
    for index in range(40):
        example = make_example(index, "train")
        name, action = perturb(example, rng)
        seen.add(name)
        assert not action_matches(action, example)
    assert seen == {"wrong_kind", "wrong_tool", "wrong_argument", "missing_argument"}


def test_pairs_are_balanced(dataset_dir):
    examples, eval_scenarios = load_training_examples(dataset_dir)
    splits = PairSplits(positives=0, calibration=0.2, heldout=0.2, seed=0)
    rows = build_verifier_pairs(examples, splits, negatives={}, eval_scenarios=eval_scenarios)
    labels = [row["label"] for row in rows]
    assert len(rows) == 2 * len(examples)
    assert labels.count(1) == labels.count(0)
    assert {row["split"] for row in rows} == {"train", "calibration", "heldout"}


def test_split_is_by_scenario(dataset_dir):
    examples, eval_scenarios = load_training_examples(dataset_dir)
    splits = PairSplits(positives=0, calibration=0.2, heldout=0.2, seed=0)
    rows = build_verifier_pairs(examples, splits, negatives={}, eval_scenarios=eval_scenarios)
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["scenario"], row["split"]) == row["split"]


def test_negatives_never_from_eval_scenarios(dataset_dir):
    examples, eval_scenarios = load_training_examples(dataset_dir)
    splits = PairSplits(positives=0, calibration=0.2, heldout=0.2, seed=0)
    hard = {examples[0].id: make_example(3, "train").action}
    rows = build_verifier_pairs(examples, splits, negatives=hard, eval_scenarios=eval_scenarios)
    negatives = [row for row in rows if row["label"] == 0]
    assert eval_scenarios == {f"eval:{index}" for index in range(4)}
    assert negatives
    assert not {row["scenario"] for row in negatives} & eval_scenarios
    assert any(row["source"] == "proposer" for row in negatives)


def test_eval_example_in_training_raises(dataset_dir):
    examples, eval_scenarios = load_training_examples(dataset_dir)
    leaked = [*examples, make_example(0, "eval")]
    splits = PairSplits(positives=0, calibration=0.2, heldout=0.2, seed=0)
    with pytest.raises(DatasetError, match="eval-000"):
        build_verifier_pairs(leaked, splits, negatives={}, eval_scenarios=eval_scenarios)


class CountingProposer:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def propose(self, messages, tools, *, n=1, seed=0):
        self.calls += 1
        return [Proposal(text="final_answer: done", action=make_example(3, "train").action)], []


def test_proposals_cached_on_disk(tmp_path):
    examples = [make_example(index, "train") for index in range(3)]
    proposer = CountingProposer()
    first = generate_proposals(examples, proposer, tmp_path / "cache.jsonl")
    second = generate_proposals(examples, proposer, tmp_path / "cache.jsonl")
    assert proposer.calls == 3
    assert first == second
    assert set(hard_negatives(examples, second)) == {"train-000", "train-001", "train-002"}


def test_cached_proposals_skip_changed_prompts(tmp_path):
    examples = [make_example(index, "train") for index in range(3)]
    generate_proposals(examples[:2], CountingProposer(), tmp_path / "cache.jsonl")
    changed = replace(examples[1], messages=[*examples[1].messages, {"role": "user", "content": "More."}])
    found = cached_proposals([examples[0], changed, examples[2]], tmp_path / "cache.jsonl", CountingProposer.name)
    assert set(found) == {"train-000"}


def test_card_warns_on_missing_kind(caplog):
    rows = [{"id": "a", "scenario": "s", "kind": "file_read", "source": "gold", "label": 1}]
    with caplog.at_level(logging.WARNING):
        card = dataset_card({"train": rows}, source_sha256="x")
    assert card["splits"]["train"]["kinds"]["file_read"] == 1
    assert card["splits"]["train"]["kinds"]["repair"] == 0
    assert "repair" in card["warnings"][0]
    assert "'file_read': 1" in caplog.text


def test_verifier_texts_end_with_tools():
    example = make_example(1, "train")
    context, candidate = verifier_texts(example.messages, example.tools, example.action)
    assert context.splitlines()[-1] == "Tools: ls, cat, touch"
    assert candidate.splitlines()[0] == "file_read: cat(file_name='notes.txt')"
    assert candidate.splitlines()[1] == "Schema: ok"
    assert candidate.splitlines()[-1].startswith("- cat(file_name: string)")


def test_action_checks_report_schema_problems_and_unseen_values():
    example = make_example(1, "train")
    good = action_checks(example.messages, example.tools, example.action)
    call = example.action.tool_calls[0]
    typo = Action(kind="file_read", tool_calls=(ToolCall(name="cat", arguments={"file_name": "nothes.txt"}),))
    missing = Action(kind="file_read", tool_calls=(ToolCall(name="cat", arguments={}),))
    assert call.arguments == {"file_name": "notes.txt"}
    assert good == ["Schema: ok", "Values found in the conversation: 1 of 1"]
    assert action_checks(example.messages, example.tools, typo)[1] == (
        "Values found in the conversation: 0 of 1; not found: 'nothes.txt'")
    assert action_checks(example.messages, example.tools, missing) == ["Schema: cat: missing required argument 'file_name'"]
