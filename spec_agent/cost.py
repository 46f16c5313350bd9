"""Cost of model calls, two ways: the per-call model of the original study and a token model.

The per-call model charges each call a fixed price relative to one strong-model call (strong 1.00,
cheap 0.15, verifier 0.05), whatever its length. The token model charges the forward-pass compute,
about 2 x parameters FLOPs per processed token, so long prompts and large models cost more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from spec_agent.errors import ConfigError

Role = Literal["cheap", "strong", "verifier", "judge"]
ROLES: tuple[str, ...] = ("cheap", "strong", "verifier", "judge")


@dataclass(frozen=True, kw_only=True)
class ModelCall:
    """Usage of one model call; token counts are None when the backend did not report them."""

    role: Role
    """Which role the call served."""
    model: str
    """Model id or path."""
    prompt_tokens: int | None = None
    """Tokens processed as input, cached ones included."""
    completion_tokens: int | None = None
    """Tokens generated (all samples together)."""
    latency_s: float = 0.0
    """Wall time of the call in seconds."""
    reused_tokens: int = 0
    """Prompt tokens served from a KV cache of an earlier call instead of being prefilled."""
    cached: bool = False
    """True when the result was reused from an identical earlier call in this run."""

    def to_dict(self) -> dict[str, object]:
        """Return the usage as a JSON-compatible dict."""
        return {
            "role": self.role,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
            "reused_tokens": self.reused_tokens,
            "cached": self.cached,
        }


def _default_prices() -> dict[str, Decimal]:
    return {
        "strong": Decimal("1.00"),
        "cheap": Decimal("0.15"),
        "verifier": Decimal("0.05"),
        "judge": Decimal("1.00"),
    }


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Prices per call and model sizes for the token cost.

    The judge of configuration C is the strong model, so a judge call costs as much as a strong call.
    """

    call_prices: dict[str, Decimal] = field(default_factory=_default_prices)
    """Price of one call per role, relative to one strong-model call."""
    parameters: dict[str, float] = field(default_factory=dict)
    """Parameter count per role, for the token cost; a missing role costs nothing by tokens."""

    def __post_init__(self) -> None:
        unknown = set(self.call_prices) - set(ROLES)
        if unknown:
            raise ConfigError(f"Unknown role(s) {sorted(unknown)} in call_prices; expected {ROLES}.")
        negative = [role for role, price in self.call_prices.items() if price < 0]
        if negative:
            raise ConfigError(f"Call prices must be >= 0; got negative prices for {negative}.")

    def call_cost(self, calls: list[ModelCall]) -> Decimal:
        """Return the per-call cost of a decision, every call charged (fallbacks included)."""
        return sum((self.call_prices.get(call.role, Decimal(0)) for call in calls), Decimal(0))

    def token_flops(self, calls: list[ModelCall]) -> float:
        """Return the estimated forward-pass FLOPs (2 x parameters x tokens); missing usage counts 0."""
        total = 0.0
        for call in calls:
            tokens = (call.prompt_tokens or 0) + (call.completion_tokens or 0)
            total += 2.0 * self.parameters.get(call.role, 0.0) * tokens
        return total
