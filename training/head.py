"""Fitting a proposer's opening head on features of train-split examples.

The features of one example are the fine-tuned model's final hidden state after the prompt and the
log-likelihood of each `kind:` opening there (`HFChatModel.opening_features`). Extracting them is
one prompt pass per example, the slow part, so each example's features are appended to a JSONL
cache as soon as they exist: an interrupted run keeps them, and a rerun computes only the rest.
Fitting is seconds. The L2 strength is chosen by cross-validation on the training rows, with the
steps of one scenario in one fold, and the accuracy is reported on rows from held-out train-split
scenarios, never on the eval split.

Both proposers' heads see the same held-out rows, so those rows also show what configuration D
would do at the kind level: accept the cheap head's kind when its probability reaches a threshold,
else take the strong head's kind. `escalation_frame` turns them into a replay frame, and
`calibrate_escalation` picks D's global and per-kind thresholds on it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spec_agent.actions import ACTION_KINDS
from spec_agent.db.replay import ReplayFrame
from spec_agent.errors import ConfigError
from spec_agent.eval.calibration import Calibration, CalibrationConfig, calibrate
from spec_agent.eval.schema import Example
from spec_agent.opening_head import OpeningHead, fit_opening_head
from spec_agent.prompts import KIND_OPENINGS, render_chat
from spec_agent.training.datasets import open_jsonl_cache, prompt_digest, read_jsonl_cache

logger = logging.getLogger(__name__)

L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""L2 strengths tried by cross-validation."""
FOLDS = 5
"""Cross-validation folds for choosing the L2 strength."""
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Features:
    """Head inputs and labels of a list of examples."""

    hidden: Any
    """(n, d) hidden states."""
    loglik: Any
    """(n, k) opening log-likelihoods."""
    gold: Any
    """(n,) index of each example's gold kind in `KIND_OPENINGS`."""
    computed: int = 0
    """Rows computed by the model rather than read from the cache."""
    groups: tuple[str, ...] = ()
    """Scenario of each row, when known; cross-validation keeps a scenario's rows in one fold."""

    def __len__(self) -> int:
        return int(self.gold.shape[0])

    def take(self, rows: Sequence[int]) -> Features:
        """Return the features of the given rows."""
        import torch

        rows = list(rows)
        index = torch.tensor(rows, dtype=torch.long)
        groups = tuple(self.groups[row] for row in rows) if self.groups else ()
        return Features(self.hidden[index], self.loglik[index], self.gold[index], groups=groups)


def head_sample(examples: Sequence[Example], count: int, *, seed: int, salt: str) -> list[Example]:
    """Return a seeded sample of `count` examples in id order; `salt` separates samples of one seed."""
    chosen = random.Random(f"head:{salt}:{seed}").sample(list(examples), min(count, len(examples)))
    return sorted(chosen, key=lambda example: example.id)


def collect_features(
    model: Any,
    examples: Sequence[Example],
    cache_path: Path,
    *,
    progress: ProgressCallback | None = None,
) -> Features:
    """Return the head features of every example, computing only those not in the cache.

    Examples run in the order of their rendered prompts, so that neighbours share the longest
    prefix (the tool list first) and the model's prefix cache prefills only what differs. On a
    sample of the BFCL train split, a prompt then shares 74% of its text with the one before,
    against 44% in id order.
    Cached rows count only for the same model name and an unchanged rendered prompt.
    """
    import torch

    cached = {(row["example_id"], row["prompt_sha256"]): row for row in read_jsonl_cache(cache_path)
              if row.get("model") == model.name}
    chats = [render_chat(example.messages, example.tools) for example in examples]
    order = sorted(range(len(examples)), key=lambda index: json.dumps(chats[index]))
    rows: dict[int, dict[str, Any]] = {}
    computed = 0
    with open_jsonl_cache(cache_path) as handle:
        for done, index in enumerate(order, start=1):
            example = examples[index]
            digest = prompt_digest(example)
            row = cached.get((example.id, digest))
            if row is None:
                state, scores = model.opening_features(chats[index], KIND_OPENINGS)
                row = {"example_id": example.id, "model": model.name, "prompt_sha256": digest,
                       "hidden": state.tolist(), "loglik": scores.tolist()}
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                computed += 1
            rows[index] = row
            if progress is not None:
                progress(done, len(examples))
    hidden = [rows[index]["hidden"] for index in range(len(examples))]
    loglik = [rows[index]["loglik"] for index in range(len(examples))]
    gold = [ACTION_KINDS.index(example.action.kind) for example in examples]
    return Features(torch.tensor(hidden), torch.tensor(loglik), torch.tensor(gold, dtype=torch.long), computed,
                    groups=tuple(example.scenario for example in examples))


def choose_l2(features: Features, *, seed: int, grid: Sequence[float] = L2_GRID) -> tuple[float, dict[float, float]]:
    """Return the L2 strength with the best cross-validated accuracy, and every strength's accuracy.

    Ties go to the stronger penalty, the simpler head. The steps of a multi-turn scenario share most
    of their prompt, so with `groups` each scenario's rows stay in one fold. Split apart, a fold's
    rows would have near copies among the fitted ones, and the weakest penalty would look best.
    """
    if len(features) < FOLDS:
        raise ConfigError(f"The opening head needs at least {FOLDS} training rows, got {len(features)}; "
                          "raise head_examples in the recipe.")
    order = list(range(len(features)))
    folds = _folds(features, seed)
    scores = {}
    for l2 in grid:
        correct = 0
        for tested in folds:
            fitted = sorted(set(order) - set(tested))
            correct += _correct(_fit(features.take(fitted), l2), features.take(tested))
        scores[l2] = correct / len(features)
    best = max(sorted(grid, reverse=True), key=lambda l2: scores[l2])
    return best, scores


def _folds(features: Features, seed: int) -> list[list[int]]:
    """Split the row indices into `FOLDS` folds, whole groups at a time when rows have groups."""
    groups = features.groups or tuple(str(row) for row in range(len(features)))
    names = sorted(set(groups))
    if len(names) < FOLDS:
        raise ConfigError(f"The opening head needs rows from at least {FOLDS} scenarios, got {len(names)}. "
                          "Raise head_examples in the recipe.")
    random.Random(f"folds:{seed}").shuffle(names)
    fold_of = {name: position % FOLDS for position, name in enumerate(names)}
    return [[row for row in range(len(features)) if fold_of[groups[row]] == fold] for fold in range(FOLDS)]


def _fit(features: Features, l2: float) -> OpeningHead:
    return fit_opening_head(features.hidden, features.loglik, features.gold, KIND_OPENINGS, l2=l2)


def _correct(head: OpeningHead, features: Features) -> int:
    predicted = head.logits(features.hidden, features.loglik).argmax(dim=1)
    return int((predicted == features.gold).sum())


def accuracy(head: OpeningHead, features: Features) -> float:
    """Return the share of rows whose gold opening the head ranks first."""
    return _correct(head, features) / len(features)


def likelihood_accuracy(features: Features) -> float:
    """Return the share of rows whose gold opening is the most likely one, the choice without a head."""
    return float((features.loglik.argmax(dim=1) == features.gold).float().mean())


def fit_head(train: Features, validation: Features, *, seed: int) -> OpeningHead:
    """Choose the L2 strength on `train` by cross-validation, fit on all of it and measure on `validation`."""
    l2, scores = choose_l2(train, seed=seed)
    head = _fit(train, l2)
    majority = int(train.gold.bincount(minlength=len(ACTION_KINDS)).argmax())
    metrics = {
        "train_rows": len(train),
        "validation_rows": len(validation),
        "l2": l2,
        "cv_accuracy": {str(key): round(value, 4) for key, value in scores.items()},
        "validation_accuracy": round(accuracy(head, validation), 4),
        "validation_likelihood_accuracy": round(likelihood_accuracy(validation), 4),
        "validation_majority_accuracy": round(float((validation.gold == majority).float().mean()), 4),
        **kind_probability_calibration(head, validation),
    }
    logger.info("Opening head: L2 %s, validation kind accuracy %.3f (likelihood alone %.3f, majority %.3f)",
                l2, metrics["validation_accuracy"], metrics["validation_likelihood_accuracy"],
                metrics["validation_majority_accuracy"])
    return dataclasses.replace(head, metrics=metrics)


def kind_probability_calibration(head: OpeningHead, validation: Features) -> dict[str, float]:
    """Return how well the head's probability of its chosen kind separates right kinds from wrong ones.

    The rows come from held-out scenarios, so `kind_threshold`, the probability that maximises
    Youden's J (TPR - FPR), is a threshold for `KindVerifier` that was not chosen on the rows it
    is used on. Empty when the head chose every validation row right, or every one wrong.
    """
    import torch

    from spec_agent.training.verifier import choose_threshold, roc_auc

    probabilities = torch.softmax(head.logits(validation.hidden, validation.loglik), dim=1)
    chosen = probabilities.max(dim=1)
    scores = chosen.values.tolist()
    labels = [int(right) for right in (chosen.indices == validation.gold).tolist()]
    if not 0 < sum(labels) < len(labels):
        return {}
    threshold = choose_threshold(scores, labels, policy="youden", target_precision=1.0)
    return {"kind_threshold": round(threshold, 4), "kind_roc_auc": round(float(roc_auc(scores, labels)), 4)}


def escalation_frame(
    cheap: OpeningHead, cheap_rows: Features, strong: OpeningHead, strong_rows: Features
) -> ReplayFrame:
    """Return a replay frame of configuration D on rows that both proposers' heads have features for.

    Each row's proposal is the cheap head's kind, scored `verifier` with the head's probability of
    it, as `KindVerifier` scores it, and an escalated row takes the strong head's kind. Heads choose
    only the kind, so full correctness is unknown (NaN), and the prices are per call: a cheap call
    for every row and a strong call for each escalated one.

    Raises:
        ConfigError: The two feature sets are not for the same rows in the same order.
    """
    import numpy as np
    import torch

    from spec_agent.cost import CostModel

    if len(cheap_rows) != len(strong_rows) or not torch.equal(cheap_rows.gold, strong_rows.gold):
        raise ConfigError(f"The cheap head's {len(cheap_rows)} rows and the strong head's {len(strong_rows)} are "
                          "not the same examples; compute both heads' features on the same held-out sample.")
    chosen = {}
    for role, head, rows in (("cheap", cheap, cheap_rows), ("strong", strong, strong_rows)):
        best = torch.softmax(head.logits(rows.hidden, rows.loglik), dim=1).max(dim=1)
        chosen[role] = (best.values.numpy().astype(float), best.indices.numpy())
    gold = cheap_rows.gold.numpy()
    kinds = np.asarray(ACTION_KINDS, dtype=object)
    n = len(cheap_rows)
    prices = CostModel().call_prices
    unknown = np.full(n, np.nan)
    return ReplayFrame(
        example_ids=tuple(str(row) for row in range(n)),
        gold_kind=kinds[gold],
        proposal_kind=kinds[chosen["cheap"][1]],
        valid=np.ones(n, dtype=bool),
        proposal_kind_correct=chosen["cheap"][1] == gold,
        proposal_full_correct=unknown,
        strong_kind_correct=chosen["strong"][1] == gold,
        strong_full_correct=unknown,
        scores={"verifier": chosen["cheap"][0]},
        cheap_cost=np.full(n, float(prices["cheap"])),
        score_cost={"verifier": np.zeros(n)},
        strong_cost=np.full(n, float(prices["strong"])),
        cheap_tokens=np.zeros(n),
        position=np.arange(n),
        weak_kind_accuracy=float((chosen["cheap"][1] == gold).mean()),
        weak_full_accuracy=None,
    )


def calibrate_escalation(frame: ReplayFrame, *, max_accuracy_drop: float, min_support: int = 20) -> Calibration:
    """Pick D's global and per-kind thresholds of the kind probability on an `escalation_frame`.

    They are the cheapest that keep D's kind accuracy within `max_accuracy_drop` of the strong
    head's. A kind gets its own threshold when the cheap head chose it at least `min_support` times.
    """
    floor = max(0.0, float(frame.strong_kind_correct.mean()) - max_accuracy_drop)
    return calibrate(frame, CalibrationConfig(min_accuracy=floor, min_support=min_support))
