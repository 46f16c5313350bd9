"""Escalation targets: hold the share of escalated steps near a chosen rate without reading labels.

A fixed threshold decides which scores pass, so the share of steps it escalates follows the
traffic. The shipped kind thresholds escalate 26% of held-out train-split steps and 37% of eval
steps. With one cheap call per step, and the strong call on escalation, a cost target is an
escalation rate, and `EscalationTarget` keeps a graph at one. Each step's margin is the best
proposal's score minus its threshold (minus infinity when nothing could be scored). Every
threshold moves by one shared offset, the margin below which the target share of recent steps
fell. The ordering of proposals by their thresholds stays the same; only the cut moves.

The target reads scores only, never whether a proposal was right, so it runs on live traffic. It
needs traffic that mixes: on a stream sorted by source it follows each source in turn, which is
why the benchmark runs its conversations in a seeded random order.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Sequence

from spec_agent.cost import CostModel
from spec_agent.decision import Proposal, is_probability
from spec_agent.errors import ConfigError


class EscalationTarget:
    """Moves a speculation graph's thresholds so that about `rate` of its steps escalate.

    Until `warmup` steps are seen the thresholds stay as configured. After that the offset is
    the `level` quantile of the last `window` margins, where `level` is the rate corrected by the
    steps escalated so far. Each escalation beyond what the rate allows so far lowers the level
    by 1/`horizon`, and each one short of it raises the level as much, so the realised rate comes
    back to the target instead of drifting.

    One target belongs to one graph: two graphs sharing it would mix their margins. Concurrent
    steps of one graph may read the same offset, which moves the realised rate by a step or two.

    NOTE: a verify node that LangGraph retries records its step once per attempt, so retries count
    toward the rate as extra steps.

    Args:
        rate: Share of steps to escalate, in [0, 1].
        warmup: Steps to see before the offset moves.
        window: Most recent margins the quantile is taken over.
        horizon: Steps over which a surplus or shortfall of escalations is made up.

    Raises:
        ConfigError: A value is out of range.
    """

    def __init__(self, *, rate: float, warmup: int = 20, window: int = 1000, horizon: int = 50) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"Escalation rate {rate!r} is not in [0, 1]; pass a share such as 0.25.")
        for name, value in (("warmup", warmup), ("window", window), ("horizon", horizon)):
            if value < 1:
                raise ConfigError(f"EscalationTarget {name} must be at least 1, got {value}.")
        if window < warmup:
            raise ConfigError(f"EscalationTarget window ({window}) must be at least warmup ({warmup}).")
        self.rate = rate
        self.warmup = warmup
        self.window = window
        self.horizon = horizon
        self.steps = 0
        """Steps recorded so far."""
        self.escalated = 0
        """Steps among them that escalated."""
        self._recent: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._lock = threading.Lock()

    def offset(self) -> float:
        """Return the shift to add to every threshold for the next step, 0.0 during warm-up.

        The shift can be infinite: minus infinity accepts every scored proposal and plus
        infinity rejects them all.
        """
        with self._lock:
            if len(self._sorted) < self.warmup:
                return 0.0
            level = self.rate + (self.rate * self.steps - self.escalated) / self.horizon
            below = math.ceil(min(max(level, 0.0), 1.0) * len(self._sorted))
            return self._sorted[below] if below < len(self._sorted) else math.inf

    def record(self, margin: float, *, escalated: bool) -> None:
        """Remember one step: its best margin and whether it escalated.

        Args:
            margin: Best proposal score minus that proposal's own threshold, before the offset.
                Minus infinity when no proposal could be scored.
            escalated: True when the fallback model acted.
        """
        if math.isnan(margin):
            margin = -math.inf
        with self._lock:
            if len(self._recent) == self.window:
                oldest = self._recent.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, oldest)]
            self._recent.append(margin)
            bisect.insort(self._sorted, margin)
            self.steps += 1
            self.escalated += int(escalated)

    @property
    def realised_rate(self) -> float | None:
        """Share of recorded steps that escalated, or None before the first step."""
        return self.escalated / self.steps if self.steps else None


def step_margin(
    proposals: Sequence[Proposal], scores: Sequence[float | None], thresholds: Sequence[float]
) -> float:
    """Return the best margin of a step: the highest score minus its proposal's own threshold.

    A proposal that did not parse has no margin, and neither has a score that is missing or is
    not a probability: no offset would accept them. A step with no margin returns minus infinity.
    """
    margins = [
        score - threshold
        for proposal, score, threshold in zip(proposals, scores, thresholds, strict=True)
        if proposal.valid and score is not None and is_probability(score)
    ]
    return max(margins, default=-math.inf)


def rate_for_cost(
    max_cost: float, *, cost_model: CostModel, n_proposals: int = 1, verifier_calls: int = 0
) -> float:
    """Return the escalation rate at which a speculative step costs `max_cost` on average.

    A step pays `n_proposals` cheap calls and `verifier_calls` verifier calls per proposal, and
    one strong call when it escalates, all at the cost model's per-call prices.

    Args:
        max_cost: Target mean cost of a step, relative to one strong call (0.40 is 40% of A).
        cost_model: Prices of the calls.
        n_proposals: Cheap proposals per step.
        verifier_calls: Verifier calls per proposal (0 for a score the proposer reports itself).

    Raises:
        ConfigError: `max_cost` does not cover the cheap and verifier calls alone.
    """
    prices = {role: float(cost_model.call_prices.get(role, 0)) for role in ("cheap", "verifier", "strong")}
    if prices["strong"] <= 0.0:
        raise ConfigError("The cost model gives the strong model no price, so no cost target limits "
                          "escalation; price the strong role in call_prices.")
    fixed = n_proposals * (prices["cheap"] + verifier_calls * prices["verifier"])
    rate = (max_cost - fixed) / prices["strong"]
    if rate < 0.0:
        raise ConfigError(
            f"A cost of {max_cost!r} per step is below the {fixed:.3f} that proposing and "
            "verifying cost before any escalation; raise the cost target."
        )
    return min(rate, 1.0)
