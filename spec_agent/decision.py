"""The speculation decision as plain functions, and the records it produces.

Every shell (the LangGraph nodes, the middleware and the benchmark) calls these functions, so the
rule is written once: a proposal is accepted when it parsed and its verifier score reaches the
threshold; among several accepted proposals the highest score wins; with none accepted the step
escalates to the fallback model.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from spec_agent.actions import Action
from spec_agent.cost import ModelCall
from spec_agent.errors import ConfigError

logger = logging.getLogger(__name__)

Verdict = Literal["ACCEPT", "REJECT"]
DecisionKind = Literal["accept", "escalate", "direct", "unverified"]
"""`accept`: a verified proposal was used; `escalate`: the fallback acted after rejection;
`direct`: no proposer ran (configuration A); `unverified`: the proposal was used without a verifier."""


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """One action produced by a model, with its raw text and the model's own confidence."""

    text: str
    """Raw generated text."""
    action: Action | None
    """Parsed action, or None when the text did not parse (an invalid proposal)."""
    error: str | None = None
    """Why parsing failed, when it did."""
    confidence: float | None = None
    """Geometric mean probability of the generated tokens, in [0, 1], when known."""
    kind_probability: float | None = None
    """Probability the proposer gave the kind it chose, among the kinds it chose from, when known."""

    @property
    def valid(self) -> bool:
        """True when the text parsed into an action."""
        return self.action is not None

    def to_dict(self) -> dict[str, Any]:
        """Return the proposal as a JSON-compatible dict."""
        return {
            "text": self.text,
            "action": self.action.to_dict() if self.action else None,
            "error": self.error,
            "confidence": self.confidence,
            "kind_probability": self.kind_probability,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proposal:
        """Build a proposal from `to_dict` output."""
        action = Action.from_dict(data["action"]) if data.get("action") else None
        return cls(
            text=data.get("text", ""),
            action=action,
            error=data.get("error"),
            confidence=data.get("confidence"),
            kind_probability=data.get("kind_probability"),
        )


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome of one speculation step: proposals, verdicts, the chosen action and its cost."""

    decision: DecisionKind
    """How the final action was reached."""
    proposals: tuple[Proposal, ...] = ()
    """Proposals of the cheap model, in sampling order."""
    scores: tuple[float | None, ...] = ()
    """Verifier score per proposal (probability of ACCEPT); None where not scored."""
    verdicts: tuple[Verdict, ...] = ()
    """Verdict per proposal."""
    chosen: int | None = None
    """Index of the accepted proposal, when one was used."""
    fallback: Proposal | None = None
    """Action of the fallback model, when it ran."""
    threshold: float | None = None
    """Score at or above which a proposal is accepted."""
    calls: tuple[ModelCall, ...] = ()
    """Every model call made for this step, fallbacks included."""
    cost: Decimal = Decimal(0)
    """Per-call cost, relative to one strong-model call."""
    flops: float = 0.0
    """Token cost: estimated forward-pass FLOPs of all calls."""
    latency_s: float = 0.0
    """Wall time of the step in seconds."""

    @cached_property
    def proposal_dicts(self) -> list[dict[str, Any]]:
        """The proposals as JSON-compatible dicts, built once: message metadata and trace rows share them."""
        return [proposal.to_dict() for proposal in self.proposals]

    @cached_property
    def call_dicts(self) -> list[dict[str, object]]:
        """The model calls as JSON-compatible dicts, built once like `proposal_dicts`."""
        return [call.to_dict() for call in self.calls]

    @property
    def final(self) -> Proposal | None:
        """The proposal whose action the agent takes."""
        if self.fallback is not None:
            return self.fallback
        if self.chosen is not None:
            return self.proposals[self.chosen]
        return None

    @property
    def action(self) -> Action | None:
        """The action the agent takes, or None when the chosen output did not parse."""
        final = self.final
        return final.action if final else None


def check_threshold(threshold: float) -> float:
    """Return `threshold` after checking that it lies in [0, 1].

    Raises:
        ConfigError: The threshold is outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"Invalid threshold {threshold!r}; expected a probability in [0, 1].")
    return threshold


def verdict(proposal: Proposal, score: float | None, threshold: float) -> Verdict:
    """Return ACCEPT for a parsed proposal whose score reaches the threshold, else REJECT.

    An unparsed proposal, a missing score (a verifier that failed) and a score that is not a
    probability in [0, 1] (NaN, out of range, not a number) are rejected: the decision fails closed.
    """
    if not proposal.valid or score is None:
        return "REJECT"
    if not is_probability(score):
        logger.warning("Verifier score %r is not a probability in [0, 1]; rejecting the proposal",
                       score)
        return "REJECT"
    return "ACCEPT" if score >= threshold else "REJECT"


def threshold_for(proposal: Proposal, default: float, by_kind: Mapping[str, float]) -> float:
    """Return the threshold of a proposal's action kind: `by_kind`'s entry, else `default`."""
    kind = proposal.action.kind if proposal.action is not None else None
    return by_kind.get(kind, default) if kind else default


def is_probability(value: Any) -> bool:
    """Return True for a real number in [0, 1]; False for NaN, other numbers and non-numbers."""
    return isinstance(value, numbers.Real) and math.isfinite(value) and 0.0 <= value <= 1.0


def pick(scores: tuple[float | None, ...], verdicts: tuple[Verdict, ...]) -> int | None:
    """Return the index of the accepted proposal with the highest score, or None to escalate.

    Ties go to the earlier proposal.
    """
    best: int | None = None
    for index, (score, current) in enumerate(zip(scores, verdicts, strict=True)):
        if current != "ACCEPT" or score is None:
            continue
        if best is None or score > (scores[best] or 0.0):
            best = index
    return best


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """Verdicts for a set of scored proposals and the index chosen, if any."""

    verdicts: tuple[Verdict, ...]
    chosen: int | None
    escalate: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "escalate", self.chosen is None)


def decide(
    proposals: tuple[Proposal, ...], scores: tuple[float | None, ...], threshold: float
) -> Outcome:
    """Apply the verdict to every proposal and pick the one to use.

    Args:
        proposals: The cheap model's proposals.
        scores: Verifier score per proposal, None where scoring failed.
        threshold: Acceptance threshold in [0, 1].
    """
    if len(proposals) != len(scores):
        raise ConfigError(f"Got {len(scores)} scores for {len(proposals)} proposals; they must match.")
    verdicts = tuple(
        verdict(proposal, score, threshold) for proposal, score in zip(proposals, scores, strict=True)
    )
    return Outcome(verdicts=verdicts, chosen=pick(scores, verdicts))
