"""Verifier training and the trained verifier that configurations D and E use.

Two kinds share one pair dataset (`training.datasets.build_verifier_pairs`):
- `classifier`: a two-label sequence classifier (all-MiniLM-L6-v2 by default) over the
  (context, candidate) text pair of `verifier_texts`; the context is cut from the left.
- `causal-lm`: a chat model fine-tuned with LoRA to answer ACCEPT or REJECT to the exact question
  that `JudgeVerifier` sends; the score is P(ACCEPT) from the label logits.

The threshold is chosen on the calibration pairs and the ROC AUC is measured on the held-out pairs;
both are train-split scenarios that training never saw. A saved verifier folder holds the model or
adapter, the tokenizer and `verifier.json` (kind, threshold, limits); `TrainedVerifier` loads it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spec_agent.actions import Action
from spec_agent.cost import ModelCall
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError
from spec_agent.eval.schema import Example
from spec_agent.training.datasets import (
    MAX_CANDIDATE_CHARS_PER_TOKEN,
    fit_chat,
    judge_chat,
    verifier_texts,
)
from spec_agent.training.loop import prepare_callbacks, run_trainer
from spec_agent.training.manifest import load_pretrained
from spec_agent.training.recipes import VerifierConfig
from spec_agent.training.sft import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    TrainingResult,
    device_options,
    load_tokenizer,
    lora_config,
    train_sft,
)

logger = logging.getLogger(__name__)

VERIFIER_FILE = "verifier.json"
ACCEPT, REJECT = "ACCEPT", "REJECT"
SCORE_BATCH = 32


# --- Metrics ---------------------------------------------------------------------------------


def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Return the ROC AUC (the Mann-Whitney statistic, ties counted half); None without both labels."""
    positives = [score for score, label in zip(scores, labels) if label == 1]
    negatives = [score for score, label in zip(scores, labels) if label == 0]
    if not positives or not negatives:
        return None
    ranked = sorted(negatives)
    wins = 0.0
    for score in positives:
        below = _count_below(ranked, score)
        equal = _count_below(ranked, math.nextafter(score, math.inf)) - below
        wins += below + 0.5 * equal
    return wins / (len(positives) * len(negatives))


def _count_below(ranked: list[float], value: float) -> int:
    import bisect

    return bisect.bisect_left(ranked, value)


def threshold_metrics(scores: list[float], labels: list[int], threshold: float) -> dict[str, float]:
    """Return accuracy, precision, TPR and FPR of accepting scores that reach `threshold`."""
    accepted = [score >= threshold for score in scores]
    tp = sum(1 for a, label in zip(accepted, labels) if a and label == 1)
    fp = sum(1 for a, label in zip(accepted, labels) if a and label == 0)
    positives = sum(labels)
    negatives = len(labels) - positives
    correct = sum(1 for a, label in zip(accepted, labels) if a == (label == 1))
    return {
        "accuracy": correct / len(labels) if labels else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "tpr": tp / positives if positives else 0.0,
        "fpr": fp / negatives if negatives else 0.0,
    }


def choose_threshold(scores: list[float], labels: list[int], *, policy: str, target_precision: float) -> float:
    """Choose the acceptance threshold on calibration scores.

    `youden` maximises TPR - FPR (the highest such threshold on ties). `precision` takes the lowest
    threshold whose precision reaches `target_precision`, and falls back to `youden` with a
    warning when no threshold does.

    Raises:
        ConfigError: The calibration set lacks positives or negatives.
    """
    if not 0 < sum(labels) < len(labels):
        raise ConfigError("Calibration pairs need both labels; raise verifier.positives or "
                          "verifier.calibration_fraction.")
    candidates = sorted(set(scores))
    if policy == "precision":
        for threshold in candidates:
            if threshold_metrics(scores, labels, threshold)["precision"] >= target_precision:
                return threshold
        logger.warning("No threshold reaches precision %s on calibration pairs; using youden", target_precision)
    best = max(candidates, key=lambda t: (_youden(scores, labels, t), t))
    return best


def _youden(scores: list[float], labels: list[int], threshold: float) -> float:
    metrics = threshold_metrics(scores, labels, threshold)
    return metrics["tpr"] - metrics["fpr"]


# --- The trained verifier --------------------------------------------------------------------


class TrainedVerifier:
    """A verifier loaded from a folder written by `train_verifier`.

    Args:
        path: Folder with `verifier.json` and the model or adapter.
        name: Name in traces; defaults to `trained:<folder name>`.
    """

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        self.path = Path(path)
        settings_path = self.path / VERIFIER_FILE
        if not settings_path.is_file():
            raise ConfigError(f"{str(settings_path)!r} not found: pass a folder written by "
                              "`spec-agent train verifier`.")
        self.settings = json.loads(settings_path.read_text(encoding="utf-8"))
        self.kind: str = self.settings["kind"]
        self.threshold: float = float(self.settings["threshold"])
        self.max_length: int = int(self.settings["max_length"])
        self.name = name or f"trained:{self.path.name}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._judge: Any = None

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return P(ACCEPT) for a parsed proposal and the verifier call; unparsed ones get None."""
        if proposal.action is None:
            return None, []
        if self.kind == "causal-lm":
            return self._judge_model().score(messages, tools, proposal)
        started = time.perf_counter()
        [(probability, tokens)] = self.probabilities([(messages, tools, proposal.action)])
        call = ModelCall(role="verifier", model=self.name, prompt_tokens=tokens, completion_tokens=0,
                         latency_s=time.perf_counter() - started)
        return probability, [call]

    def probabilities(self, items: list[tuple[list[dict[str, Any]], list[dict[str, Any]], Action]]) -> list[tuple[float, int]]:
        """Score (messages, tools, action) items; return (P(ACCEPT), input tokens) per item."""
        if self.kind == "causal-lm":
            results = []
            for messages, tools, action in items:
                score, calls = self._judge_model().score(messages, tools, Proposal(text="", action=action))
                results.append((float(score), int(calls[0].prompt_tokens or 0)))
            return results
        return self._classify([verifier_texts(*item) for item in items])

    def _classify(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        model, tokenizer = self._classifier()
        results: list[tuple[float, int]] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), SCORE_BATCH):
                batch = encode_pairs(tokenizer, pairs[start:start + SCORE_BATCH], self.max_length)
                encoded = tokenizer.pad(batch, return_tensors="pt")
                probabilities = torch.softmax(model(**encoded).logits.float(), dim=-1)[:, 1]
                lengths = encoded["attention_mask"].sum(dim=1)
                results += [(float(p), int(n)) for p, n in zip(probabilities, lengths)]
        return results

    def _classifier(self) -> tuple[Any, Any]:
        if self._model is None:
            self._model, self._tokenizer = load_classifier(self.path)
        return self._model, self._tokenizer

    def _judge_model(self) -> Any:
        if self._judge is None:
            from spec_agent.hf import GenerationConfig, HFChatModel
            from spec_agent.verifiers import JudgeVerifier

            generation = GenerationConfig(max_prompt_tokens=self.max_length)
            model = HFChatModel(str(self.path / ADAPTER_DIR), role="verifier", generation=generation)
            self._judge = JudgeVerifier(model)
            self._judge.name = self.name
        return self._judge


def load_classifier(path: Path) -> tuple[Any, Any]:
    """Load a saved classifier verifier: a full model, or a LoRA adapter over its base model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    settings = json.loads((path / VERIFIER_FILE).read_text(encoding="utf-8"))
    # A shipped LoRA verifier leaves out the tokenizer, which is the base model's.
    has_tokenizer = (path / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else load_tokenizer(settings["base_model"])
    tokenizer.truncation_side = "left"
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        from transformers.utils import logging as transformers_logging

        # The base has no classifier head, and transformers reports it as missing; the adapter
        # carries the trained head, so the report would only mislead.
        level = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            base = load_pretrained(AutoModelForSequenceClassification, settings["base_model"], num_labels=2)
        finally:
            transformers_logging.set_verbosity(level)
        model = PeftModel.from_pretrained(base, str(path))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path)
    model.eval()
    return model, tokenizer


def encode_pairs(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> dict[str, Any]:
    """Tokenize (context, candidate) pairs, cutting the context from the left to fit `max_length`."""
    tokenizer.truncation_side = "left"
    cap = MAX_CANDIDATE_CHARS_PER_TOKEN * (max_length // 2)
    contexts = [context for context, _ in pairs]
    candidates = [candidate[:cap] for _, candidate in pairs]
    return tokenizer(contexts, candidates, truncation="only_first", max_length=max_length)


# --- Training --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VerifierResult:
    """A trained verifier, its calibrated threshold and its held-out quality."""

    training: TrainingResult
    """Steps, wall time and throughput of the training run."""
    folder: Path | None
    """Folder `TrainedVerifier` loads; None when training was interrupted."""
    threshold: float | None
    """Threshold chosen on the calibration pairs."""
    metrics: dict[str, Any]
    """Held-out ROC AUC and threshold metrics, calibration metrics, pair counts."""


def train_verifier(
    config: VerifierConfig,
    pairs: dict[str, list[dict[str, Any]]],
    examples: dict[str, Example],
    output_dir: Path,
    *,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
) -> VerifierResult:
    """Train a verifier on `pairs['train']`, calibrate it and measure it on held-out pairs.

    Args:
        config: Verifier settings of the recipe.
        pairs: `train`, `calibration` and `heldout` pair rows.
        examples: Train-split examples by id, to render each pair's context.
        output_dir: Folder for `checkpoints/` and the final `adapter/`.
        seed: Seed of the trainer.
        callbacks: Extra `TrainerCallback`s.
    """
    output_dir = Path(output_dir)
    train = _train_causal if config.kind == "causal-lm" else _train_classifier
    training = train(config, pairs, examples, output_dir, seed=seed, callbacks=callbacks)
    if training.adapter_dir is None:
        return VerifierResult(training=training, folder=None, threshold=None, metrics={})
    folder = training.adapter_dir if config.kind == "classifier" else output_dir
    _write_settings(folder, config, threshold=0.5)
    verifier = TrainedVerifier(folder)
    calibration = _scores(verifier, pairs["calibration"], examples)
    heldout = _scores(verifier, pairs["heldout"], examples)
    threshold = choose_threshold(*calibration, policy=config.threshold_policy,
                                 target_precision=config.target_precision)
    _write_settings(folder, config, threshold=threshold)
    metrics = {
        "heldout_roc_auc": roc_auc(*heldout),
        "heldout_at_threshold": threshold_metrics(*heldout, threshold),
        "calibration_roc_auc": roc_auc(*calibration),
        "calibration_at_threshold": threshold_metrics(*calibration, threshold),
        "pairs": {split: len(rows) for split, rows in pairs.items()},
    }
    return VerifierResult(training=training, folder=folder, threshold=threshold, metrics=metrics)


def _scores(verifier: TrainedVerifier, rows: list[dict[str, Any]], examples: dict[str, Example]) -> tuple[list[float], list[int]]:
    items = [_item(row, examples) for row in rows]
    scores = [score for score, _ in verifier.probabilities(items)]
    return scores, [int(row["label"]) for row in rows]


def _item(row: dict[str, Any], examples: dict[str, Example]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Action]:
    example = examples[row["id"]]
    return example.messages, example.tools, Action.from_dict(json.loads(row["action"]))


def _write_settings(folder: Path, config: VerifierConfig, *, threshold: float) -> None:
    settings = {"kind": config.kind, "method": config.method if config.kind == "classifier" else "lora",
                "base_model": config.model, "max_length": config.max_length, "threshold": threshold}
    (folder / VERIFIER_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _train_classifier(
    config: VerifierConfig, pairs: dict[str, list[dict[str, Any]]], examples: dict[str, Example],
    output_dir: Path, *, seed: int, callbacks: Sequence[Any],
) -> TrainingResult:
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = load_tokenizer(config.model)
    model = load_pretrained(AutoModelForSequenceClassification, config.model, num_labels=2)
    if config.method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config, task_type="SEQ_CLS"))
    texts = [verifier_texts(*_item(row, examples)) for row in pairs["train"]]
    encoded = encode_pairs(tokenizer, texts, config.max_length)
    dataset = Dataset.from_dict({**encoded, "labels": [int(row["label"]) for row in pairs["train"]]})
    trainer = Trainer(
        model=model,
        args=_classifier_arguments(TrainingArguments, config, output_dir, seed=seed),
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=list(callbacks),
    )
    stop = prepare_callbacks(trainer)
    outcome = run_trainer(trainer, stop)
    if outcome.interrupted:
        return TrainingResult(adapter_dir=None, checkpoint_dir=output_dir / CHECKPOINT_DIR, outcome=outcome)
    adapter = output_dir / ADAPTER_DIR
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    return TrainingResult(adapter_dir=adapter, checkpoint_dir=output_dir / CHECKPOINT_DIR, outcome=outcome,
                          metrics={"train_loss": outcome.train_loss})


def _classifier_arguments(cls: Any, config: VerifierConfig, output_dir: Path, *, seed: int) -> Any:
    return cls(
        output_dir=str(output_dir / CHECKPOINT_DIR),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **device_options(config.bf16),
    )


def _train_causal(
    config: VerifierConfig, pairs: dict[str, list[dict[str, Any]]], examples: dict[str, Example],
    output_dir: Path, *, seed: int, callbacks: Sequence[Any],
) -> TrainingResult:
    tokenizer = load_tokenizer(config.model)
    rows = {
        "train": [_judge_row(tokenizer, row, examples, config.max_length) for row in pairs["train"]],
        "validation": [_judge_row(tokenizer, row, examples, config.max_length) for row in pairs["calibration"]],
    }
    return train_sft(config.model, rows, config, output_dir, seed=seed, callbacks=callbacks)


def _judge_row(tokenizer: Any, row: dict[str, Any], examples: dict[str, Example], max_length: int) -> dict[str, str]:
    messages, tools, action = _item(row, examples)
    # The label is one or two tokens plus EOS; the rest of the budget is prompt.
    chat, _ = fit_chat(tokenizer, judge_chat(messages, tools, action), max_length - 4)
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return {"prompt": prompt, "completion": ACCEPT if row["label"] == 1 else REJECT}
