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
    escalation_target: EscalationTarget | None = None,
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
        escalation_target: Moves the verifier's thresholds so that about its rate of steps
            escalate (see `escalation_target_for`); None keeps them fixed.
    """
    if isinstance(config, str):
        config = get_configuration(config)
    chosen = {"none": None, "judge": judge, "verifier": verifier}[config.verifier]
    threshold = (thresholds or {}).get(config.verifier, 0.5)
    return build_speculation_graph(
        proposer=cheap if config.speculate else None,
        verifier=chosen,
        fallback=strong if config.fallback else None,
        n_proposals=config.n_proposals,
        threshold=threshold,
        thresholds_by_kind=thresholds_by_kind if config.verifier == "verifier" else None,
        cost_model=cost_model,
        name=f"configuration-{config.name}",
        escalation_target=escalation_target,
    )


def escalation_target_for(
    config: Configuration | str, max_cost: float, *, cost_model: CostModel, verifier: Verifier
) -> EscalationTarget | None:
    """Return a fresh escalation target that keeps a configuration at a mean cost per step.

    Args:
        config: A configuration or its letter.
        max_cost: Mean cost per step, relative to one strong call (0.40 is 40% of A's cost).
        cost_model: Prices of the calls.
        verifier: The configuration's verifier. Its `model_calls` gives the calls that scoring costs.

    Returns:
        None for a configuration without the small verifier, and, with a warning, for one whose
        proposals alone cost more than `max_cost`.
    """
    if isinstance(config, str):
        config = get_configuration(config)
    if config.verifier != "verifier":
        return None
    try:
        rate = rate_for_cost(max_cost, cost_model=cost_model, n_proposals=config.n_proposals,
                             verifier_calls=model_calls(verifier))
    except ConfigError as error:
        logger.warning("Configuration %s keeps its thresholds fixed: %s", config.name, error)
        return None
    return EscalationTarget(rate=rate)
