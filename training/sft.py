"""Supervised LoRA fine-tuning with TRL's `SFTTrainer`, on prompt/completion rows.

The loss covers the completion only (`completion_only_loss=True`): the action line, its newline and
the EOS token that TRL appends. Proposers and the causal-LM verifier both train through `train_sft`,
with one `ProposerConfig`-shaped settings object, so the cheap and the strong proposer cannot get
different recipes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spec_agent.errors import ConfigError
from spec_agent.training.loop import LoopOutcome, prepare_callbacks, run_trainer
from spec_agent.training.manifest import load_pretrained

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True, kw_only=True)
class TrainingResult:
    """The outcome of one training run."""

    adapter_dir: Path | None
    """Saved adapter (or model) folder; None when the run was interrupted."""
    checkpoint_dir: Path
    """Folder of the resumable checkpoints."""
    outcome: LoopOutcome
    """Steps, wall time and throughput of the loop."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Validation metrics, e.g. `eval_loss_before` and `eval_loss_after`."""


def device_options(bf16: bool) -> dict[str, Any]:
    """Return the Trainer device settings: CPU in fp32 unless a CUDA device is present."""
    import torch

    cuda = torch.cuda.is_available()
    if bf16 and not cuda:
        logger.warning("bf16 requested but no CUDA device is present; training in fp32 on the CPU")
    return {"use_cpu": not cuda, "bf16": bool(bf16 and cuda)}


def load_tokenizer(name: str) -> Any:
    """Load a model's tokenizer, with a pad token (EOS when the model defines none)."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def sft_config(settings: Any, output_dir: Path, *, seed: int) -> Any:
    """Build the TRL `SFTConfig` of a proposer-style settings object."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir / CHECKPOINT_DIR),
        max_length=settings.max_length,
        completion_only_loss=True,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        save_steps=settings.save_steps,
        save_total_limit=2,
        logging_steps=settings.logging_steps,
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **device_options(settings.bf16),
    )


def lora_config(settings: Any, task_type: str = "CAUSAL_LM") -> Any:
    """Build the peft `LoraConfig` of a settings object."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
    )


def train_sft(
    model_name: str,
    rows: dict[str, list[dict[str, Any]]],
    settings: Any,
    output_dir: Path,
    *,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
) -> TrainingResult:
    """Fine-tune LoRA adapters of a causal LM on `prompt`/`completion` rows.

    Args:
        model_name: Base model: embedded asset name, local directory or hub id.
        rows: `train` and `validation` rows with `prompt` and `completion` strings.
        settings: A `ProposerConfig` (or any object with its training fields).
        output_dir: Folder for `checkpoints/` and the final `adapter/`.
        seed: Seed of the trainer.
        callbacks: Extra `TrainerCallback`s.

    Raises:
        ConfigError: The base model does not load, or a split has no rows.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    output_dir = Path(output_dir)
    for split in ("train", "validation"):
        if not rows.get(split):
            raise ConfigError(
                f"No {split} rows to fine-tune {model_name!r} on: every sampled example is longer than "
                f"max_length={settings.max_length} tokens. Raise max_length or check the dataset."
            )
    tokenizer = load_tokenizer(model_name)
    model = load_pretrained(AutoModelForCausalLM, model_name, dtype=torch.float32)
    columns = ("prompt", "completion")
    train = Dataset.from_list([{key: row[key] for key in columns} for row in rows["train"]])
    validation = Dataset.from_list([{key: row[key] for key in columns} for row in rows["validation"]])
    trainer = SFTTrainer(
        model=model,
        args=sft_config(settings, output_dir, seed=seed),
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=lora_config(settings),
        callbacks=list(callbacks),
    )
    return _train_and_save(trainer, tokenizer, output_dir)


def _train_and_save(trainer: Any, tokenizer: Any, output_dir: Path) -> TrainingResult:
    stop = prepare_callbacks(trainer)
    started = time.perf_counter()
    before = trainer.evaluate()["eval_loss"]
    evaluation_seconds = time.perf_counter() - started
    outcome = run_trainer(trainer, stop)
    metrics: dict[str, Any] = {"eval_loss_before": round(float(before), 4)}
    if outcome.interrupted:
        return TrainingResult(adapter_dir=None, checkpoint_dir=output_dir / CHECKPOINT_DIR,
                              outcome=outcome, metrics=metrics)
    metrics["eval_loss_after"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    metrics["train_loss"] = outcome.train_loss
    metrics["evaluation_seconds"] = round(evaluation_seconds, 2)
    adapter = output_dir / ADAPTER_DIR
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    return TrainingResult(adapter_dir=adapter, checkpoint_dir=output_dir / CHECKPOINT_DIR,
                          outcome=outcome, metrics=metrics)
