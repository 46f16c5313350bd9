"""Benchmark metrics over stored decision rows, reference rows and the cost-accuracy frontier.

Every metric is a mean over the examples of one configuration, so a configuration that errored on
an example still counts that example (as stored, usually wrong). Confidence intervals are 95%
percentile bootstraps over examples with a fixed seed, so the same rows give the same intervals.

Definitions used throughout:

- accepted example: decision "accept" (a verified proposal was used) or "unverified" (B's proposal
  used without a verifier). Configuration A ("direct") has no proposer, so its acceptance,
  escalation and false-accept values are None.
- false-accept rate: accepted examples whose final action is not fully correct, divided by the
  accepted examples. The false-accept share divides the same count by all examples.
- invalid-proposal rate: proposals that did not parse, divided by all proposals of the
  configuration (every sample of E counts). None when the configuration made no proposals.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

import numpy as np

from spec_agent.actions import ACTION_KINDS
from spec_agent.cost import CostModel, ModelCall
from spec_agent.db.store import DecisionRow

CONFIGS: tuple[str, ...] = ("A", "B", "C", "D", "E")
REFERENCES: tuple[str, ...] = ("random", "majority", "oracle", "random-escalation")
RESAMPLES = 1000
CONFIDENCE = 0.95
ACCEPTED_DECISIONS = frozenset({"accept", "unverified"})

Direction = Literal["higher", "lower"]
Interval = tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """Name, direction and meaning of one reported metric."""

    key: str
    """Field name in `MetricRow` and in results.json."""
    label: str
    """Column header in the report."""
    direction: Direction
    """Whether higher or lower values are better."""
    description: str

    @property
    def arrow(self) -> str:
        """The direction as an arrow: ↑ when higher is better, ↓ when lower is better."""
        return "↑" if self.direction == "higher" else "↓"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        key="kind_accuracy",
        label="Kind acc",
        direction="higher",
        description="Share of examples whose final action has the gold action kind.",
    ),
    MetricSpec(
        key="full_accuracy",
        label="Full acc",
        direction="higher",
        description="Share of examples whose final action matches the gold action in full "
        "(tool names and arguments), as judged when the row was stored.",
    ),
    MetricSpec(
        key="cost",
        label="Cost/call model",
        direction="lower",
        description="Mean cost per example under the per-call model, relative to one strong-model "
        "call (every call charged, fallbacks included).",
    ),
    MetricSpec(
        key="flops_vs_a",
        label="FLOPs vs A",
        direction="lower",
        description="Mean estimated forward-pass FLOPs per example divided by configuration A's.",
    ),
    MetricSpec(
        key="accept_rate",
        label="Accept rate",
        direction="higher",
        description="Share of examples where a proposal was used: accepted by the verifier, or "
        "used unverified (B, always 1.0). A has no proposer.",
    ),
    MetricSpec(
        key="false_accept_rate",
        label="False-accept rate",
        direction="lower",
        description="Accepted examples whose action is not fully correct, divided by accepted "
        "examples.",
    ),
    MetricSpec(
        key="false_accept_share",
        label="False-accept share",
        direction="lower",
        description="Accepted examples whose action is not fully correct, divided by all examples.",
    ),
    MetricSpec(
        key="escalation_rate",
        label="Escalation rate",
        direction="lower",
        description="Share of examples where every proposal was rejected and the fallback model "
        "acted.",
    ),
    MetricSpec(
        key="invalid_rate",
        label="Invalid rate",
        direction="lower",
        description="Proposals that did not parse into an action, divided by all proposals.",
    ),
    MetricSpec(
        key="latency_p50",
        label="Latency p50 (s)",
        direction="lower",
        description="Median wall time of one decision in seconds.",
    ),
    MetricSpec(
        key="latency_p95",
        label="Latency p95 (s)",
        direction="lower",
        description="95th percentile of the wall time of one decision in seconds.",
    ),
    MetricSpec(
        key="on_frontier",
        label="On frontier",
        direction="higher",
        description="True when no other configuration is at most as costly and at least as "
        "accurate (kind accuracy), with one of the two strictly better.",
    ),
)
METRIC_SPECS: dict[str, MetricSpec] = {spec.key: spec for spec in METRICS}


@dataclass(frozen=True, kw_only=True)
class MetricRow:
    """Metrics of one configuration or reference row; None where a metric does not apply."""

    name: str
    """Configuration ("A" to "E") or reference name."""
    role: Literal["config", "reference"]
    n: int
    """Examples the row is computed over."""
    errors: int = 0
    """Examples stored with an error."""
    kind_accuracy: float | None = None
    kind_accuracy_ci: Interval | None = None
    full_accuracy: float | None = None
    full_accuracy_ci: Interval | None = None
    cost: float | None = None
    cost_ci: Interval | None = None
    flops: float | None = None
    """Mean estimated FLOPs per example."""
    flops_vs_a: float | None = None
    accept_rate: float | None = None
    false_accept_rate: float | None = None
    false_accept_share: float | None = None
    escalation_rate: float | None = None
    invalid_rate: float | None = None
    invalid_proposals: int = 0
    proposals: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    on_frontier: bool | None = None
    description: str = ""
    """Meaning of a reference row, empty for configurations."""

    def to_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-compatible dict (intervals as two-element lists)."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data


@dataclass(frozen=True, kw_only=True)
class KindAccuracy:
    """Kind accuracy of one configuration on the examples of one gold kind."""

    kind: str
    support: int
    """Examples with this gold kind; 0 means the kind has no support."""
    accuracy: float | None
    """None when the support is 0."""


@dataclass(frozen=True, kw_only=True)
class BenchmarkMetrics:
    """Every metric of one run: configurations, reference rows, frontier and per-kind accuracy."""

    configs: dict[str, MetricRow]
    references: dict[str, MetricRow]
    frontier: tuple[str, ...]
    """Configurations on the (cost, kind accuracy) Pareto frontier, cheapest first."""
    per_kind: dict[str, tuple[KindAccuracy, ...]]
    deltas: dict[str, dict[str, float | None]]
    """Per configuration, its value minus configuration A's (empty when A is missing)."""
    seed: int
    resamples: int
    call_prices: dict[str, float] = field(default_factory=dict)
    routing: RoutingMetrics | None = None
    """Threshold sweep, APGR/CPT, IBC, verifier quality and wasted cost; None without A, B and D."""
    confusion: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Per configuration, gold kind -> chosen kind (or `invalid`) -> example count."""


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval | None:
    """Return the percentile bootstrap interval of the mean, or None for no values.

    Args:
        values: One value per example.
        resamples: Bootstrap resamples drawn with replacement.
        confidence: Coverage of the interval, e.g. 0.95.
        seed: Seed of the numpy generator; the same seed gives the same interval.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    # Draw in chunks so that large runs do not allocate a resamples x n index matrix at once.
    chunk = max(1, 1_000_000 // data.size)
    means: list[np.ndarray] = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        indices = rng.integers(0, data.size, size=(size, data.size))
        means.append(data[indices].mean(axis=1))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(np.concatenate(means), [tail, 100.0 - tail])
    return float(low), float(high)


def pareto_frontier(points: Mapping[str, tuple[float, float]]) -> tuple[str, ...]:
    """Return the names whose (cost, accuracy) point no other point dominates, cheapest first.

    A point dominates another when its cost is lower or equal and its accuracy higher or equal,
    with at least one of the two strict. Identical points are all kept.
    """
    kept = [
        name
        for name, (cost, accuracy) in points.items()
        if not any(
            other_cost <= cost
            and other_accuracy >= accuracy
            and (other_cost < cost or other_accuracy > accuracy)
            for other_cost, other_accuracy in points.values()
        )
    ]
    return tuple(sorted(kept, key=lambda name: (points[name][0], -points[name][1], name)))


def compute_metrics(
    rows: Iterable[DecisionRow],
    *,
    cost_model: CostModel | None = None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> BenchmarkMetrics:
    """Compute every metric of a run from its decision rows.

    Args:
        rows: Decision rows of one run, any configurations.
        cost_model: When given, recompute each row's cost (and FLOPs, when it has parameter
            counts) from its stored calls; otherwise use the stored values. The random-escalation
            row uses its call prices either way (`CostModel()` defaults when None).
        seed: Seed of the bootstrap intervals.
        resamples: Bootstrap resamples per interval.
    """
    priced = _priced(rows, cost_model)
    grouped = group_by_config(priced)
    a_flops = _mean([row.flops for row in grouped["A"]]) if "A" in grouped else None
    configs = {
        name: config_metrics(name, config_rows, a_flops=a_flops, seed=seed, resamples=resamples)
        for name, config_rows in grouped.items()
    }
    frontier = pareto_frontier(
        {name: (row.cost or 0.0, row.kind_accuracy or 0.0) for name, row in configs.items()}
    )
    configs = {name: replace(row, on_frontier=name in frontier) for name, row in configs.items()}
    prices = (cost_model or CostModel()).call_prices
    references = reference_rows(
        grouped, configs, prices=prices, a_flops=a_flops, seed=seed, resamples=resamples
    )
    return BenchmarkMetrics(
        configs=configs,
        references=references,
        frontier=frontier,
        per_kind={name: per_kind_accuracy(config_rows) for name, config_rows in grouped.items()},
        deltas=deltas_vs_a(configs),
        seed=seed,
        resamples=resamples,
        call_prices={role: float(price) for role, price in prices.items()},
        routing=routing_metrics(priced, configs, cost_model=cost_model),
        confusion={name: kind_confusion(config_rows) for name, config_rows in grouped.items()},
    )


INVALID_KIND = "invalid"
"""Confusion column of decisions that chose no valid action."""


def kind_confusion(rows: Iterable[DecisionRow]) -> dict[str, dict[str, int]]:
    """Count, per gold kind, how often each kind (or no valid action) was chosen."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row.gold_kind, Counter())[row.final_kind or INVALID_KIND] += 1
    return {gold: dict(chosen) for gold, chosen in counts.items()}


def group_by_config(rows: Iterable[DecisionRow]) -> dict[str, list[DecisionRow]]:
    """Group rows by configuration, A to E first and any other names after in sorted order."""
    grouped: dict[str, list[DecisionRow]] = {}
    for row in rows:
        grouped.setdefault(row.config, []).append(row)
    order = [name for name in CONFIGS if name in grouped]
    order += sorted(name for name in grouped if name not in CONFIGS)
    return {name: grouped[name] for name in order}


def _priced(rows: Iterable[DecisionRow], cost_model: CostModel | None) -> list[DecisionRow]:
    if cost_model is None:
        return list(rows)
    priced = []
    for row in rows:
        calls = [ModelCall(**call) for call in row.calls]
        flops = cost_model.token_flops(calls) if cost_model.parameters else row.flops
        priced.append(replace(row, cost=cost_model.call_cost(calls), flops=flops))
    return priced


def config_metrics(
    name: str,
    rows: Sequence[DecisionRow],
    *,
    a_flops: float | None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> MetricRow:
    """Compute the metrics of one configuration from its rows (frontier membership left unset)."""
    kind = [float(row.kind_correct) for row in rows]
    full = [float(row.full_correct) for row in rows]
    costs = [float(row.cost) for row in rows]
    flops = _mean([row.flops for row in rows])
    latencies = np.asarray([row.latency_s for row in rows], dtype=float)
    invalid, proposals = _count_invalid(rows)
    return MetricRow(
        name=name,
        role="config",
        errors=sum(row.error is not None for row in rows),
        **_quality_and_cost(kind, full, costs, flops, a_flops=a_flops, seed=seed, resamples=resamples),
        invalid_rate=_ratio(invalid, proposals),
        invalid_proposals=invalid,
        proposals=proposals,
        latency_p50=float(np.percentile(latencies, 50)) if rows else None,
        latency_p95=float(np.percentile(latencies, 95)) if rows else None,
        **acceptance_rates(rows),
    )


def acceptance_rates(rows: Sequence[DecisionRow]) -> dict[str, float | None]:
    """Return accept, escalation and false-accept rates; all None when no row had a proposer."""
    keys = ("accept_rate", "escalation_rate", "false_accept_rate", "false_accept_share")
    if not rows or all(row.decision == "direct" for row in rows):
        return dict.fromkeys(keys)
    accepted = [row for row in rows if row.decision in ACCEPTED_DECISIONS]
    wrong = sum(not row.full_correct for row in accepted)
    return {
        "accept_rate": len(accepted) / len(rows),
        "escalation_rate": sum(row.decision == "escalate" for row in rows) / len(rows),
        "false_accept_rate": _ratio(wrong, len(accepted)),
        "false_accept_share": wrong / len(rows),
    }


def _count_invalid(rows: Sequence[DecisionRow]) -> tuple[int, int]:
    proposals = [proposal for row in rows for proposal in row.proposals]
    invalid = sum(proposal.get("action") is None for proposal in proposals)
    return invalid, len(proposals)


def per_kind_accuracy(rows: Sequence[DecisionRow]) -> tuple[KindAccuracy, ...]:
    """Return kind accuracy and support per gold kind: the nine kinds, then any other kind found."""
    by_kind: dict[str, list[bool]] = {kind: [] for kind in ACTION_KINDS}
    for row in rows:
        by_kind.setdefault(row.gold_kind, []).append(row.kind_correct)
    return tuple(
        KindAccuracy(kind=kind, support=len(hits), accuracy=_mean([float(hit) for hit in hits]))
        for kind, hits in by_kind.items()
    )


def deltas_vs_a(configs: Mapping[str, MetricRow]) -> dict[str, dict[str, float | None]]:
    """Return each configuration's accuracy and cost minus A's, and its cost relative to A's."""
    base = configs.get("A")
    if base is None:
        return {}
    return {
        name: {
            "kind_accuracy": _difference(row.kind_accuracy, base.kind_accuracy),
            "full_accuracy": _difference(row.full_accuracy, base.full_accuracy),
            "cost": _difference(row.cost, base.cost),
            "cost_ratio": _ratio(row.cost, base.cost),
        }
        for name, row in configs.items()
    }


def reference_rows(
    grouped: Mapping[str, Sequence[DecisionRow]],
    configs: Mapping[str, MetricRow],
    *,
    prices: Mapping[str, Decimal],
    a_flops: float | None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict[str, MetricRow]:
    """Compute the reference rows that the data supports.

    Random, majority and oracle need any rows; random-escalation needs A, B and D.
    """
    gold = _gold_kinds(grouped)
    if not gold:
        return {}
    rows = {
        "random": random_row(len(gold)),
        "majority": majority_row(gold),
        "oracle": oracle_row(grouped, a_flops=a_flops, seed=seed, resamples=resamples),
    }
    escalation = configs["D"].escalation_rate if "D" in configs else None
    if escalation is not None and "A" in grouped and "B" in grouped:
        rows["random-escalation"] = random_escalation_row(
            grouped["A"], grouped["B"], rate=escalation, prices=prices, a_flops=a_flops,
            seed=seed, resamples=resamples,
        )
    return rows


def _gold_kinds(grouped: Mapping[str, Sequence[DecisionRow]]) -> dict[str, str]:
    return {row.example_id: row.gold_kind for rows in grouped.values() for row in rows}


def random_row(examples: int) -> MetricRow:
    """Return the expected metrics of a uniform random choice among the nine kinds."""
    return MetricRow(
        name="random",
        role="reference",
        n=examples,
        kind_accuracy=1.0 / len(ACTION_KINDS),
        cost=0.0,
        flops=0.0,
        flops_vs_a=0.0,
        description=f"uniform guess among the {len(ACTION_KINDS)} kinds, exact expectation",
    )


def majority_row(gold_kinds: Mapping[str, str]) -> MetricRow:
    """Return the metrics of always predicting the most frequent gold kind.

    Ties go to the kind that comes first in `ACTION_KINDS`.
    """
    counts = Counter(gold_kinds.values())
    order = {kind: index for index, kind in enumerate(ACTION_KINDS)}
    kind = min(counts, key=lambda name: (-counts[name], order.get(name, len(order)), name))
    return MetricRow(
        name="majority",
        role="reference",
        n=len(gold_kinds),
        kind_accuracy=counts[kind] / len(gold_kinds),
        cost=0.0,
        flops=0.0,
        flops_vs_a=0.0,
        description=f"always the most frequent gold kind, {kind}",
    )


def oracle_row(
    grouped: Mapping[str, Sequence[DecisionRow]],
    *,
    a_flops: float | None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> MetricRow:
    """Return the metrics of picking, per example, the cheapest configuration with the right kind.

    Where no configuration has the right kind the oracle takes the cheapest one. Its full accuracy
    is the share of examples that some configuration got fully right.
    """
    by_example: dict[str, list[DecisionRow]] = {}
    for rows in grouped.values():
        for row in rows:
            by_example.setdefault(row.example_id, []).append(row)
    chosen = [_cheapest_right(rows) for rows in by_example.values()]
    kind = [float(row.kind_correct) for row in chosen]
    full = [float(any(row.full_correct for row in rows)) for rows in by_example.values()]
    costs = [float(row.cost) for row in chosen]
    flops = _mean([row.flops for row in chosen])
    return MetricRow(
        name="oracle",
        role="reference",
        **_quality_and_cost(kind, full, costs, flops, a_flops=a_flops, seed=seed, resamples=resamples),
        description="per example the cheapest configuration with the right kind",
    )


def _quality_and_cost(
    kind: list[float], full: list[float], costs: list[float], flops: float | None, *,
    a_flops: float | None, seed: int, resamples: int,
) -> dict[str, Any]:
    """Return the `MetricRow` fields for per-example kind and full correctness, costs and mean FLOPs."""
    return {
        "n": len(kind),
        "kind_accuracy": _mean(kind),
        "kind_accuracy_ci": bootstrap_ci(kind, resamples=resamples, seed=seed),
        "full_accuracy": _mean(full),
        "full_accuracy_ci": bootstrap_ci(full, resamples=resamples, seed=seed),
        "cost": _mean(costs),
        "cost_ci": bootstrap_ci(costs, resamples=resamples, seed=seed),
        "flops": flops,
        "flops_vs_a": _ratio(flops, a_flops),
    }


def _cheapest_right(rows: Sequence[DecisionRow]) -> DecisionRow:
    # `min` keeps the first of equal costs, and rows arrive in configuration order A to E.
    right = [row for row in rows if row.kind_correct]
    return min(right or rows, key=lambda row: row.cost)


def random_escalation_row(
    a_rows: Sequence[DecisionRow],
    b_rows: Sequence[DecisionRow],
    *,
    rate: float,
    prices: Mapping[str, Decimal],
    a_flops: float | None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> MetricRow:
    """Return the expected metrics of escalating a random share `rate` of examples to A.

    The other examples keep B's action. Accuracy is the exact expectation over the examples that
    both A and B ran. The cost is one cheap call, one verifier call and `rate` strong calls.
    """
    a_by_id = {row.example_id: row for row in a_rows}
    pairs = [(a_by_id[row.example_id], row) for row in b_rows if row.example_id in a_by_id]
    kind = [rate * a.kind_correct + (1 - rate) * b.kind_correct for a, b in pairs]
    full = [rate * a.full_correct + (1 - rate) * b.full_correct for a, b in pairs]
    # NOTE: the verifier's FLOPs are not included, because A and B rows carry no verifier calls.
    flops = _mean([b.flops + rate * a.flops for a, b in pairs])
    cost = float(
        prices.get("cheap", Decimal(0))
        + prices.get("verifier", Decimal(0))
        + Decimal(str(rate)) * prices.get("strong", Decimal(0))
    )
    return MetricRow(
        name="random-escalation",
        role="reference",
        n=len(pairs),
        kind_accuracy=_mean(kind),
        kind_accuracy_ci=bootstrap_ci(kind, resamples=resamples, seed=seed),
        full_accuracy=_mean(full),
        full_accuracy_ci=bootstrap_ci(full, resamples=resamples, seed=seed),
        cost=cost,
        flops=flops,
        flops_vs_a=_ratio(flops, a_flops),
        description=f"B with a random {rate:.1%} of examples escalated to A, D's escalation rate",
    )


def _mean(values: Sequence[float]) -> float | None:
    return float(math.fsum(values) / len(values)) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def _difference(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


# Routing metrics: the threshold sweep, verifier quality and the cost of rejected drafts.
#
# APGR and CPT follow RouteLLM (Ong et al., "RouteLLM: Learning to Route LLMs with Preference
# Data", arXiv 2406.18665): the performance gap recovered by a router is
# PGR = (accuracy - weak accuracy) / (strong accuracy - weak accuracy); APGR is the area under PGR
# against the share of calls sent to the strong model, over [0, 1]; CPT(x%) is the smallest share
# of strong calls at which PGR reaches x%. Here the weak model is configuration B, the strong one
# A, accuracy is kind accuracy, and the router is D's verifier threshold, replayed from the store.
# IBC follows AutoMix (Aggarwal et al., arXiv 2310.12963): the incremental benefit per cost of a
# method M is IBC_M = (P_M - P_B) / (C_M - C_B), the same slope for A is the baseline IBC_A, and
# delta IBC = (IBC_M - IBC_A) / |IBC_A| x 100 (percent; positive means a better slope than
# calling the strong model more often).

SWEEP_POINTS = 101
RELIABILITY_BINS = 10


@dataclass(frozen=True, kw_only=True)
class ReliabilityCurve:
    """Predicted score against observed correctness, in equal-width score bins."""

    bin_edges: tuple[float, ...]
    mean_score: tuple[float | None, ...]
    observed: tuple[float | None, ...]
    """Share of fully correct proposals per bin; None for an empty bin."""
    counts: tuple[int, ...]
    ece: float | None
    """Expected calibration error: count-weighted mean |observed - mean score| over bins."""


@dataclass(frozen=True, kw_only=True)
class VerifierQuality:
    """Separation of fully correct from wrong proposals by one stored score."""

    score: str
    n: int
    """Proposals with both a score and a known full correctness."""
    positives: int
    roc_auc: float | None
    """None when only one class is present."""
    reliability: ReliabilityCurve
    kind_n: int = 0
    """Proposals with a score, all of which have a known kind correctness."""
    kind_roc_auc: float | None = None
    """Separation of proposals of the right kind from the others; None with one class only."""


TARGET_ACCURACY_DROP = 0.02
"""Largest drop in kind accuracy from configuration A that D's target allows."""
TARGET_COST_RATIO = 0.40
"""Largest share of A's cost (per-call model) that D's target allows."""


@dataclass(frozen=True, kw_only=True)
class TargetPoint:
    """One way of running D, measured against its target."""

    label: str
    kind_accuracy: float
    cost_ratio: float
    """Mean per-call cost divided by configuration A's."""
    escalation_rate: float
    threshold: float | None = None
    """Global threshold of a replayed point; None for D as run and the perfect router."""


@dataclass(frozen=True, kw_only=True)
class TargetCheck:
    """D measured against its accuracy and cost target, with what would reach it.

    The replayed points pick a global threshold on the run's own examples, so they are optimistic
    for new examples. The perfect router escalates the proposals that did not parse, then exactly
    the examples where A's kind is right and the proposal's is wrong, cheapest first. It bounds
    what any verifier could reach with these two models at these prices.
    """

    max_accuracy_drop: float
    max_cost_ratio: float
    a_kind_accuracy: float
    points: tuple[TargetPoint, ...]
    """D as run, then the replayed and perfect-router points. A point that no threshold reaches is left out."""

    def meets(self, point: TargetPoint) -> tuple[bool, bool]:
        """Return whether `point` is within the accuracy drop and within the cost ratio."""
        return (point.kind_accuracy >= self.a_kind_accuracy - self.max_accuracy_drop - 1e-9,
                point.cost_ratio <= self.max_cost_ratio + 1e-9)


@dataclass(frozen=True, kw_only=True)
class RoutingMetrics:
    """Threshold sweep of D's verifier, APGR/CPT, IBC, verifier quality and wasted cost."""

    thresholds: tuple[float, ...]
    strong_share: tuple[float, ...]
    """Escalation rate per threshold: the share of examples sent to the strong model."""
    cost: tuple[float, ...]
    kind_accuracy: tuple[float, ...]
    pgr: tuple[float, ...] | None
    """Performance gap recovered per threshold; None when A and B are equally accurate."""
    apgr: float | None
    cpt: dict[str, float | None]
    """CPT(50%) and CPT(80%), keyed "50" and "80"."""
    ibc: dict[str, float | None]
    delta_ibc: dict[str, float | None]
    """Per configuration, percent."""
    false_reject_rate: dict[str, float | None]
    """Per configuration: escalated examples whose proposal (B's same proposal) was fully
    correct, divided by escalated examples. E samples other proposals, so it has none."""
    wasted_tokens: dict[str, float]
    """Per configuration: mean tokens per example of cheap and scoring calls on escalated examples."""
    wasted_cost: dict[str, float]
    """Per configuration: mean per-call cost per example of those calls."""
    verifiers: tuple[VerifierQuality, ...]
    target: TargetCheck | None = None
    """D against `TARGET_ACCURACY_DROP` and `TARGET_COST_RATIO`; None without A's or D's cost."""

    def to_dict(self) -> dict[str, Any]:
        """Return the metrics as a JSON-compatible dict (NaN becomes None)."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float | None:
    """Return the ROC AUC of scores against binary labels (ties count half), None for one class.

    Computed as the Mann-Whitney U statistic over average ranks.
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u_statistic = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u_statistic / (positives * negatives))


def reliability_curve(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, *, bins: int = RELIABILITY_BINS
) -> ReliabilityCurve:
    """Bin scores in [0, 1] into equal-width bins and compare mean score with observed accuracy."""
    scores = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    labels = np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum(np.digitize(scores, edges[1:-1]), bins - 1)
    counts = np.bincount(index, minlength=bins)
    score_sums = np.bincount(index, weights=scores, minlength=bins)
    label_sums = np.bincount(index, weights=labels, minlength=bins)
    mean_score = [float(score_sums[i] / counts[i]) if counts[i] else None for i in range(bins)]
    observed = [float(label_sums[i] / counts[i]) if counts[i] else None for i in range(bins)]
    total = int(counts.sum())
    ece = None
    if total:
        gaps = [counts[i] * abs(observed[i] - mean_score[i]) for i in range(bins) if counts[i]]  # type: ignore[operator]
        ece = float(sum(gaps) / total)
    return ReliabilityCurve(
        bin_edges=tuple(float(edge) for edge in edges),
        mean_score=tuple(mean_score),
        observed=tuple(observed),
        counts=tuple(int(count) for count in counts),
        ece=ece,
    )


def apgr_and_cpt(
    strong_share: np.ndarray, pgr: np.ndarray, *, levels: Sequence[float] = (0.5, 0.8)
) -> tuple[float, dict[str, float | None]]:
    """Return the area under (strong share, PGR) over [0, 1] and the CPT at each level.

    The curve is anchored at (0, 0), all weak, and (1, 1), all strong. Where several points share
    a strong share the best PGR counts. CPT(x) is the smallest strong share among the points with
    PGR >= x, without interpolation.
    """
    x = np.concatenate([[0.0], strong_share, [1.0]])
    y = np.concatenate([[0.0], pgr, [1.0]])
    unique_x = np.unique(x)
    best = np.asarray([y[x == value].max() for value in unique_x])
    area = float(np.sum((unique_x[1:] - unique_x[:-1]) * (best[1:] + best[:-1]) / 2.0))
    cpt = {}
    for level in levels:
        reached = unique_x[best >= level - 1e-12]
        cpt[f"{level * 100:g}"] = float(reached.min()) if reached.size else None
    return area, cpt


def incremental_benefit_per_cost(
    configs: Mapping[str, MetricRow],
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Return AutoMix's IBC and delta IBC (percent) of every configuration against B and A."""
    weak, strong = configs.get("B"), configs.get("A")
    if weak is None or strong is None:
        return {}, {}

    def slope(row: MetricRow) -> float | None:
        if None in (row.kind_accuracy, row.cost, weak.kind_accuracy, weak.cost):
            return None
        spent = row.cost - weak.cost  # type: ignore[operator]
        return None if abs(spent) < 1e-12 else (row.kind_accuracy - weak.kind_accuracy) / spent  # type: ignore[operator]

    base = slope(strong)
    ibc = {name: slope(row) for name, row in configs.items() if name not in ("A", "B")}
    delta = {
        name: None if value is None or not base else (value - base) / abs(base) * 100.0
        for name, value in ibc.items()
    }
    return ibc, delta


def routing_metrics(
    rows: Sequence[DecisionRow], configs: Mapping[str, MetricRow], *, cost_model: CostModel | None = None
) -> RoutingMetrics | None:
    """Compute the routing metrics of a run; None unless it has A, B and D rows."""
    from spec_agent.db.replay import ReplayFrame, sweep, threshold_grid

    present = {row.config for row in rows}
    if not {"A", "B", "D"} <= present:
        return None
    frame = ReplayFrame.from_rows(rows, cost_model=cost_model)
    if frame.n == 0:
        return None
    grid = threshold_grid(SWEEP_POINTS)
    result = sweep(frame, grid)
    pgr, apgr, cpt = _gap_recovered(frame, result)
    ibc, delta = incremental_benefit_per_cost(configs)
    wasted_tokens, wasted_cost = _wasted(rows, cost_model)
    return RoutingMetrics(
        thresholds=tuple(grid),
        strong_share=tuple(float(value) for value in result.escalation_rate),
        cost=tuple(float(value) for value in result.cost),
        kind_accuracy=tuple(float(value) for value in result.kind_accuracy),
        pgr=pgr,
        apgr=apgr,
        cpt=cpt,
        ibc=ibc,
        delta_ibc=delta,
        false_reject_rate=_false_rejects(rows),
        wasted_tokens=wasted_tokens,
        wasted_cost=wasted_cost,
        verifiers=tuple(_verifier_quality(frame, name) for name in frame.scores),
        target=target_check(frame, result, configs),
    )


def target_check(
    frame: Any,
    result: Any,
    configs: Mapping[str, MetricRow],
    *,
    max_accuracy_drop: float = TARGET_ACCURACY_DROP,
    max_cost_ratio: float = TARGET_COST_RATIO,
) -> TargetCheck | None:
    """Measure D, its replayed threshold sweep `result` and a perfect router against the target."""
    a, d = configs.get("A"), configs.get("D")
    if a is None or d is None or not a.cost or None in (a.kind_accuracy, d.kind_accuracy, d.cost):
        return None
    floor = a.kind_accuracy - max_accuracy_drop  # type: ignore[operator]
    cap = max_cost_ratio * a.cost
    points = [TargetPoint(label="D as run", kind_accuracy=d.kind_accuracy, cost_ratio=d.cost / a.cost,  # type: ignore[arg-type, operator]
                          escalation_rate=d.escalation_rate or 0.0)]
    accuracy, cost = result.kind_accuracy, result.cost
    reaching = np.flatnonzero(accuracy >= floor - 1e-9)
    if reaching.size:
        # Cheapest first, then the more accurate.
        index = int(reaching[np.lexsort((-accuracy[reaching], cost[reaching]))[0]])
        points.append(_sweep_point(result, index, a.cost, f"D's score, cheapest global threshold within "
                                                          f"{max_accuracy_drop:.2f} of A (replayed)"))
    affordable = np.flatnonzero(cost <= cap + 1e-9)
    if affordable.size:
        index = int(affordable[np.lexsort((cost[affordable], -accuracy[affordable]))[0]])
        points.append(_sweep_point(result, index, a.cost, f"D's score, most accurate global threshold at "
                                                          f"≤ {max_cost_ratio:.2f} of A's cost (replayed)"))
    points += _perfect_router(frame, a.cost, floor, cap, max_accuracy_drop, max_cost_ratio)
    return TargetCheck(max_accuracy_drop=max_accuracy_drop, max_cost_ratio=max_cost_ratio,
                       a_kind_accuracy=a.kind_accuracy, points=tuple(points))  # type: ignore[arg-type]


def _sweep_point(result: Any, index: int, a_cost: float, label: str) -> TargetPoint:
    return TargetPoint(label=label, kind_accuracy=float(result.kind_accuracy[index]),
                       cost_ratio=float(result.cost[index]) / a_cost,
                       escalation_rate=float(result.escalation_rate[index]),
                       threshold=float(result.settings[index].threshold))


def _perfect_router(
    frame: Any, a_cost: float, floor: float, cap: float, drop: float, ratio: float
) -> list[TargetPoint]:
    """Return the perfect router's cheapest point within the drop and its best point under the cap.

    Proposals that did not parse escalate under every threshold, so they escalate here too.
    """
    n = frame.n
    forced = ~frame.valid
    base = frame.cheap_cost + frame.score_cost.get("verifier", np.zeros(n)) + forced * frame.strong_cost
    gains = np.flatnonzero(frame.valid & frame.strong_kind_correct & ~frame.proposal_kind_correct)
    order = gains[np.argsort(frame.strong_cost[gains], kind="stable")]
    spent = base.sum() + np.concatenate([[0.0], np.cumsum(frame.strong_cost[order])])
    right = float(np.where(forced, frame.strong_kind_correct, frame.proposal_kind_correct).sum())
    escalated = float(forced.sum())
    points = []
    needed = max(0, math.ceil((floor - 1e-9) * n - right))
    if needed <= order.size:
        points.append(TargetPoint(label=f"perfect router, cheapest within {drop:.2f} of A",
                                  kind_accuracy=(right + needed) / n, cost_ratio=spent[needed] / n / a_cost,
                                  escalation_rate=(escalated + needed) / n))
    affordable = int(np.searchsorted(spent, cap * n + 1e-9, side="right")) - 1
    if affordable >= 0:
        points.append(TargetPoint(label=f"perfect router, most accurate at ≤ {ratio:.2f} of A's cost",
                                  kind_accuracy=(right + affordable) / n, cost_ratio=spent[affordable] / n / a_cost,
                                  escalation_rate=(escalated + affordable) / n))
    return points


def _gap_recovered(frame: Any, result: Any) -> tuple[tuple[float, ...] | None, float | None, dict[str, float | None]]:
    weak = frame.weak_kind_accuracy
    strong = float(frame.strong_kind_correct.mean())
    if weak is None or abs(strong - weak) < 1e-12:
        return None, None, {"50": None, "80": None}
    pgr = (result.kind_accuracy - weak) / (strong - weak)
    apgr, cpt = apgr_and_cpt(result.escalation_rate, pgr)
    return tuple(float(value) for value in pgr), apgr, cpt


def _false_rejects(rows: Sequence[DecisionRow]) -> dict[str, float | None]:
    weak = {row.example_id: row.full_correct for row in rows if row.config == "B"}
    rates: dict[str, float | None] = {}
    for config in ("C", "D"):
        escalated = [row for row in rows if row.config == config and row.decision == "escalate"]
        known = [weak[row.example_id] for row in escalated if row.example_id in weak]
        rates[config] = _ratio(sum(known), len(known))
    return rates


def _wasted(rows: Sequence[DecisionRow], cost_model: CostModel | None) -> tuple[dict[str, float], dict[str, float]]:
    prices = (cost_model or CostModel()).call_prices
    tokens: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}
    for row in rows:
        if row.config in ("A", "B"):
            continue
        drafts = [call for call in row.calls if call["role"] != "strong"] if row.decision == "escalate" else []
        tokens.setdefault(row.config, []).append(
            sum((call.get("prompt_tokens") or 0) + (call.get("completion_tokens") or 0) for call in drafts)
        )
        costs.setdefault(row.config, []).append(float(sum(prices.get(call["role"], Decimal(0)) for call in drafts)))
    return (
        {name: _mean(values) or 0.0 for name, values in sorted(tokens.items())},
        {name: _mean(values) or 0.0 for name, values in sorted(costs.items())},
    )


def _verifier_quality(frame: Any, score: str) -> VerifierQuality:
    scores = frame.scores[score]
    labels = frame.proposal_full_correct
    usable = ~np.isnan(scores) & ~np.isnan(labels)
    scored = ~np.isnan(scores)
    return VerifierQuality(
        score=score,
        n=int(usable.sum()),
        positives=int(labels[usable].sum()),
        roc_auc=roc_auc(scores[usable], labels[usable] == 1.0),
        reliability=reliability_curve(scores[usable], labels[usable] == 1.0),
        kind_n=int(scored.sum()),
        kind_roc_auc=roc_auc(scores[scored], frame.proposal_kind_correct[scored]),
    )
