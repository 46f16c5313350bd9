"""Proposers: models that produce candidate actions for a context of messages and tools."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol, runtime_checkable

from spec_agent.cost import ModelCall, Role
from spec_agent.decision import Proposal
from spec_agent.prompts import parse_action, render_chat


@runtime_checkable
class Proposer(Protocol):
    """Anything that turns a context into one or more candidate actions."""

    name: str

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Return `n` proposals (the first greedy, the rest sampled) and the calls made."""
        ...


class LocalProposer:
    """A proposer over a local model (`HFChatModel` or a `CachedModel` around one).

    The first proposal is the greedy action; further proposals are sampled, so configuration E's
    first proposal is exactly configuration D's.

    Args:
        model: An object with `name` and `generate(chat, *, n, sample, seed)`.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Return `n` parsed proposals and the model calls behind them."""
        chat = render_chat(messages, tools)
        generations, calls = self.model.generate(chat)
        if n > 1:
            extra, extra_calls = self.model.generate(chat, n=n - 1, sample=True, seed=seed)
            generations, calls = generations + extra, calls + extra_calls
        proposals = [parse_action(item.text, confidence=item.confidence) for item in generations]
        return proposals, calls


class LangChainProposer:
    """A proposer over any LangChain chat model, prompted with the same action format.

    The model's confidence is read from token log-probabilities in its response metadata when the
    provider returns them; otherwise it is None, and a confidence verifier rejects the proposal.

    Args:
        model: A `BaseChatModel`.
        role: Cost role of its calls.
    """

    def __init__(self, model: Any, *, role: Role = "cheap") -> None:
        self.model = model
        self.role = role
        self.name = getattr(model, "model_name", None) or type(model).__name__

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Invoke the chat model `n` times and parse each reply."""
        chat = render_chat(messages, tools)
        proposals: list[Proposal] = []
        calls: list[ModelCall] = []
        for _ in range(n):
            started = time.perf_counter()
            reply = self.model.invoke(chat)
            text = reply.content if isinstance(reply.content, str) else str(reply.content)
            proposals.append(parse_action(text, confidence=_confidence(reply)))
            calls.append(_usage_call(reply, self.role, self.name, time.perf_counter() - started))
        return proposals, calls


def _confidence(reply: Any) -> float | None:
    logprobs = ((reply.response_metadata or {}).get("logprobs") or {}).get("content")
    if not logprobs:
        return None
    values = [item["logprob"] for item in logprobs if "logprob" in item]
    return math.exp(sum(values) / len(values)) if values else None


def _usage_call(reply: Any, role: Role, name: str, latency: float) -> ModelCall:
    # Providers that report no usage leave the token counts unknown rather than zero.
    usage = getattr(reply, "usage_metadata", None) or {}
    return ModelCall(
        role=role,
        model=name,
        prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"),
        latency_s=latency,
    )
