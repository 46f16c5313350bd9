"""`speculative_node`: a drop-in replacement for the node of a LangGraph agent that calls the model.

The node converts the agent's LangChain messages to the OpenAI layout that the speculation loop
reads, walks that loop (propose -> verify -> fall back on REJECT), and returns only the chosen
action as one `AIMessage`. Rejected drafts never enter `messages`, and no tool runs for them,
because the agent's `ToolNode` only sees the returned message. The decision record travels in the
message's `response_metadata["spec_agent"]`, goes out as a `custom` stream event, and, with a trace
store, becomes one row keyed by `thread_id:step`, so a retried step is stored once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from spec_agent.actions import Action
from spec_agent.budget import METADATA_KEY, SpeculationBudget
from spec_agent.cost import CostModel
from spec_agent.decision import Decision, check_threshold
from spec_agent.errors import BudgetExceededError, ConfigError
from spec_agent.escalation import EscalationTarget
from spec_agent.proposers import as_proposer
from spec_agent.verifiers import SchemaVerifier, VerifierChain, as_verifier

logger = logging.getLogger(__name__)

DECISION_EVENT = "spec_agent_decision"
"""Key of the decision payload in each `custom` stream event."""
TRACE_FLUSH_INTERVAL_S = 0.2
"""Maximum seconds a wrapped agent's decision row waits in memory before the background write."""
TRACE_BATCH_SIZE = 256
"""Queued rows that wake the background writer before its interval is up."""
LIVE_CONFIG = "live"
"""Configuration label of trace rows written by a wrapped agent (the benchmark writes A-E)."""


def speculative_node(
    proposer: Any,
    verifier: Any,
    fallback: Any,
    *,
    tools: Sequence[Any],
    threshold: float = 0.5,
    n_proposals: int = 1,
    store: Any = None,
    cost_model: CostModel | None = None,
    thresholds_by_kind: Mapping[str, float] | None = None,
    escalation_target: EscalationTarget | None = None,
    budget: SpeculationBudget | None = None,
    name: str = "agent",
    validate_schema: bool = True,
    timeout_s: float | None = None,
    config_name: str = LIVE_CONFIG,
    run_id: str | None = None,
) -> Any:
    """Build a node that speculates the next action of a `MessagesState` agent.

    Add the result with `graph.add_node("agent", node)` in place of the node that calls the model;
    it composes with `ToolNode` and `tools_condition`, and supports `invoke` and `ainvoke`.

    Args:
        proposer: Cheap model: a LangChain chat model, a model name (embedded asset, local
            directory or hub id), an `HFChatModel` or a `Proposer`; None sends every step to the
            fallback model.
        verifier: Scores proposals: a `Verifier` (any object with `score(messages, tools,
            proposal)`, a trained classifier included), a chat model or model name used as a
            judge, or None for the schema check alone.
        fallback: Strong model that acts on REJECT, in any form `proposer` takes; None uses the
            proposal unverified.
        tools: The agent's tools: LangChain tools, `@tool` functions or JSON schemas.
        threshold: Verifier score at or above which a proposal is accepted, in [0, 1].
        n_proposals: Proposals per step; the verifier picks the best accepted one.
        store: A trace store (`SqlTraceStore`) that receives one row per decision; None stores none.
        cost_model: Prices the calls of each decision; defaults to `CostModel()`.
        thresholds_by_kind: Threshold per action kind, overriding `threshold` for those kinds.
        escalation_target: Moves every threshold by one shared offset so that about its rate of
            steps escalate (see `EscalationTarget`); None keeps the thresholds fixed.
        budget: Cost limits per run and per thread; None means no limit.
        name: Node name, used in the trace store's run name and in log messages.
        validate_schema: Run `SchemaVerifier` before `verifier`, so a tool call with an unknown
            tool or invalid arguments is rejected without a model call.
        timeout_s: Time limit of each verifier call in seconds; a late verifier counts as REJECT.
        config_name: Configuration label of the stored rows (at most 8 characters).
        run_id: An existing trace-store run to log into; by default the node starts its own run on
            its first decision.

    Raises:
        ConfigError: No tools, a threshold outside [0, 1], `n_proposals` < 1, or models that cannot
            make a decision together.
    """
    speculator = Speculator(
        proposer=as_proposer(proposer, role="cheap"),
        verifier=as_verifier(verifier),
        fallback=as_proposer(fallback, role="strong"),
        tools=tool_schemas(tools, required=True),
        threshold=threshold,
        n_proposals=n_proposals,
        store=store,
        cost_model=cost_model,
        thresholds_by_kind=thresholds_by_kind,
        escalation_target=escalation_target,
        budget=budget,
        name=name,
        validate_schema=validate_schema,
        timeout_s=timeout_s,
        config_name=config_name,
        run_id=run_id,
    )
    return SpeculativeNodeRunnable(speculator)


class SpeculativeNodeRunnable(Runnable):
    """The runnable that `speculative_node` returns: a thin shell around one `Speculator`.

    A `RunnableLambda` inspects its function's signature and opens a callback run on every call,
    which cost about 0.2 ms per decision here. LangGraph already runs a node with its config as
    the current one, so stream writers, interrupts and the models' callbacks work without it.
    """

    def __init__(self, speculator: Speculator) -> None:
        self.speculator = speculator
        self.name = speculator.name

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Run one speculation step on a `MessagesState`-like state."""
        return self.speculator.invoke_node(input, ensure_config(config))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        """Async `invoke`: E's proposals and their verifications run concurrently."""
        return await self.speculator.ainvoke_node(input, ensure_config(config))


def tool_schemas(tools: Sequence[Any] | None, *, required: bool = False) -> list[dict[str, Any]]:
    """Convert LangChain tools, `@tool` functions or JSON schemas to flat function schemas.

    Raises:
        ConfigError: `required` is set and there are no tools, or a tool cannot be converted.
    """
    from langchain_core.utils.function_calling import convert_to_openai_tool

    if required and not tools:
        raise ConfigError(
            "tools is empty; pass the agent's tools (LangChain tools or JSON schemas) so that "
            "proposals can be checked against them."
        )
    schemas = []
    for tool in tools or ():
        try:
            schemas.append(convert_to_openai_tool(tool)["function"])
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"Invalid tool {tool!r} in tools: {error}") from error
    return schemas


def to_openai_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Convert LangChain messages to the OpenAI-layout dicts that the speculation graph reads.

    An `AIMessage`'s `response_metadata["action_kind"]` becomes the dict's `action_kind`, so that
    prompts show earlier steps with their kind.
    """
    from langchain_core.messages import convert_to_openai_messages

    converted = []
    for message in messages:
        item = convert_to_openai_messages(message)
        kind = (getattr(message, "response_metadata", None) or {}).get("action_kind")
        if item.get("role") == "assistant" and kind:
            item["action_kind"] = kind
        converted.append(item)
    return converted


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """Identity and input of one speculation step."""

    thread_id: str | None
    """Thread id from `config["configurable"]["thread_id"]`, None without a checkpointer."""
    step: int
    """Index of this step in the thread: the number of AI messages before it."""
    example_id: str
    """Trace-store key of the step, `thread_id:step`; stable across retries."""
    inputs: dict[str, Any]
    """Input of the speculation graph."""
    budget_spent: str | None
    """Why the budget is spent, or None when money is left."""


class Speculator:
    """The shared body of `speculative_node` and `SpeculativeMiddleware` around one speculation loop.

    Args:
        proposer: Cheap proposer or None.
        verifier: Verifier or None.
        fallback: Fallback proposer or None.
        tools: Flat function schemas offered to the models.
        Other arguments: as in `speculative_node`.
    """

    def __init__(
        self,
        *,
        proposer: Any,
        verifier: Any,
        fallback: Any,
        tools: list[dict[str, Any]],
        threshold: float = 0.5,
        n_proposals: int = 1,
        store: Any = None,
        cost_model: CostModel | None = None,
        thresholds_by_kind: Mapping[str, float] | None = None,
        escalation_target: EscalationTarget | None = None,
        budget: SpeculationBudget | None = None,
        name: str = "agent",
        validate_schema: bool = True,
        timeout_s: float | None = None,
        config_name: str = LIVE_CONFIG,
        run_id: str | None = None,
    ) -> None:
        from spec_agent.graphs.speculation import SpeculationLoop

        check_threshold(threshold)
        if n_proposals < 1:
            raise ConfigError(f"n_proposals must be >= 1, got {n_proposals}.")
        self.tools = tools
        self.name = name
        self.budget = budget
        self.cost_model = cost_model or CostModel()
        self.verifier = _compose_verifier(verifier, proposer, fallback, validate_schema, timeout_s)
        # The loop runs in place inside the agent's node; `loop.compile()` gives the same loop as
        # a LangGraph graph for inspection.
        self.loop = SpeculationLoop(
            proposer=proposer,
            verifier=self.verifier,
            fallback=fallback,
            n_proposals=n_proposals,
            threshold=threshold,
            cost_model=self.cost_model,
            thresholds_by_kind=thresholds_by_kind,
            escalation_target=escalation_target,
        )
        self.models = {
            "cheap": getattr(proposer, "name", None),
            "strong": getattr(fallback, "name", None),
        }
        self._trace = _TraceWriter(store=store, name=name, config_name=config_name, run_id=run_id)

    def invoke_node(self, state: Mapping[str, Any], config: Any) -> dict[str, Any]:
        """Run one step on a `MessagesState`-like state (the sync node)."""
        context = self.context(state["messages"], self.tools, config)
        if context.budget_spent is not None:
            return {"messages": [self.budget_message(context)]}
        result = self.loop.invoke(context.inputs)
        message, row = self.finish(context, result)
        self._trace.write(row)
        return {"messages": [message]}

    async def ainvoke_node(self, state: Mapping[str, Any], config: Any) -> dict[str, Any]:
        """Run one step on a `MessagesState`-like state (the async node)."""
        context = self.context(state["messages"], self.tools, config)
        if context.budget_spent is not None:
            return {"messages": [self.budget_message(context)]}
        result = await self.loop.ainvoke(context.inputs)
        message, row = self.finish(context, result)
        # With the default background writer the row only joins a queue, so the event loop is not blocked.
        self._trace.write(row)
        return {"messages": [message]}

    def context(
        self,
        messages: Sequence[Any],
        tools: list[dict[str, Any]],
        config: Any,
        *,
        history: Sequence[Any] | None = None,
    ) -> StepContext:
        """Describe the step: its ids, the graph input and the budget state.

        Args:
            messages: Context sent to the models.
            tools: Flat function schemas on offer.
            config: The node's `RunnableConfig`.
            history: Messages that count for the step index and the budget; default `messages`.
        """
        history = messages if history is None else history
        thread_id = _thread_id(config)
        step = sum(1 for message in history if getattr(message, "type", None) == "ai")
        key = thread_id or _task_id(config)
        step_id = f"thread {thread_id!r} step {step}" if thread_id else f"step {step}"
        return StepContext(
            thread_id=thread_id,
            step=step,
            example_id=f"{key}:{step}",
            inputs={
                "messages": to_openai_messages(messages),
                "tools": tools,
                "seed": _stable_seed(f"{key}:{step}"),
                "step_id": step_id,
            },
            budget_spent=self.budget.exceeded(history) if self.budget else None,
        )

    def budget_message(self, context: StepContext) -> Any:
        """Return the final answer that ends a run whose budget is spent, or raise.

        Raises:
            BudgetExceededError: The budget's `on_exhausted` is `raise`.
        """
        reason = context.budget_spent
        assert self.budget is not None and reason is not None
        if self.budget.on_exhausted == "raise":
            raise BudgetExceededError(
                f"Speculative node {self.name!r} stopped at {context.inputs['step_id']}: {reason}. "
                "Raise the limit in SpeculationBudget or start a new thread."
            )
        logger.info("Ending the run of node %s at %s: %s", self.name, context.inputs["step_id"], reason)
        metadata = {"decision": "budget_exhausted", "reason": reason, "cost": "0",
                    "thread_id": context.thread_id, "step": context.step}
        action = Action(kind="final_answer", content=f"Stopped: {reason}.")
        return action.to_message(**{METADATA_KEY: metadata})

    def finish(self, context: StepContext, result: Mapping[str, Any]) -> tuple[Any, Any]:
        """Turn the graph's decision into the returned message and the trace row; emit the event."""
        decision: Decision = result["decision"]
        errors = list(result.get("errors", []))
        metadata = decision_metadata(decision, context, self.models, errors)
        message = _chosen_action(decision).to_message(**{METADATA_KEY: metadata})
        _emit({DECISION_EVENT: {"node": self.name, **metadata}})
        logger.debug("Node %s %s: %s", self.name, context.inputs["step_id"], decision.decision)
        return message, (decision, context, errors)


def decision_metadata(
    decision: Decision, context: StepContext, models: Mapping[str, Any], errors: list[str]
) -> dict[str, Any]:
    """Return the JSON-serialisable decision record stored on the chosen message."""
    role = "strong" if decision.fallback is not None else "cheap"
    prompt = sum(call.prompt_tokens or 0 for call in decision.calls)
    completion = sum(call.completion_tokens or 0 for call in decision.calls)
    return {
        "decision": decision.decision,
        "scores": list(decision.scores),
        "verdicts": list(decision.verdicts),
        "threshold": decision.threshold,
        "chosen": decision.chosen,
        "proposals": decision.proposal_dicts,
        "role": role,
        "model": models.get(role),
        "tokens": {"prompt": prompt, "completion": completion},
        "calls": decision.call_dicts,
        "cost": str(decision.cost),
        "latency_s": decision.latency_s,
        "errors": errors,
        "thread_id": context.thread_id,
        "step": context.step,
    }


def _chosen_action(decision: Decision) -> Action:
    action = decision.action
    if action is not None:
        return action
    # Without a verifier (or when the fallback's output does not parse) there is no valid action;
    # the raw text becomes the answer so that the turn ends instead of failing.
    final = decision.final
    return Action(kind="final_answer", content=final.text if final else "")


def _compose_verifier(
    verifier: Any, proposer: Any, fallback: Any, validate_schema: bool, timeout_s: float | None
) -> Any:
    if proposer is None or fallback is None:
        return verifier
    members = []
    # A SchemaVerifier passed as the verifier is already the schema check, so it runs once.
    if validate_schema and not isinstance(verifier, SchemaVerifier):
        members.append(SchemaVerifier())
    if verifier:
        members.append(verifier)
    if not members:
        return None
    if len(members) == 1 and timeout_s is None:
        return members[0]
    return VerifierChain(verifiers=members, combine="last", timeout_s=timeout_s)


def _thread_id(config: Any) -> str | None:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return None if thread is None else str(thread)


def _task_id(config: Any) -> str:
    # Without a thread, a LangGraph task id is stable across retries of the same step.
    task = ((config or {}).get("configurable") or {}).get("__pregel_task_id")
    return str(task) if task else uuid.uuid4().hex


def _stable_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def _emit(payload: dict[str, Any]) -> None:
    """Write a `custom` stream event; outside a LangGraph run there is no stream and nothing to do."""
    from langgraph.config import get_stream_writer

    try:
        writer: Callable[[Any], None] = get_stream_writer()
    except (RuntimeError, KeyError):
        return
    writer(payload)


def _buffered(store: Any) -> Any:
    """Put a `BufferedTraceWriter` that writes from a background thread in front of a store.

    The agent's step only queues its row; the thread commits the queue every
    `TRACE_FLUSH_INTERVAL_S` seconds, retries rows that failed, and the queue is flushed once
    more when the interpreter exits.
    """
    if store is None:
        return None
    import atexit

    from spec_agent.db.writer import BufferedTraceWriter, WritePolicy

    if isinstance(store, BufferedTraceWriter):
        return store
    policy = WritePolicy(batch_size=TRACE_BATCH_SIZE, retry_interval_s=1.0, flush_interval_s=TRACE_FLUSH_INTERVAL_S)
    writer = BufferedTraceWriter(store, policy=policy)
    atexit.register(writer.flush)
    _WRITERS.add(writer)
    return writer


_WRITERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Background trace writers of live nodes and middleware, for `flush_traces`."""


def flush_traces() -> int:
    """Write the decision rows that speculative nodes and middleware still hold in memory.

    Rows reach the trace store within `TRACE_FLUSH_INTERVAL_S` seconds on their own; call this
    before reading a run back in the same process. Returns the rows still pending because the
    store failed (they stay queued and are retried).
    """
    return sum(writer.flush() for writer in list(_WRITERS))


class _TraceWriter:
    """Writes decision rows to a trace store under one run, started on the first write."""

    def __init__(self, *, store: Any, name: str, config_name: str, run_id: str | None) -> None:
        if len(config_name) > 8:
            raise ConfigError(f"config_name {config_name!r} is longer than 8 characters; shorten it.")
        self.store = _buffered(store)
        self.name = name
        self.config_name = config_name
        self.run_id = run_id
        self._lock = threading.Lock()

    def write(self, row: tuple[Decision, StepContext, list[str]] | None) -> None:
        """Store one decision; a failed write is logged, counted and retried on the next decision.

        The agent's answer returns either way: the `BufferedTraceWriter` in front of the store keeps
        rows it could not write and never raises a store failure.
        """
        if self.store is None or row is None:
            return
        from spec_agent.errors import SpecAgentRuntimeError

        try:
            run_id = self._run()
            written = self.store.log_decisions(run_id, [self._row(run_id, *row)])
        except SpecAgentRuntimeError as error:
            logger.warning("Failed to store the decision of node %s: %s", self.name, error)
            return
        if not written:
            logger.debug("Decision of node %s was not queued", self.name)

    def _run(self) -> str:
        with self._lock:
            if self.run_id is None:
                self.run_id = self.store.start_run(
                    name=f"live:{self.name}", config={"node": self.name, "config": self.config_name}
                )
            return self.run_id

    def _row(self, run_id: str, decision: Decision, context: StepContext, errors: list[str]) -> Any:
        from spec_agent.db.store import DecisionRow

        action = _chosen_action(decision)
        row = DecisionRow.from_decision(
            decision,
            run_id=run_id,
            config=self.config_name,
            example_id=context.example_id,
            source=f"live/{self.name}",
            scenario=context.thread_id or "",
            gold=action,
            kind_correct=False,
            full_correct=False,
            thread_id=context.thread_id,
            step=context.step,
            error="; ".join(errors) or None,
        )
        # Live traffic has no gold action: the gold fields stay empty instead of guessing.
        return dataclasses.replace(row, gold={}, gold_kind="")
