"""Proposer SFT on a tiny model: loss, adapter round trip, interrupt and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from spec_agent.errors import ConfigError
from spec_agent.training.datasets import build_sft_rows
from spec_agent.training.recipes import ProposerConfig
from spec_agent.training.sft import train_sft
from tests.training.conftest import make_example

SETTINGS = ProposerConfig(max_length=2048, lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3,
                          batch_size=2, gradient_accumulation_steps=1, save_steps=100, logging_steps=1,
                          max_steps=12)


@pytest.fixture(scope="module")
def rows(tiny_lm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    examples = [make_example(index, "train") for index in range(8)]
    train, _ = build_sft_rows(examples[:6], tokenizer, count=0, max_length=2048, seed=0)
    validation, _ = build_sft_rows(examples[6:], tokenizer, count=0, max_length=2048, seed=0)
    return {"train": train, "validation": validation}


@pytest.fixture(scope="module")
def trained(tiny_lm, rows, tmp_path_factory):
    return train_sft(str(tiny_lm), rows, SETTINGS, tmp_path_factory.mktemp("sft"), seed=0)


def test_sft_loss_decreases(trained):
    assert trained.metrics["eval_loss_after"] < trained.metrics["eval_loss_before"]
    assert trained.outcome.global_step == 12
    assert trained.outcome.examples_per_second > 0


def test_adapter_reload_identical(trained, tiny_lm):
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(trained.adapter_dir)
    ids = tokenizer("file_read: ls(a=True)", return_tensors="pt")["input_ids"]
    first = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), trained.adapter_dir).eval()
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), trained.adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    with torch.inference_mode():
        logits = first(input_ids=ids).logits
        assert torch.equal(logits, again(input_ids=ids).logits)
        assert not torch.allclose(logits, base(input_ids=ids).logits)


def test_adapter_loads_in_hf_chat_model(trained):
    from spec_agent.hf import GenerationConfig, HFChatModel

    model = HFChatModel(str(trained.adapter_dir), role="cheap", generation=GenerationConfig(max_new_tokens=4))
    generations, calls = model.generate([{"role": "user", "content": "ls"}])
    assert len(generations) == 1
    assert calls[0].completion_tokens >= 1


def test_adapter_argument_merges_weights(trained, tiny_lm, tmp_path):
    from peft import PeftModel

    from spec_agent.hf import HFChatModel

    merged = HFChatModel(str(tiny_lm), role="cheap", adapter=trained.adapter_dir)
    ids = merged.tokenizer("file_read: ls(a=True)", return_tensors="pt")["input_ids"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), trained.adapter_dir).eval()
    with torch.inference_mode():
        assert torch.allclose(merged.model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="has no adapter_config.json"):
        HFChatModel(str(tiny_lm), role="cheap", adapter=tmp_path).load()


class InterruptAt(TrainerCallback):
    """Send SIGINT to this process at one step, as Ctrl-C would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupt_saves_and_resume_continues(tiny_lm, rows, tmp_path):
    settings = dataclasses.replace(SETTINGS, max_steps=5)
    stopped = train_sft(str(tiny_lm), rows, settings, tmp_path, callbacks=[InterruptAt(2)])
    assert stopped.outcome.interrupted
    assert stopped.adapter_dir is None
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()

    resumed = train_sft(str(tiny_lm), rows, settings, tmp_path)
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    assert not resumed.outcome.interrupted
    assert resumed.outcome.resumed_from.endswith("checkpoint-2")
    assert resumed.outcome.global_step == 5
    assert resumed.outcome.steps_run == 3
    assert state["global_step"] == 5
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_missing_base_model_names_fix(rows, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="no-such-model.*spec-agent assets fetch"):
        train_sft(missing, rows, SETTINGS, tmp_path / "out")
