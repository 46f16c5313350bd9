"""Threshold calibration: choose acceptance thresholds on a stored calibration run, without models.

A calibration run is an ordinary benchmark run (A, B, C and D at least) on held-out examples. Its
replay gives accuracy, cost and escalation for every candidate threshold, and the rule picks one:

- escalation budget (`max_escalation`): among thresholds whose escalation rate stays within the
  budget, the most accurate; ties go to the cheaper, then to the higher threshold.
- accuracy floor (`min_accuracy`): among thresholds whose accuracy reaches the floor, the cheapest;
  ties go to the more accurate, then to the higher threshold.

When no threshold meets the target, the closest one is kept (least escalation, or most accuracy)
and the result says the target was missed.

Per-kind thresholds are chosen together, for kinds with enough support, against the same target
over all examples: rarer kinds and unparsed proposals keep the global threshold. Holding each kind
to the target on its own would escalate every proposal of a kind the cheap model often gets wrong,
however cheap its right proposals are to recognise. The joint choice prices the constrained
resource (cost under a floor, escalations under a budget) at a price in correct examples, lets each
kind take its best threshold at that price, and keeps the best combination over a grid of prices
that meets the target. Each price's combination is optimal for its own cost or escalation, but the
grid reaches only combinations on the convex hull of the trade-off, so the single global threshold
for every kind is compared too and kept when the per-kind choice does no better.

The result is written as `thresholds.json`: `{"judge": t, "verifier": t, "by_kind": {kind: t}}`.
`by_kind` applies to the verifier score (configurations D and E). `load_thresholds` reads it back
for `speculative_node` and the benchmark.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from spec_agent.actions import ACTION_KINDS
from spec_agent.db.replay import ReplayFrame, ReplaySweep, ScoreSource, sweep
from spec_agent.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: dict[str, Any] = {"judge": 0.5, "verifier": 0.5, "by_kind": {}}
"""Thresholds used where a file sets none: the benchmark's defaults."""
_SCORE_QUANTILES = 200
"""Observed-score quantiles added to the even grid, so that a threshold can sit on a boundary."""
_PRICES = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 241)])
"""Prices of a unit of cost or of one escalation, in correct examples, tried by the joint per-kind choice."""


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """What calibration optimises and over which thresholds."""

    max_escalation: float | None = None
    """Highest acceptable share of examples sent to the strong model, in [0, 1]."""
    min_accuracy: float | None = None
    """Lowest acceptable accuracy, in [0, 1]."""
    accuracy: Literal["kind", "full"] = "kind"
    """Accuracy that the floor and the tie-breaks use: the action kind, or the full action."""
    grid_points: int = 101
    """Evenly spaced thresholds from 0 to 1 to try, on top of observed-score quantiles."""
    min_support: int = 20
    """Examples a proposal kind needs for its own threshold; rarer kinds use the global one."""
    per_kind: bool = True
    """Calibrate per-kind verifier thresholds as well."""

    def __post_init__(self) -> None:
        if (self.max_escalation is None) == (self.min_accuracy is None):
            raise ConfigError(
                "Set exactly one calibration target: max_escalation (an escalation budget) or "
                f"min_accuracy (an accuracy floor); got {self.max_escalation!r} and {self.min_accuracy!r}."
            )
        for name in ("max_escalation", "min_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value!r}.")
        if self.accuracy not in ("kind", "full"):
            raise ConfigError(f"accuracy must be 'kind' or 'full', got {self.accuracy!r}.")
        if self.grid_points < 2:
            raise ConfigError(f"grid_points must be >= 2, got {self.grid_points}.")


@dataclass(frozen=True, kw_only=True)
class ThresholdChoice:
    """The threshold picked for one score source (and kind), with its replayed metrics."""

    score: str
    threshold: float
    met: bool
    """False when no threshold reached the target and the closest one was kept."""
    n: int
    accuracy: float
    cost: float
    escalation_rate: float
    kind: str | None = None
    """Proposal kind for a per-kind threshold, None for the global one."""


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Every threshold chosen, and the thresholds.json content they make."""

    choices: tuple[ThresholdChoice, ...]
    thresholds: dict[str, Any] = field(default_factory=dict)
    combined: ThresholdChoice | None = None
    """Result of the global and per-kind verifier thresholds together over all examples.

    None when no kind has per-kind support or per-kind calibration is off."""


def candidate_thresholds(scores: np.ndarray, grid_points: int) -> np.ndarray:
    """Return sorted unique thresholds: an even grid on [0, 1] plus observed-score quantiles."""
    grid = np.linspace(0.0, 1.0, grid_points)
    observed = scores[~np.isnan(scores)]
    if observed.size:
        quantiles = np.quantile(observed, np.linspace(0.0, 1.0, _SCORE_QUANTILES))
        grid = np.concatenate([grid, np.clip(quantiles, 0.0, 1.0)])
    return np.unique(grid)


def choose(result: ReplaySweep, config: CalibrationConfig) -> tuple[int, bool]:
    """Return the index of the setting the target picks, and whether it met the target."""
    accuracy = result.kind_accuracy if config.accuracy == "kind" else result.full_accuracy
    accuracy = np.nan_to_num(accuracy, nan=-1.0)
    thresholds = np.asarray([setting.threshold for setting in result.settings])
    if config.max_escalation is not None:
        feasible = result.escalation_rate <= config.max_escalation + 1e-12
        # Sort keys, last one primary: accuracy up, then cost down, then threshold up.
        order = np.lexsort((thresholds, -result.cost, accuracy))
        fallback = int(np.lexsort((-thresholds, result.escalation_rate))[0])
    else:
        feasible = accuracy >= config.min_accuracy - 1e-12
        order = np.lexsort((thresholds, accuracy, -result.cost))
        fallback = int(np.lexsort((thresholds, accuracy))[-1])
    ranked = [int(index) for index in order[::-1] if feasible[index]]
    return (ranked[0], True) if ranked else (fallback, False)


def calibrate_score(
    frame: ReplayFrame, score: ScoreSource, config: CalibrationConfig, *, kind: str | None = None
) -> ThresholdChoice:
    """Pick the threshold of one score source on the frame's examples."""
    result = sweep(frame, candidate_thresholds(frame.scores[score], config.grid_points), score=score)
    index, met = choose(result, config)
    accuracy = result.kind_accuracy if config.accuracy == "kind" else result.full_accuracy
    return ThresholdChoice(
        score=score,
        threshold=round(float(result.settings[index].threshold), 6),
        met=met,
        n=frame.n,
        accuracy=float(accuracy[index]),
        cost=float(result.cost[index]),
        escalation_rate=float(result.escalation_rate[index]),
        kind=kind,
    )


def calibrate(frame: ReplayFrame, config: CalibrationConfig) -> Calibration:
    """Pick the judge and verifier thresholds, and per-kind verifier thresholds, of a run.

    Raises:
        ConfigError: The run stores neither judge (C) nor verifier (D) scores.
    """
    sources = [score for score in ("judge", "verifier") if score in frame.scores]
    if not sources:
        raise ConfigError(
            "The calibration run has neither C's judge scores nor D's verifier scores; run the "
            "benchmark with configurations A, B, C and D on the calibration examples."
        )
    choices = [calibrate_score(frame, score, config) for score in sources]  # type: ignore[arg-type]
    for choice in choices:
        if not choice.met:
            logger.warning("No %s threshold reaches the calibration target; kept %s (escalation %.3f, "
                           "accuracy %.3f)", choice.score, choice.threshold, choice.escalation_rate, choice.accuracy)
    combined = None
    if config.per_kind and "verifier" in frame.scores:
        default = next(choice for choice in choices if choice.score == "verifier")
        per_kind, combined = _per_kind(frame, config, default)
        choices += per_kind
        if combined is not None and not combined.met:
            logger.warning("No per-kind verifier thresholds reach the calibration target; kept the closest "
                           "(escalation %.3f, accuracy %.3f)", combined.escalation_rate, combined.accuracy)
    return Calibration(choices=tuple(choices), thresholds=_thresholds(choices), combined=combined)


@dataclass(frozen=True)
class _Curve:
    """Totals over one group of examples at each candidate threshold of the verifier score."""

    thresholds: np.ndarray
    correct: np.ndarray
    """Correct examples (by kind or by full action, as calibrated)."""
    known: np.ndarray
    """Examples whose correctness is known."""
    cost: np.ndarray
    escalated: np.ndarray

    @classmethod
    def of(cls, frame: ReplayFrame, thresholds: np.ndarray, config: CalibrationConfig) -> _Curve:
        """Replay the frame at every threshold and keep the sums."""
        result = sweep(frame, thresholds, score="verifier")
        if config.accuracy == "kind":
            known = np.full(len(thresholds), float(frame.n))
            correct = result.kind_accuracy * frame.n
        else:
            known = frame.n - result.full_unknown.astype(float)
            correct = np.nan_to_num(result.full_accuracy) * known
        return cls(thresholds, correct, known, result.cost * frame.n, result.escalation_rate * frame.n)

    def best(self, price: float, *, budget: bool) -> int:
        """Return the index that maximises correct examples minus `price` per unit of cost or escalation."""
        used = self.escalated if budget else self.cost
        # Sort keys, last one primary: value up, then correct examples up, then threshold up.
        return int(np.lexsort((self.thresholds, self.correct, self.correct - price * used))[-1])


class _Combination(NamedTuple):
    """One threshold per supported kind, and what it gives over all examples."""

    accuracy: float
    cost: float
    escalation: float
    at_default: int
    """Kinds whose threshold is the global one; ties go to more of them."""
    picks: tuple[int, ...]
    """Index into each kind's curve."""


def _per_kind(
    frame: ReplayFrame, config: CalibrationConfig, default: ThresholdChoice
) -> tuple[list[ThresholdChoice], ThresholdChoice | None]:
    """Choose thresholds for the well-supported kinds together; see the module docstring."""
    kinds, counts = np.unique(frame.proposal_kind[frame.valid].astype(str), return_counts=True)
    supported = []
    for kind, count in zip(kinds, counts, strict=True):
        if count >= config.min_support:
            supported.append(str(kind))
        else:
            logger.info("Kind %s has %s proposals (< %s); it uses the global threshold", kind, count,
                        config.min_support)
    if not supported:
        return [], None
    subsets = [frame.subset(frame.valid & (frame.proposal_kind == kind)) for kind in supported]
    curves = []
    for subset in subsets:
        candidates = candidate_thresholds(subset.scores["verifier"], config.grid_points)
        curves.append(_Curve.of(subset, np.unique(np.append(candidates, default.threshold)), config))
    others = frame.subset(~(frame.valid & np.isin(frame.proposal_kind, supported)))
    others_curve = _Curve.of(others, np.asarray([default.threshold]), config) if others.n else None
    budget = config.max_escalation is not None
    at_default = tuple(int(np.flatnonzero(curve.thresholds == default.threshold)[0]) for curve in curves)
    candidates = {at_default} | {tuple(curve.best(price, budget=budget) for curve in curves) for price in _PRICES}
    combinations = [_combine(curves, picks, at_default, others_curve, frame.n) for picks in candidates]
    best, met = _pick_combination(combinations, config)
    choices = []
    for kind, subset, curve, index in zip(supported, subsets, curves, best.picks, strict=True):
        known = curve.known[index]
        choices.append(ThresholdChoice(
            score="verifier", threshold=round(float(curve.thresholds[index]), 6), met=bool(met), n=subset.n,
            accuracy=float(curve.correct[index] / known) if known else math.nan,
            cost=float(curve.cost[index] / subset.n), escalation_rate=float(curve.escalated[index] / subset.n),
            kind=kind,
        ))
    combined = ThresholdChoice(score="verifier", threshold=default.threshold, met=bool(met), n=frame.n,
                               accuracy=best.accuracy, cost=best.cost, escalation_rate=best.escalation)
    return choices, combined


def _combine(
    curves: list[_Curve], picks: tuple[int, ...], at_default: tuple[int, ...], others: _Curve | None, n: int
) -> _Combination:
    """Return accuracy, mean cost and escalation rate over all `n` examples of one combination."""
    parts = [(curve.correct[i], curve.known[i], curve.cost[i], curve.escalated[i]) for curve, i in zip(curves, picks)]
    if others is not None:
        parts.append((others.correct[0], others.known[0], others.cost[0], others.escalated[0]))
    correct, known, cost, escalated = (float(sum(values)) for values in zip(*parts, strict=True))
    # Rounded so that equal totals summed in another order still tie.
    return _Combination(
        accuracy=round(correct / known, 12) if known else math.nan,
        cost=round(cost / n, 12),
        escalation=round(escalated / n, 12),
        at_default=sum(pick == base for pick, base in zip(picks, at_default)),
        picks=picks,
    )


def _pick_combination(combinations: list[_Combination], config: CalibrationConfig) -> tuple[_Combination, bool]:
    """Apply the target's rule (module docstring) to whole combinations instead of thresholds.

    Returns the combination picked and whether it met the target, as `choose` does for thresholds.
    """
    def accuracy(item: _Combination) -> float:
        return -1.0 if math.isnan(item.accuracy) else item.accuracy

    if config.max_escalation is not None:
        feasible = [item for item in combinations if item.escalation <= config.max_escalation + 1e-12]
        if feasible:
            return max(feasible, key=lambda item: (accuracy(item), -item.cost, item.at_default)), True
        return min(combinations, key=lambda item: (item.escalation, -accuracy(item), -item.at_default)), False
    feasible = [item for item in combinations if accuracy(item) >= config.min_accuracy - 1e-12]
    if feasible:
        return min(feasible, key=lambda item: (item.cost, -accuracy(item), -item.at_default)), True
    return max(combinations, key=lambda item: (accuracy(item), -item.cost, item.at_default)), False


def _thresholds(choices: list[ThresholdChoice]) -> dict[str, Any]:
    thresholds: dict[str, Any] = {"by_kind": {}}
    for choice in choices:
        if choice.kind is None:
            thresholds[choice.score] = choice.threshold
        else:
            thresholds["by_kind"][choice.kind] = choice.threshold
    return thresholds


def write_thresholds(path: Path, thresholds: Mapping[str, Any]) -> Path:
    """Write thresholds as sorted JSON after checking them like `load_thresholds` does."""
    checked = _check(dict(thresholds), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(checked, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    return path


def load_thresholds(path: str | Path) -> dict[str, Any]:
    """Read a thresholds.json file; keys it leaves out take `DEFAULT_THRESHOLDS`.

    Returns:
        `{"judge": float, "verifier": float, "by_kind": {kind: float}}`.

    Raises:
        ConfigError: The file is missing, is not JSON, has unknown keys or kinds, or a threshold
            outside [0, 1].
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"Thresholds file {path} not found; write one with `spec-agent calibrate`.") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"Thresholds file {path} is not valid JSON: {error}.") from error
    if not isinstance(data, dict):
        raise ConfigError(f"Thresholds file {path} must hold a JSON object, got {type(data).__name__}.")
    return _check(data, source=str(path))


def _check(data: dict[str, Any], *, source: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in thresholds {source}; use judge, verifier, by_kind.")
    merged = {**DEFAULT_THRESHOLDS, **data}
    by_kind = merged["by_kind"]
    if not isinstance(by_kind, dict):
        raise ConfigError(f"by_kind in thresholds {source} must be an object of kind -> threshold.")
    bad_kinds = sorted(set(by_kind) - set(ACTION_KINDS))
    if bad_kinds:
        raise ConfigError(f"Unknown action kind(s) {bad_kinds} in thresholds {source}; use {ACTION_KINDS}.")
    values = {"judge": merged["judge"], "verifier": merged["verifier"], **by_kind}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"Threshold {name}={value!r} in {source} must be a number in [0, 1].")
    return {
        "judge": float(merged["judge"]),
        "verifier": float(merged["verifier"]),
        "by_kind": {kind: float(value) for kind, value in sorted(by_kind.items())},
    }
