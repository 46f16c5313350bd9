"""Cost budgets for a wrapped agent: stop speculating and ending a run once its budget is spent.

The spent cost is read back from the agent's own `messages`: every message that a speculative node
produces carries its decision cost in `response_metadata["spec_agent"]["cost"]`. The budget
therefore survives checkpointing and is never counted twice when LangGraph retries a step.
A *run* is the agent's work on the latest user message (the messages after the last
`HumanMessage`); a *thread* is every message in the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from spec_agent.errors import ConfigError

METADATA_KEY = "spec_agent"
"""Key of the decision metadata in a message's `response_metadata`."""

ExhaustedMode = Literal["end", "raise"]


@dataclass(frozen=True, kw_only=True)
class SpeculationBudget:
    """Cost limits of a speculative node, in the cost model's units (one strong call = 1.00).

    A limit of None means no limit. The check runs before each step, so the step that crosses a
    limit completes and the next one stops.
    """

    max_cost_per_run: Decimal | float | None = None
    """Maximum cost spent on one user message; None means no limit."""
    max_cost_per_thread: Decimal | float | None = None
    """Maximum cost spent in the whole thread; None means no limit."""
    on_exhausted: ExhaustedMode = "end"
    """`end`: reply with a final answer saying that the budget is spent; `raise`: raise
    `BudgetExceededError`."""

    def __post_init__(self) -> None:
        if self.on_exhausted not in ("end", "raise"):
            raise ConfigError(
                f"Invalid on_exhausted {self.on_exhausted!r}; use 'end' or 'raise'."
            )
        for name in ("max_cost_per_run", "max_cost_per_thread"):
            value = getattr(self, name)
            if value is not None and Decimal(str(value)) < 0:
                raise ConfigError(f"{name} must be >= 0 or None (no limit), got {value!r}.")

    def exceeded(self, messages: Sequence[Any]) -> str | None:
        """Return why the budget is spent for these messages, or None while money is left."""
        checks = (
            ("run", self.max_cost_per_run, spent_cost(messages_of_run(messages))),
            ("thread", self.max_cost_per_thread, spent_cost(messages)),
        )
        for scope, limit, spent in checks:
            if limit is not None and spent >= Decimal(str(limit)):
                return f"the {scope} cost budget of {limit} is spent ({spent} used)"
        return None


def messages_of_run(messages: Sequence[Any]) -> Sequence[Any]:
    """Return the messages after the last user message: the current run's work."""
    for index in range(len(messages) - 1, -1, -1):
        if getattr(messages[index], "type", None) == "human":
            return messages[index + 1 :]
    return messages


def spent_cost(messages: Sequence[Any]) -> Decimal:
    """Sum the decision costs recorded on speculative nodes' messages."""
    total = Decimal(0)
    for message in messages:
        metadata = (getattr(message, "response_metadata", None) or {}).get(METADATA_KEY)
        if not isinstance(metadata, dict):
            continue
        try:
            total += Decimal(str(metadata.get("cost", "0")))
        except InvalidOperation:
            continue
    return total
