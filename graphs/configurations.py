"""Configurations A-E of the ablation, each built from the one speculation graph."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from spec_agent.cost import CostModel
from spec_agent.errors import ConfigError
from spec_agent.escalation import EscalationTarget, rate_for_cost
from spec_agent.proposers import Proposer
from spec_agent.verifiers import Verifier, model_calls

from spec_agent.graphs.speculation import build_speculation_graph

logger = logging.getLogger(__name__)

VerifierChoice = Literal["none", "judge", "verifier"]


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """Which models take part in a configuration, and how."""

    name: str
    """Letter A-E."""
    description: str
    """One line for reports."""
    speculate: bool
    """True when the cheap model proposes."""
    verifier: VerifierChoice
    """`judge`: the strong model judges; `verifier`: the small verifier; `none`: no check."""
    fallback: bool
    """True when the strong model acts (always for A, on REJECT otherwise)."""
    n_proposals: int = 1
    """Cheap proposals per step."""


CONFIGURATIONS: dict[str, Configuration] = {
    config.name: config
    for config in (
        Configuration(name="A", description="strong model on every step",
                      speculate=False, verifier="none", fallback=True),
        Configuration(name="B", description="cheap model on every step",
                      speculate=True, verifier="none", fallback=False),
        Configuration(name="C", description="cheap proposes, strong model judges, strong on REJECT",
                      speculate=True, verifier="judge", fallback=True),
        Configuration(name="D", description="cheap proposes, small verifier decides, strong on REJECT",
                      speculate=True, verifier="verifier", fallback=True),
        Configuration(name="E", description="cheap proposes 3, verifier picks one, strong if none passes",
                      speculate=True, verifier="verifier", fallback=True, n_proposals=3),
    )
}


def get_configuration(name: str) -> Configuration:
    """Return the configuration called `name` (case-insensitive).

    Raises:
        ConfigError: The name is not one of A-E.
    """
    config = CONFIGURATIONS.get(name.upper())
    if config is None:
        raise ConfigError(
            f"Unknown configuration {name!r}; choose from {', '.join(CONFIGURATIONS)}."
        )
    return config


def build_configuration(
    config: Configuration | str,
    *,
    cheap: Proposer,
    strong: Proposer,
    judge: Verifier,
    verifier: Verifier,
    thresholds: dict[str, float] | None = None,
    thresholds_by_kind: dict[str, float] | None = None,
    cost_model: CostModel | None = None,
    max_cost: float | None = None,
) -> Any:
    """Compile the speculation graph for one configuration.

    Args:
        config: A configuration or its letter.
        cheap: Cheap proposer.
        strong: Strong model, the fallback.
        judge: Verifier for `judge` configurations (the strong model as judge).
        verifier: Verifier for `verifier` configurations.
        thresholds: Acceptance threshold per verifier choice (`judge`, `verifier`); default 0.5.
        thresholds_by_kind: Thresholds per proposed action kind for the `verifier` choice,
            overriding `thresholds["verifier"]` for those kinds.
        cost_model: Prices each decision's calls.
        max_cost: Mean cost per step to hold the `verifier` configurations to, relative to one
            strong call: each gets its own `EscalationTarget` at the rate that costs this much.
            A configuration whose proposals alone cost more keeps its thresholds fixed, with a
            warning. None keeps every threshold fixed.
    """
    if isinstance(config, str):
        config = get_configuration(config)
    chosen = {"none": None, "judge": judge, "verifier": verifier}[config.verifier]
    threshold = (thresholds or {}).get(config.verifier, 0.5)
    target = None
    if max_cost is not None and config.verifier == "verifier":
        target = _escalation_target(config, max_cost, cost_model or CostModel(), verifier)
    return build_speculation_graph(
        proposer=cheap if config.speculate else None,
        verifier=chosen,
        fallback=strong if config.fallback else None,
        n_proposals=config.n_proposals,
        threshold=threshold,
        thresholds_by_kind=thresholds_by_kind if config.verifier == "verifier" else None,
        cost_model=cost_model,
        name=f"configuration-{config.name}",
        escalation_target=target,
    )


def _escalation_target(
    config: Configuration, max_cost: float, cost_model: CostModel, verifier: Verifier
) -> EscalationTarget | None:
    try:
        rate = rate_for_cost(max_cost, cost_model=cost_model, n_proposals=config.n_proposals,
                             verifier_calls=model_calls(verifier))
    except ConfigError as error:
        logger.warning("Configuration %s keeps its thresholds fixed: %s", config.name, error)
        return None
    return EscalationTarget(rate=rate)
