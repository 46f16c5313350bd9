"""Counterfactual replay of a stored run: what other thresholds or verifiers would have scored and cost.

The benchmark stores every configuration's decision for every example, so a run contains everything
a different acceptance rule needs, and replay calls no model. For each example it joins:

- the greedy cheap proposal and whether it is right. B used that proposal unverified, so B's row
  gives its kind and full correctness. Configurations C and D score the same proposal (the runner
  shares the cheap call between configurations), so without B the proposal comes from D's row:
  its kind correctness is the proposal's kind against the gold kind, and its full correctness is
  known only where D accepted it (D's `full_correct` is then the proposal's); elsewhere it is
  unknown (NaN) and left out of full accuracy, with the count reported.
- the strong model's action and whether it is right, from A's row. A fallback is the same strong
  call, so an escalated example scores as A did.
- the scores of the proposal: `verifier` (D's stored verifier score), `judge` (C's stored strong
  judge score), `confidence` (the proposal's own token confidence, stored with the proposal) and
  `kind` (the proposer's probability of the proposal's kind, stored with it too).
- prices under the per-call model: the cheap calls of the proposal's row, the calls that produced
  the chosen score (D's verifier calls, C's judge calls, nothing for confidence or kind) and, on
  escalation, A's strong calls.

A setting accepts an example when the proposal parsed and its score (a missing score rejects)
reaches the threshold for the proposal's kind (`by_kind`, else the default `threshold`). An
accepted example takes the proposal's correctness, a rejected one A's, and pays the strong calls
on top of the cheap and scoring calls. Configuration E (three sampled proposals) cannot be
replayed: the correctness of its unchosen samples is not stored.

Every setting is evaluated at once as a (settings x examples) numpy array, so a 100-threshold grid
over 10,000 examples takes milliseconds once the rows are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from spec_agent.cost import CostModel
from spec_agent.db.store import DecisionRow, TraceStore
from spec_agent.errors import ConfigError
from spec_agent.escalation import EscalationTarget

ScoreSource = Literal["verifier", "judge", "confidence", "kind"]
SCORE_SOURCES: tuple[str, ...] = ("verifier", "judge", "confidence", "kind")
_SCORE_CONFIG = {"verifier": "D", "judge": "C"}
"""Configuration whose stored scores (and scoring calls) each score source reads."""


@dataclass(frozen=True, kw_only=True)
class ReplaySetting:
    """One acceptance rule to replay."""

    threshold: float
    """Score at or above which a proposal is accepted, in [0, 1] (above 1 rejects everything)."""
    by_kind: Mapping[str, float] = field(default_factory=dict)
    """Thresholds for proposals of these action kinds, replacing `threshold` for them."""
    score: ScoreSource = "verifier"
    """Stored score to compare with the threshold."""
    name: str = ""
    """Label in tables; empty means the threshold itself."""

    def label(self) -> str:
        """Return the name, or a description built from the thresholds."""
        if self.name:
            return self.name
        kinds = ", ".join(f"{kind}={value:g}" for kind, value in sorted(self.by_kind.items()))
        return f"{self.score}>={self.threshold:g}" + (f" ({kinds})" if kinds else "")


@dataclass(frozen=True, kw_only=True)
class ReplayFrame:
    """Per-example arrays of one run, joined across configurations (see the module docstring)."""

    example_ids: tuple[str, ...]
    gold_kind: np.ndarray
    proposal_kind: np.ndarray
    """Kind of the proposal's action, "" when it did not parse."""
    valid: np.ndarray
    proposal_kind_correct: np.ndarray
    proposal_full_correct: np.ndarray
    """1.0 or 0.0, NaN where unknown."""
    strong_kind_correct: np.ndarray
    strong_full_correct: np.ndarray
    scores: dict[str, np.ndarray]
    """Score per source, NaN where none is stored; only sources the run has."""
    cheap_cost: np.ndarray
    score_cost: dict[str, np.ndarray]
    strong_cost: np.ndarray
    cheap_tokens: np.ndarray
    """Prompt plus completion tokens of the proposal's cheap calls."""
    position: np.ndarray
    """Order in which the run reached each example (0 first), from the order its rows were stored."""
    weak_kind_accuracy: float | None
    """Configuration B's kind accuracy, None without B."""
    weak_full_accuracy: float | None

    @property
    def n(self) -> int:
        """Number of examples."""
        return len(self.example_ids)

    def subset(self, mask: np.ndarray) -> ReplayFrame:
        """Return the frame restricted to the examples where `mask` is True."""
        def pick(values: np.ndarray) -> np.ndarray:
            return values[mask]

        return replace(
            self,
            example_ids=tuple(np.asarray(self.example_ids, dtype=object)[mask]),
            gold_kind=pick(self.gold_kind),
            proposal_kind=pick(self.proposal_kind),
            valid=pick(self.valid),
            proposal_kind_correct=pick(self.proposal_kind_correct),
            proposal_full_correct=pick(self.proposal_full_correct),
            strong_kind_correct=pick(self.strong_kind_correct),
            strong_full_correct=pick(self.strong_full_correct),
            scores={name: pick(values) for name, values in self.scores.items()},
            cheap_cost=pick(self.cheap_cost),
            score_cost={name: pick(values) for name, values in self.score_cost.items()},
            strong_cost=pick(self.strong_cost),
            cheap_tokens=pick(self.cheap_tokens),
            position=pick(self.position),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[DecisionRow], *, cost_model: CostModel | None = None) -> ReplayFrame:
        """Join the rows of one run by example.

        Args:
            rows: Decision rows of one run; A is required, and B or D for the proposal.
            cost_model: Call prices; `CostModel()` defaults when None.

        Raises:
            ConfigError: A is missing, or neither B nor D is.
        """
        by_config: dict[str, dict[str, DecisionRow]] = {}
        reached: dict[str, int] = {}
        for row in rows:
            by_config.setdefault(row.config, {})[row.example_id] = row
            reached.setdefault(row.example_id, len(reached))
        _require(by_config)
        prices = (cost_model or CostModel()).call_prices
        source = by_config.get("B") or by_config["D"]
        ids = tuple(sorted(set(by_config["A"]) & set(source)))
        columns = [
            {**_example_columns(by_config, example_id, prices), "position": reached[example_id]}
            for example_id in ids
        ]
        return cls._from_columns(ids, columns, by_config)

    @classmethod
    def _from_columns(
        cls, ids: tuple[str, ...], columns: list[dict[str, Any]], by_config: Mapping[str, Any]
    ) -> ReplayFrame:
        def array(key: str, dtype: Any = float) -> np.ndarray:
            return np.asarray([column[key] for column in columns], dtype=dtype)

        sources = [
            name for name in SCORE_SOURCES if name not in _SCORE_CONFIG or _SCORE_CONFIG[name] in by_config
        ]
        weak = list(by_config.get("B", {}).values())
        return cls(
            example_ids=ids,
            gold_kind=array("gold_kind", object),
            proposal_kind=array("proposal_kind", object),
            valid=array("valid", bool),
            proposal_kind_correct=array("proposal_kind_correct", bool),
            proposal_full_correct=array("proposal_full_correct"),
            strong_kind_correct=array("strong_kind_correct", bool),
            strong_full_correct=array("strong_full_correct", bool),
            scores={name: array(f"score_{name}") for name in sources},
            cheap_cost=array("cheap_cost"),
            score_cost={name: array(f"score_cost_{name}") for name in sources},
            strong_cost=array("strong_cost"),
            cheap_tokens=array("cheap_tokens"),
            position=array("position", int),
            weak_kind_accuracy=_mean([row.kind_correct for row in weak]),
            weak_full_accuracy=_mean([row.full_correct for row in weak]),
        )


def load_frame(store: TraceStore, run_id: str, *, cost_model: CostModel | None = None) -> ReplayFrame:
    """Read a run's rows from the store and join them into a replay frame.

    A store with `lean_decisions` (`SqlTraceStore`) is read from its normalised tables, which
    skips the JSON columns; any other `TraceStore` through `decisions`.
    """
    lean = getattr(store, "lean_decisions", None)
    rows = lean(run_id) if lean is not None else store.decisions(run_id)
    return ReplayFrame.from_rows(rows, cost_model=cost_model)


def _require(by_config: Mapping[str, Any]) -> None:
    present = sorted(by_config)
    if "A" not in by_config:
        raise ConfigError(
            f"Replay needs configuration A's rows for the strong model's actions; the run has "
            f"{present}. Run the benchmark with A included."
        )
    if "B" not in by_config and "D" not in by_config:
        raise ConfigError(
            f"Replay needs configuration B or D for the cheap proposal; the run has {present}."
        )


def _example_columns(
    by_config: Mapping[str, Mapping[str, DecisionRow]], example_id: str, prices: Mapping[str, Any]
) -> dict[str, Any]:
    strong = by_config["A"][example_id]
    proposal_row = (by_config.get("B") or by_config["D"])[example_id]
    proposal = proposal_row.proposals[0] if proposal_row.proposals else {}
    action = proposal.get("action")
    kind = action.get("kind", "") if action else ""
    columns = {
        "gold_kind": strong.gold_kind,
        "proposal_kind": kind,
        "valid": action is not None,
        "proposal_kind_correct": bool(action) and kind == strong.gold_kind,
        "proposal_full_correct": _proposal_full(proposal_row),
        "strong_kind_correct": strong.kind_correct,
        "strong_full_correct": strong.full_correct,
        "cheap_cost": _price(proposal_row, ("cheap",), prices),
        "strong_cost": _price(strong, ("strong",), prices),
        "cheap_tokens": _tokens(proposal_row, "cheap"),
        "score_confidence": _number(proposal.get("confidence")),
        "score_cost_confidence": 0.0,
        "score_kind": _number(proposal.get("kind_probability")),
        "score_cost_kind": 0.0,
    }
    for name, config in _SCORE_CONFIG.items():
        row = by_config.get(config, {}).get(example_id)
        columns[f"score_{name}"] = _number(row.scores[0]) if row and row.scores else math.nan
        roles = ("verifier",) if name == "verifier" else ("judge",)
        columns[f"score_cost_{name}"] = _price(row, roles, prices) if row else 0.0
    return columns


def _proposal_full(row: DecisionRow) -> float:
    if row.config == "B" or row.decision == "accept":
        return float(row.full_correct)
    return math.nan


def _price(row: DecisionRow, roles: Sequence[str], prices: Mapping[str, Any]) -> float:
    return float(sum(prices.get(call["role"], 0) for call in row.calls if call["role"] in roles))


def _tokens(row: DecisionRow, role: str) -> int:
    counts = row.tokens_by_role.get(role, {})
    return int(counts.get("prompt", 0)) + int(counts.get("completion", 0))


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mean(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True, kw_only=True)
class ReplaySweep:
    """Counterfactual metrics of several settings, one array entry per setting."""

    settings: tuple[ReplaySetting, ...]
    n: int
    kind_accuracy: np.ndarray
    full_accuracy: np.ndarray
    """Over examples whose outcome is known."""
    full_unknown: np.ndarray
    """Examples whose full correctness is unknown (accepted proposals with no B row)."""
    cost: np.ndarray
    """Mean per-call cost per example, strong call = 1."""
    accept_rate: np.ndarray
    escalation_rate: np.ndarray
    """Share of examples sent to the strong model, which is also the share of strong calls."""
    false_accept_rate: np.ndarray
    """Accepted proposals that are not fully correct, divided by accepted ones (NaN for none)."""
    false_reject_rate: np.ndarray
    """Rejected proposals that are fully correct, divided by rejected ones (NaN for none)."""
    wasted_tokens: np.ndarray
    """Mean cheap tokens per example spent on proposals that were rejected."""
    wasted_cost: np.ndarray
    """Mean per-call cost per example of cheap and scoring calls on rejected proposals."""
    accepted: np.ndarray
    """(settings x examples) True where the setting accepts the proposal, for paired comparisons."""

    def rows(self) -> list[dict[str, Any]]:
        """Return one JSON-compatible dict per setting (NaN becomes None)."""
        keys = (
            "kind_accuracy", "full_accuracy", "full_unknown", "cost", "accept_rate",
            "escalation_rate", "false_accept_rate", "false_reject_rate", "wasted_tokens",
            "wasted_cost",
        )
        rows = []
        for index, setting in enumerate(self.settings):
            row: dict[str, Any] = {
                "setting": setting.label(),
                "score": setting.score,
                "threshold": setting.threshold,
                "by_kind": dict(setting.by_kind),
                "n": self.n,
            }
            for key in keys:
                value = float(getattr(self, key)[index])
                row[key] = None if math.isnan(value) else value
            rows.append(row)
        return rows


def replay(frame: ReplayFrame, settings: Sequence[ReplaySetting]) -> ReplaySweep:
    """Evaluate every setting on the frame's examples without calling a model.

    Raises:
        ConfigError: A setting reads a score the run did not store, or no setting is given.
    """
    if not settings:
        raise ConfigError("Pass at least one replay setting.")
    if frame.n == 0:
        raise ConfigError("The run has no example with both A's and the proposal's rows to replay.")
    accepted = np.empty((len(settings), frame.n), dtype=bool)
    base_cost = np.empty((len(settings), frame.n))
    for source in {setting.score for setting in settings}:
        rows = [index for index, setting in enumerate(settings) if setting.score == source]
        scores = _scores(frame, source)
        thresholds = threshold_matrix(frame, [settings[index] for index in rows])
        with np.errstate(invalid="ignore"):
            accepted[rows] = frame.valid & (scores >= thresholds)
        base_cost[rows] = frame.cheap_cost + frame.score_cost[source]
    return _summarise(frame, tuple(settings), accepted, base_cost)


def replay_target(
    frame: ReplayFrame,
    setting: ReplaySetting,
    target: EscalationTarget,
    *,
    order: Sequence[int] | None = None,
) -> ReplaySweep:
    """Replay one setting whose thresholds an escalation target moves, step by step.

    The examples pass through `target` one at a time, in the order the run reached them. Pass
    `order` (indices into the frame) to ask what another order of the same traffic would have
    done. The target must be fresh, and this call uses it up. Each step reads the target's offset, decides as the
    speculation graph does, and records its margin.

    Raises:
        ConfigError: The setting reads a score the run did not store, or `order` is not a
            permutation of the frame's examples.
    """
    if frame.n == 0:
        raise ConfigError("The run has no example with both A's and the proposal's rows to replay.")
    walk = np.argsort(frame.position, kind="stable") if order is None else np.asarray(order)
    if sorted(walk.tolist()) != list(range(frame.n)):
        raise ConfigError(f"order must list each of the frame's {frame.n} example indices once.")
    scores = _scores(frame, setting.score)
    thresholds = threshold_matrix(frame, [setting])[0]
    with np.errstate(invalid="ignore"):
        scored = frame.valid & (scores >= 0.0) & (scores <= 1.0)
    margins = np.where(scored, scores - thresholds, -np.inf)
    accepted = np.zeros(frame.n, dtype=bool)
    for index in walk:
        accepted[index] = scored[index] and scores[index] >= thresholds[index] + target.offset()
        target.record(float(margins[index]), escalated=not accepted[index])
    named = replace(setting, name=f"{setting.label()}, escalation target {target.rate:.3f}")
    base_cost = frame.cheap_cost + frame.score_cost[setting.score]
    return _summarise(frame, (named,), accepted[None, :], base_cost[None, :])


def _scores(frame: ReplayFrame, source: str) -> np.ndarray:
    if source not in frame.scores:
        config = _SCORE_CONFIG.get(source, "?")
        raise ConfigError(
            f"The run stores no {source!r} scores (they come from configuration {config}); "
            f"choose from {sorted(frame.scores)}."
        )
    return frame.scores[source]


def threshold_matrix(frame: ReplayFrame, settings: Sequence[ReplaySetting]) -> np.ndarray:
    """Return the (settings x examples) thresholds, per-kind values replacing the default."""
    matrix = np.empty((len(settings), frame.n))
    matrix[:] = np.asarray([setting.threshold for setting in settings])[:, None]
    for index, setting in enumerate(settings):
        for kind, value in setting.by_kind.items():
            matrix[index, frame.proposal_kind == kind] = value
    return matrix


def _summarise(
    frame: ReplayFrame, settings: tuple[ReplaySetting, ...], accepted: np.ndarray, base_cost: np.ndarray
) -> ReplaySweep:
    rejected = ~accepted
    kind = np.where(accepted, frame.proposal_kind_correct, frame.strong_kind_correct)
    full = np.where(accepted, frame.proposal_full_correct, frame.strong_full_correct.astype(float))
    known = ~np.isnan(full)
    proposal_full = np.nan_to_num(frame.proposal_full_correct, nan=0.0)
    proposal_known = ~np.isnan(frame.proposal_full_correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        full_accuracy = np.nansum(full, axis=1) / known.sum(axis=1)
        false_accept = (accepted & proposal_known & (proposal_full == 0)).sum(axis=1) / (
            accepted & proposal_known
        ).sum(axis=1)
        false_reject = (rejected & proposal_known & (proposal_full == 1)).sum(axis=1) / (
            rejected & proposal_known
        ).sum(axis=1)
    return ReplaySweep(
        settings=settings,
        n=frame.n,
        kind_accuracy=kind.mean(axis=1),
        full_accuracy=full_accuracy,
        full_unknown=(~known).sum(axis=1),
        cost=(base_cost + rejected * frame.strong_cost).mean(axis=1),
        accept_rate=accepted.mean(axis=1),
        escalation_rate=rejected.mean(axis=1),
        false_accept_rate=false_accept,
        false_reject_rate=false_reject,
        wasted_tokens=(rejected * frame.cheap_tokens).mean(axis=1),
        wasted_cost=(rejected * base_cost).mean(axis=1),
        accepted=accepted,
    )


def threshold_grid(points: int = 101) -> list[float]:
    """Return `points` evenly spaced thresholds from 0 to 1, both included."""
    if points < 2:
        raise ConfigError(f"A threshold grid needs at least 2 points, got {points}.")
    return [float(value) for value in np.linspace(0.0, 1.0, points)]


def sweep(
    frame: ReplayFrame,
    thresholds: Sequence[float],
    *,
    score: ScoreSource = "verifier",
    by_kind: Mapping[str, float] | None = None,
) -> ReplaySweep:
    """Replay one score source over a grid of default thresholds."""
    settings = [
        ReplaySetting(threshold=float(value), by_kind=dict(by_kind or {}), score=score)
        for value in thresholds
    ]
    return replay(frame, settings)
