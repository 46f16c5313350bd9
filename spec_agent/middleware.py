"""`SpeculativeMiddleware`: speculation for agents built with `langchain.agents.create_agent`.

The agent's own model becomes the fallback: the middleware lets a cheap model propose, the verifier
decide, and calls the agent's model (the `handler` of `wrap_model_call`) only on REJECT. The same
speculation graph and the same `Speculator` body as `speculative_node` do the work.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse

from spec_agent.budget import METADATA_KEY, SpeculationBudget
from spec_agent.cost import CostModel, ModelCall
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError
from spec_agent.escalation import EscalationTarget
from spec_agent.node import LIVE_CONFIG, Speculator, StepContext, tool_schemas
from spec_agent.proposers import as_proposer, model_name, proposal_from_message
from spec_agent.verifiers import as_verifier


@dataclass
class _PendingCall:
    """The agent's model call of the current step, and its response once it ran."""

    request: Any
    handler: Callable[[Any], Any]
    response: Any = None
    calls: list[ModelCall] = field(default_factory=list)


# The speculation loop is built once, but each step's fallback is that step's `handler`; the
# loop's fallback node reads it from here. Context variables follow LangGraph's worker threads
# and asyncio tasks, so concurrent agent runs never see each other's handler.
_PENDING: contextvars.ContextVar[_PendingCall | None] = contextvars.ContextVar(
    "spec_agent_pending_call", default=None
)


class _AgentModelFallback:
    """A proposer that calls the agent's own model through the middleware handler."""

    name = "agent-model"

    def propose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Call the handler of the current step and map its reply to a proposal."""
        pending = _pending()
        return self._proposal(pending, pending.handler(pending.request))

    async def apropose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, n: int = 1, seed: int = 0
    ) -> tuple[list[Proposal], list[ModelCall]]:
        """Await the async handler of the current step and map its reply to a proposal."""
        pending = _pending()
        return self._proposal(pending, await pending.handler(pending.request))

    def _proposal(self, pending: _PendingCall, response: Any) -> tuple[list[Proposal], list[ModelCall]]:
        pending.response = response
        message = _ai_message(response)
        usage = getattr(message, "usage_metadata", None) or {}
        name = model_name(pending.request.model)
        call = ModelCall(role="strong", model=name, prompt_tokens=usage.get("input_tokens"),
                         completion_tokens=usage.get("output_tokens"))
        return [proposal_from_message(message)], [call]


@contextlib.contextmanager
def _handler_available(pending: _PendingCall) -> Iterator[None]:
    """Expose a step's handler to `_AgentModelFallback` while the loop runs that step."""
    token = _PENDING.set(pending)
    try:
        yield
    finally:
        _PENDING.reset(token)


def _pending() -> _PendingCall:
    pending = _PENDING.get()
    if pending is None:
        raise RuntimeError("The agent-model fallback ran outside SpeculativeMiddleware.")
    return pending


class SpeculativeMiddleware(AgentMiddleware):
    """Agent middleware that speculates each model call of a `create_agent` agent.

    Args:
        proposer: Cheap model: a LangChain chat model, a model name (embedded asset, local
            directory or hub id), an `HFChatModel` or a `Proposer`.
        verifier: A `Verifier`, a chat model or model name used as a judge, or None for the schema
            check alone.
        threshold: Verifier score at or above which a proposal is accepted, in [0, 1].
        n_proposals: Proposals per step; the verifier picks the best accepted one.
        thresholds_by_kind: Threshold per action kind, overriding `threshold` for those kinds.
        escalation_target: Moves every threshold by one shared offset so that about its rate of
            steps escalate (see `EscalationTarget`); None keeps the thresholds fixed.
        cost_model: Prices the calls of each decision; defaults to `CostModel()`.
        store: A trace store that receives one row per decision; None stores none.
        budget: Cost limits per run and per thread; None means no limit.
        validate_schema: Run `SchemaVerifier` before `verifier`.
        timeout_s: Time limit of each verifier call in seconds; a late verifier counts as REJECT.
        label: Name in the trace store's run name and in log messages.
        config_name: Configuration label of the stored rows (at most 8 characters).

    Raises:
        ConfigError: A threshold outside [0, 1], `n_proposals` < 1, or neither a verifier nor the
            schema check.
    """

    def __init__(
        self,
        proposer: Any,
        verifier: Any = None,
        *,
        threshold: float = 0.5,
        n_proposals: int = 1,
        thresholds_by_kind: Mapping[str, float] | None = None,
        escalation_target: EscalationTarget | None = None,
        cost_model: CostModel | None = None,
        store: Any = None,
        budget: SpeculationBudget | None = None,
        validate_schema: bool = True,
        timeout_s: float | None = None,
        label: str = "model",
        config_name: str = LIVE_CONFIG,
    ) -> None:
        super().__init__()
        if verifier is None and not validate_schema:
            raise ConfigError(
                "verifier is None and validate_schema is False, so nothing would check proposals; "
                "pass a verifier or keep the schema check."
            )
        cheap = as_proposer(proposer, role="cheap")
        if cheap is None:
            raise ConfigError("proposer is None; pass the cheap model that proposes actions.")
        self.speculator = Speculator(
            proposer=cheap,
            verifier=as_verifier(verifier),
            fallback=_AgentModelFallback(),
            tools=[],
            threshold=threshold,
            n_proposals=n_proposals,
            store=store,
            cost_model=cost_model,
            thresholds_by_kind=thresholds_by_kind,
            escalation_target=escalation_target,
            budget=budget,
            name=label,
            validate_schema=validate_schema,
            timeout_s=timeout_s,
            config_name=config_name,
        )

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        """Propose with the cheap model, verify, and call the agent's model only on REJECT."""
        context, pending = self._start(request, handler)
        if context.budget_spent is not None:
            return ModelResponse(result=[self.speculator.budget_message(context)])
        with _handler_available(pending):
            result = self.speculator.loop.invoke(context.inputs)
        return self._finish(context, pending, result)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """Async `wrap_model_call`; the N proposals and their verifications run concurrently."""
        context, pending = self._start(request, handler)
        if context.budget_spent is not None:
            return ModelResponse(result=[self.speculator.budget_message(context)])
        with _handler_available(pending):
            result = await self.speculator.loop.ainvoke(context.inputs)
        return self._finish(context, pending, result)

    def _start(self, request: ModelRequest, handler: Callable[[Any], Any]) -> tuple[StepContext, _PendingCall]:
        messages = ([request.system_message] if request.system_message else []) + list(request.messages)
        history = (request.state or {}).get("messages", request.messages)
        context = self.speculator.context(
            messages, tool_schemas(request.tools), _current_config(), history=history
        )
        return context, _PendingCall(request=request, handler=handler)

    def _finish(self, context: StepContext, pending: _PendingCall, result: Mapping[str, Any]) -> ModelResponse:
        """Queue the trace row and build the response: the chosen action, or the agent's own reply."""
        message, record = self.speculator.finish(context, result)
        # With the default background writer the row only joins a queue, so the async path calls this too.
        self.speculator._trace.write(record)
        if result["decision"].fallback is None or pending.response is None:
            return ModelResponse(result=[message])
        # On escalation the agent's own reply is returned (its id, content and usage intact), with
        # the decision record added, so a streamed fallback and the stored message agree.
        own = _ai_message(pending.response)
        metadata = {**(own.response_metadata or {}), METADATA_KEY: message.response_metadata[METADATA_KEY]}
        metadata["action_kind"] = message.response_metadata["action_kind"]
        replaced = own.model_copy(update={"response_metadata": metadata})
        structured = getattr(pending.response, "structured_response", None)
        return ModelResponse(result=[replaced], structured_response=structured)


def _ai_message(response: Any) -> Any:
    from langchain_core.messages import AIMessage

    if isinstance(response, AIMessage):
        return response
    for message in getattr(response, "result", None) or []:
        if isinstance(message, AIMessage):
            return message
    raise ConfigError(f"The agent's model returned no AIMessage: {type(response).__name__}.")


def _current_config() -> Any:
    from langgraph.config import get_config

    try:
        return get_config()
    except RuntimeError:
        return {}
