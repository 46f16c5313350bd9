"""The benchmark runner: configurations A-E over a next-action eval set, traced and reported.

Each example runs through the compiled speculation graph of every configuration, the same graph
that wrapped agents use. Model calls are shared across configurations through `CachedModel`, so
each distinct call runs once per example while every configuration is charged for what it asked.
Decisions are committed to the trace store after each example, so a failed run keeps its work and
`resume` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spec_agent.cost import CostModel, ModelCall
from spec_agent.decision import Decision
from spec_agent.errors import ConfigError
from spec_agent.escalation import EscalationTarget
from spec_agent.hf import DTYPES
from spec_agent.eval.matching import action_matches, kind_matches
from spec_agent.eval.schema import Example
from spec_agent.graphs.configurations import (
    CONFIGURATIONS,
    build_configuration,
    escalation_target_for,
    get_configuration,
)

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 40
"""Examples in the default run. With the embedded models, all five configurations take about
10 to 16 minutes on a 2-core CPU (measured). `limit=0` runs the whole eval split."""

DEFAULT_MAX_COST = 0.39
"""Mean cost per step D aims at by default, relative to A. The project's quality goal caps D at
40% of A's cost. The aim sits one point under the cap: an `EscalationTarget` overspends while it
warms up, then wavers around its rate by a step or two."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Settings of one benchmark run."""

    configurations: tuple[str, ...] = tuple(CONFIGURATIONS)
    """Configuration letters to run."""
    limit: int = DEFAULT_LIMIT
    """Examples to run, sampled with `seed` from the eval split; 0 runs all of them."""
    seed: int = 0
    """Seed of the example sample and of sampled proposals."""
    thresholds: dict[str, float] = field(default_factory=lambda: {"judge": 0.5, "verifier": 0.5})
    """Acceptance threshold per verifier choice (`judge`, `verifier`)."""
    thresholds_by_kind: dict[str, float] = field(default_factory=dict)
    """Verifier thresholds per proposed action kind for D and E, e.g. from `spec-agent calibrate`."""
    verifier: str = "confidence"
    """Verifier of D and E: `confidence`, `kind` or the folder of a trained verifier."""
    kind_prior: bool = False
    """Multiply the verifier's score by the proposal's kind probability (`KindVerifier`), so that
    a proposal whose kind the cheap model doubts needs a surer verifier to be accepted."""
    cheap_model: str = "smollm2-135m-instruct"
    """Cheap proposer: embedded asset name, local directory or hub id."""
    strong_model: str = "qwen2.5-coder-0.5b-instruct"
    """Strong model (fallback and judge): embedded asset name, local directory or hub id."""
    cheap_adapter: str | None = None
    """LoRA adapter folder merged into the cheap proposer; None runs the base model."""
    strong_adapter: str | None = None
    """LoRA adapter folder merged into the strong model; None runs the base model."""
    share: bool = True
    """Share each model call across configurations and reuse each model's prefix KV cache; False
    computes every call of every configuration from scratch, to measure what sharing saves."""
    free_decoding: bool = False
    """Whether local models may write any text. By default each action must open with a `kind:`
    prefix chosen by likelihood (see `LocalProposer`)."""
    opening_heads: bool = True
    """Whether an adapter folder's opening head (`spec-agent train head`) chooses that model's
    `kind:` prefix instead of the prefixes' likelihood."""
    free_calls: bool = False
    """Whether local models write tool payloads freely after a tool kind's opening. By default they
    decode within the call grammar of the example's tools (see `CallGrammar`)."""
    dtype: str = "float32"
    """Weight precision of local models, `float32` or `bfloat16` (the CLI resolves `auto` with
    `compute_dtype` before the run, so the stored settings name the precision that ran)."""
    max_cost: float | None = DEFAULT_MAX_COST
    """Mean cost per step to hold D and E to, relative to one strong call (0.40 is 40% of A's
    cost). Each gets an `EscalationTarget` that moves its thresholds and reads no label. None keeps
    the thresholds fixed."""
    name: str = "bench"
    """Run name stored with the run."""

    def __post_init__(self) -> None:
        for letter in self.configurations:
            get_configuration(letter)
        if self.limit < 0:
            raise ConfigError(f"limit must be >= 0 (0 runs every example), got {self.limit}.")
        if self.dtype not in DTYPES or self.dtype == "auto":
            raise ConfigError(f"dtype must be 'float32' or 'bfloat16' (resolve 'auto' with compute_dtype), "
                              f"got {self.dtype!r}.")
        if self.max_cost is not None and not 0.0 < self.max_cost <= 2.0:
            raise ConfigError(f"max_cost {self.max_cost!r} is not a cost per step relative to A; "
                              "pass a value such as 0.40 (40% of A's cost).")
        for key, value in self.thresholds.items():
            if key not in ("judge", "verifier"):
                raise ConfigError(f"Unknown threshold key {key!r}; use 'judge' or 'verifier'.")
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"Threshold {key}={value!r} is outside [0, 1].")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-compatible dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class Models:
    """The models of a run.

    `cheap` and `strong` are local models (anything with the methods of `HFChatModel`, usually in a
    `CachedModel`) or ready `Proposer`s, such as a `LangChainProposer` over a served model.
    """

    cheap: Any
    """Cheap proposer or the local model behind it."""
    strong: Any
    """Strong model (fallback) or the local model behind it."""
    verifier: Any
    """A `Verifier` for the `verifier` configurations (D and E)."""
    judge: Any = None
    """A `Verifier` for configuration C; None uses the local strong model as judge through `JudgeVerifier`."""


@dataclass
class PassStats:
    """Throughput of one model over the calls it actually computed."""

    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    examples: set[str] = field(default_factory=set)

    def add(self, call: ModelCall, example_id: str) -> None:
        """Count a computed (not cached) call."""
        self.calls += 1
        self.tokens += (call.prompt_tokens or 0) + (call.completion_tokens or 0)
        self.seconds += call.latency_s
        self.examples.add(example_id)


def select_examples(examples: Sequence[Example], *, limit: int, seed: int) -> list[Example]:
    """Return a seeded random sample of `limit` examples (all of them when `limit` is 0).

    The steps of one scenario stay together in trajectory order, so each model's prefix cache
    serves the history they share. The scenarios come in an order shuffled with `seed`, so the
    run's stream mixes sources the way live traffic does: sorted, it would bring every
    irrelevance example first, and an `EscalationTarget` would learn its offset from them alone.
    """
    ordered = sorted(examples, key=trajectory_order)
    if 0 < limit < len(ordered):
        ordered = sorted(random.Random(seed).sample(ordered, limit), key=trajectory_order)
    by_scenario: dict[str, list[Example]] = {}
    for example in ordered:
        by_scenario.setdefault(example.scenario, []).append(example)
    scenarios = list(by_scenario)
    random.Random(f"scenario order {seed}").shuffle(scenarios)
    return [example for scenario in scenarios for example in by_scenario[scenario]]


def trajectory_order(example: Example) -> tuple[str, str, int, int, str]:
    """Return a sort key that groups a scenario's examples by source, turn and step."""
    turn = example.metadata.get("turn", 0)
    step = example.metadata.get("step", 0)
    return (
        example.scenario,
        example.source,
        turn if isinstance(turn, int) else 0,
        step if isinstance(step, int) else 0,
        example.id,
    )


def example_seed(example_id: str, seed: int) -> int:
    """Return a stable per-example seed for sampled proposals."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class BenchRunner:
    """Runs configurations over examples through the speculation graph and logs every decision.

    Args:
        config: Run settings.
        models: Cheap and strong models (wrapped in `CachedModel`) and the small verifier.
        store: A trace store (`SqlTraceStore`).
        cost_model: Prices calls; token cost uses the models' parameter counts.
    """

    def __init__(self, *, config: BenchConfig, models: Models, store: Any, cost_model: CostModel) -> None:
        from spec_agent.prompts import KIND_OPENINGS
        from spec_agent.proposers import LocalProposer
        from spec_agent.verifiers import JudgeVerifier

        self.config = config
        self.models = models
        self.store = store
        self.cost_model = cost_model
        openings = None if config.free_decoding else KIND_OPENINGS

        def proposer(model: Any) -> Any:
            if hasattr(model, "propose"):
                return model
            return LocalProposer(model, openings=openings, constrain_calls=not config.free_calls)

        cheap = proposer(models.cheap)
        strong = proposer(models.strong)
        judge = models.judge or JudgeVerifier(models.strong)
        self.targets: dict[str, EscalationTarget] = {}
        if config.max_cost is not None:
            for letter in config.configurations:
                target = escalation_target_for(letter, config.max_cost, cost_model=cost_model,
                                               verifier=models.verifier)
                if target is not None:
                    self.targets[letter] = target
        self.graphs = {
            letter: build_configuration(
                letter,
                cheap=cheap,
                strong=strong,
                judge=judge,
                verifier=models.verifier,
                thresholds=config.thresholds,
                thresholds_by_kind=config.thresholds_by_kind or None,
                cost_model=cost_model,
                escalation_target=self.targets.get(letter),
            )
            for letter in config.configurations
        }
        self.stats: dict[str, PassStats] = {}
        self._fed_runs: set[str] = set()

    def run(
        self,
        examples: Sequence[Example],
        *,
        run_id: str,
        on_example: Callable[[Example], None] | None = None,
    ) -> None:
        """Run every configuration on every example not yet stored for `run_id`."""
        done = {letter: self.store.done_example_ids(run_id, letter) for letter in self.graphs}
        self._feed_targets(run_id)
        for example in examples:
            pending = [letter for letter in self.graphs if example.id not in done[letter]]
            if pending:
                rows = [self._decide(example, letter, run_id) for letter in pending]
                self.store.log_decisions(run_id, rows)
            self._clear_caches()
            if on_example is not None:
                on_example(example)

    def _feed_targets(self, run_id: str) -> None:
        """Feed each escalation target the steps already stored, so a resumed run goes on as one.

        Each run is fed once: the targets saw this runner's own steps as it made them.
        """
        if not self.targets or run_id in self._fed_runs:
            return
        self._fed_runs.add(run_id)
        from spec_agent.decision import Proposal, threshold_for
        from spec_agent.escalation import step_margin

        default = self.config.thresholds.get("verifier", 0.5)
        for letter, target in self.targets.items():
            for row in self.store.decisions(run_id, letter):
                proposals = [Proposal.from_dict(data) for data in row.proposals]
                thresholds = [threshold_for(proposal, default, self.config.thresholds_by_kind)
                              for proposal in proposals]
                target.record(step_margin(proposals, row.scores, thresholds),
                              escalated=row.decision == "escalate")

    def _decide(self, example: Example, letter: str, run_id: str) -> Any:
        from spec_agent.db.store import DecisionRow

        state = {
            "messages": example.messages,
            "tools": example.tools,
            "seed": example_seed(example.id, self.config.seed),
            "step_id": example.id,
        }
        result = self.graphs[letter].invoke(state)
        decision: Decision = result["decision"]
        self._count(decision, example.id)
        action = decision.action
        return DecisionRow.from_decision(
            decision,
            run_id=run_id,
            config=letter,
            example_id=example.id,
            source=example.source,
            scenario=example.scenario,
            gold=example.action,
            kind_correct=kind_matches(action, example.action),
            full_correct=action_matches(action, example),
            error="; ".join(result.get("errors", [])) or None,
        )

    def _count(self, decision: Decision, example_id: str) -> None:
        for call in decision.calls:
            if not call.cached:
                self.stats.setdefault(call.role, PassStats()).add(call, example_id)

    def _clear_caches(self) -> None:
        for model in (self.models.cheap, self.models.strong):
            clear = getattr(model, "clear", None)
            if clear is not None:
                clear()

    def throughput_lines(self) -> list[str]:
        """Describe each model pass: calls, examples/s and tokens/s over computed calls."""
        return throughput_lines(self.stats)


def throughput_lines(stats: dict[str, PassStats]) -> list[str]:
    """Describe each model pass: calls, examples/s and tokens/s over computed calls.

    Seconds add up across worker processes, so with several workers the rates are per process.
    """
    lines = []
    for role, item in sorted(stats.items()):
        seconds = max(item.seconds, 1e-9)
        lines.append(
            f"{role}: {item.calls} calls on {len(item.examples)} examples in {item.seconds:.1f}s"
            f" - {len(item.examples) / seconds:.2f} examples/s, {item.tokens / seconds:.0f} tokens/s"
        )
    return lines
