"""The speculation loop as a LangGraph state graph: propose, verify, fall back on REJECT.

    START -> propose -> verify --ACCEPT--> finalize -> END
       \\                   \\--REJECT--> fallback -> finalize
        \\-- (no proposer) ------------> fallback

Every configuration of the benchmark runs through this graph, and every wrapped agent walks the
same nodes along the same edges (`SpeculationLoop`); the nodes are thin shells over the decision
functions in `spec_agent.decision`. Each node has a sync and an
async path around one shared body: `invoke` calls the models one after the other, `ainvoke` runs
the N proposals of a step, and their verifications, concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, TypedDict, TypeVar, get_type_hints

from langchain_core.runnables import RunnableLambda
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph

from spec_agent.actions import ACTION_KINDS
from spec_agent.cost import CostModel, ModelCall
from spec_agent.decision import Decision, Proposal, check_threshold, pick, threshold_for, verdict
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from spec_agent.escalation import EscalationTarget, step_margin
from spec_agent.proposers import Proposer, apropose
from spec_agent.verifiers import Verifier, ascore

_Result = TypeVar("_Result")

logger = logging.getLogger(__name__)


class SpeculationState(TypedDict, total=False):
    """State of one speculation step."""

    messages: list[dict[str, Any]]
    """Context in OpenAI chat layout."""
    tools: list[dict[str, Any]]
    """Tool JSON schemas on offer."""
    seed: int
    """Per-step seed for sampled proposals."""
    step_id: str
    """Identifier used in error messages (example id or thread and step)."""
    proposals: list[Proposal]
    scores: list[float | None]
    verdicts: list[str]
    chosen: int | None
    fallback: Proposal | None
    calls: Annotated[list[ModelCall], operator.add]
    errors: Annotated[list[str], operator.add]
    threshold: float
    """Default threshold the verify node applied, after any escalation target's offset."""
    decision: Decision


def build_speculation_graph(
    *,
    proposer: Proposer | None,
    verifier: Verifier | None,
    fallback: Proposer | None,
    n_proposals: int = 1,
    threshold: float = 0.5,
    cost_model: CostModel | None = None,
    name: str = "speculation",
    thresholds_by_kind: Mapping[str, float] | None = None,
    checkpointer: Any = None,
    escalation_target: EscalationTarget | None = None,
) -> Any:
    """Build and compile the propose -> verify -> fallback graph.

    Args:
        proposer: Cheap model; None sends every step straight to the fallback (configuration A).
        verifier: Scores proposals; None uses the first proposal unverified (configuration B).
        fallback: Strong model used on REJECT; required when a verifier is given.
        n_proposals: Proposals per step; the verifier picks the best accepted one.
        threshold: Verifier score at or above which a proposal is accepted, in [0, 1].
        cost_model: Prices the calls of each decision; defaults to `CostModel()`.
        name: Graph name shown in LangGraph traces.
        thresholds_by_kind: Threshold per action kind of the proposal, overriding `threshold`
            for those kinds (e.g. a stricter one for `final_answer`).
        checkpointer: Passed to `compile`; `False` keeps a graph that runs inside another graph's
            node from writing checkpoints of its own.
        escalation_target: Moves every threshold by one shared offset so that about its rate of
            steps escalate; None keeps the thresholds fixed.

    Raises:
        ConfigError: The combination of arguments cannot make a decision.
    """
    loop = SpeculationLoop(
        proposer=proposer,
        verifier=verifier,
        fallback=fallback,
        n_proposals=n_proposals,
        threshold=threshold,
        cost_model=cost_model,
        thresholds_by_kind=thresholds_by_kind,
        escalation_target=escalation_target,
    )
    return loop.compile(name=name, checkpointer=checkpointer)


_Step = tuple[Callable[[SpeculationState], Any], Callable[[SpeculationState], Awaitable[Any]] | None]
_Edge = str | Callable[[SpeculationState], str]


class SpeculationLoop:
    """The speculation graph's nodes and edges, runnable as a compiled LangGraph graph or in place.

    `compile()` returns the LangGraph graph that the benchmark runs and that `langgraph dev`
    serves. `invoke`/`ainvoke` walk the same nodes along the same edges inside the caller's own
    node, and `speculative_node` uses them. On a 2-core CPU a nested Pregel run added about 2 ms
    per decision (benchmarks/test_node_overhead.py), more than the rest of the loop. Both paths
    apply the state's reducers, so they return the same decision.

    Args: as in `build_speculation_graph`.

    Raises:
        ConfigError: The combination of arguments cannot make a decision.
    """

    def __init__(
        self,
        *,
        proposer: Proposer | None,
        verifier: Verifier | None,
        fallback: Proposer | None,
        n_proposals: int = 1,
        threshold: float = 0.5,
        cost_model: CostModel | None = None,
        thresholds_by_kind: Mapping[str, float] | None = None,
        escalation_target: EscalationTarget | None = None,
    ) -> None:
        _check_arguments(proposer, verifier, fallback, n_proposals, threshold)
        if escalation_target is not None and verifier is None:
            raise ConfigError("An escalation target needs a verifier whose thresholds it can move.")
        nodes = _Nodes(
            proposer=proposer,
            verifier=verifier,
            fallback=fallback,
            n_proposals=n_proposals,
            threshold=threshold,
            cost_model=cost_model or CostModel(),
            thresholds_by_kind=_check_kind_thresholds(thresholds_by_kind),
            escalation_target=escalation_target,
        )
        self.steps: dict[str, _Step] = {"finalize": (nodes.finalize, None)}
        self.edges: dict[str, _Edge] = {"finalize": END}
        if fallback is not None:
            self.steps["fallback"] = (nodes.run_fallback, nodes.arun_fallback)
            self.edges["fallback"] = "finalize"
        if proposer is None:
            self.edges[START] = "fallback"
            return
        self.steps["propose"] = (nodes.propose, nodes.apropose)
        self.edges[START] = "propose"
        if verifier is None:
            self.edges["propose"] = "finalize"
            return
        self.steps["verify"] = (nodes.verify, nodes.averify)
        self.edges["propose"] = "verify"
        self.edges["verify"] = route_after_verify

    def compile(self, *, name: str = "speculation", checkpointer: Any = None) -> Any:
        """Return the loop as a compiled LangGraph `StateGraph`."""
        graph = StateGraph(SpeculationState)
        for node, (sync, async_) in self.steps.items():
            graph.add_node(node, RunnableLambda(sync, async_) if async_ else sync)
        for source, target in self.edges.items():
            if callable(target):
                graph.add_conditional_edges(source, target, ["finalize", "fallback"])
            else:
                graph.add_edge(source, target)
        return graph.compile(name=name, checkpointer=checkpointer)

    def invoke(self, state: SpeculationState) -> SpeculationState:
        """Run the nodes one after the other in the calling thread and return the final state."""
        current: dict[str, Any] = dict(state)
        node = self._next(START, current)
        while node != END:
            _apply(current, self.steps[node][0](current))
            node = self._next(node, current)
        return current  # type: ignore[return-value]

    async def ainvoke(self, state: SpeculationState) -> SpeculationState:
        """Async `invoke`: the async node bodies run, so E's proposals run concurrently."""
        current: dict[str, Any] = dict(state)
        node = self._next(START, current)
        while node != END:
            sync, async_ = self.steps[node]
            _apply(current, await async_(current) if async_ else sync(current))
            node = self._next(node, current)
        return current  # type: ignore[return-value]

    def _next(self, node: str, state: dict[str, Any]) -> str:
        edge = self.edges[node]
        return edge(state) if callable(edge) else edge  # type: ignore[arg-type]


def _reducers() -> dict[str, Callable[[Any, Any], Any]]:
    hints = get_type_hints(SpeculationState, include_extras=True)
    return {key: hint.__metadata__[0] for key, hint in hints.items() if hasattr(hint, "__metadata__")}


_REDUCERS = _reducers()
"""Reducer of each `SpeculationState` key that has one, read from its `Annotated` hint."""


def _apply(state: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge a node's update into the state the way LangGraph does for `SpeculationState`."""
    for key, value in update.items():
        reducer = _REDUCERS.get(key)
        state[key] = reducer(state[key], value) if reducer and key in state else value


def _check_kind_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    checked = {}
    for kind, value in (thresholds or {}).items():
        if kind not in ACTION_KINDS:
            raise ConfigError(
                f"Unknown action kind {kind!r} in thresholds_by_kind; expected one of "
                f"{', '.join(ACTION_KINDS)}."
            )
        checked[kind] = check_threshold(value)
    return checked


def _check_arguments(
    proposer: Proposer | None,
    verifier: Verifier | None,
    fallback: Proposer | None,
    n_proposals: int,
    threshold: float,
) -> None:
    if proposer is None and fallback is None:
        raise ConfigError("Pass a proposer, a fallback model or both; got neither.")
    if verifier is not None and (proposer is None or fallback is None):
        raise ConfigError("A verifier needs both a proposer and a fallback model to escalate to.")
    if n_proposals < 1:
        raise ConfigError(f"n_proposals must be >= 1, got {n_proposals}.")
    if n_proposals > 1 and verifier is None:
        raise ConfigError(f"n_proposals={n_proposals} needs a verifier to pick among proposals.")
    check_threshold(threshold)


def route_after_verify(state: SpeculationState) -> Literal["finalize", "fallback"]:
    """Route to the fallback model when no proposal was accepted."""
    return "finalize" if state.get("chosen") is not None else "fallback"


class _Nodes:
    """The node functions, bound to one set of models and one policy.

    Each model-calling node has a sync and an async method; both run the model through
    `_capture`/`_acapture` and hand the result to one shared function that builds the update.
    """

    def __init__(
        self,
        *,
        proposer: Proposer | None,
        verifier: Verifier | None,
        fallback: Proposer | None,
        n_proposals: int,
        threshold: float,
        cost_model: CostModel,
        thresholds_by_kind: dict[str, float] | None = None,
        escalation_target: EscalationTarget | None = None,
    ) -> None:
        self.proposer = proposer
        self.verifier = verifier
        self.fallback = fallback
        self.n_proposals = n_proposals
        self.threshold = threshold
        self.cost_model = cost_model
        self.thresholds_by_kind = thresholds_by_kind or {}
        self.escalation_target = escalation_target

    def propose(self, state: SpeculationState) -> dict[str, Any]:
        """Ask the proposer for candidates; a proposer failure leaves none, which escalates."""
        assert self.proposer is not None
        result = _capture(lambda: self.proposer.propose(  # type: ignore[union-attr]
            state["messages"], state["tools"], n=self.n_proposals, seed=state.get("seed", 0)
        ))
        return self._proposed(state, result)

    async def apropose(self, state: SpeculationState) -> dict[str, Any]:
        """Async `propose`: the N proposals run concurrently when the proposer supports it."""
        assert self.proposer is not None
        result = await _acapture(lambda: apropose(
            self.proposer, state["messages"], state["tools"], n=self.n_proposals,  # type: ignore[arg-type]
            seed=state.get("seed", 0),
        ))
        return self._proposed(state, result)

    def _proposed(self, state: SpeculationState, result: tuple[Any, Exception | None]) -> dict[str, Any]:
        value, error = result
        if error is not None:
            assert self.proposer is not None
            message = describe_error(error)
            logger.warning("Proposer %s failed on %s: %s", self.proposer.name, state.get("step_id"),
                           message)
            return {"proposals": [], "calls": [], "errors": [f"proposer: {message}"]}
        proposals, calls = value
        return {"proposals": proposals, "calls": calls}

    def verify(self, state: SpeculationState) -> dict[str, Any]:
        """Score every proposal, then accept the best one at or above its threshold."""
        proposals = state.get("proposals", [])
        results = [self._score(state, proposal) for proposal in proposals]
        return self._verified(proposals, results)

    async def averify(self, state: SpeculationState) -> dict[str, Any]:
        """Async `verify`: the proposals are scored concurrently."""
        proposals = state.get("proposals", [])
        results = await asyncio.gather(*(self._ascore(state, proposal) for proposal in proposals))
        return self._verified(proposals, list(results))

    def _verified(
        self,
        proposals: list[Proposal],
        results: list[tuple[float | None, list[ModelCall], str | None]],
    ) -> dict[str, Any]:
        scores = [score for score, _, _ in results]
        calls = [call for _, score_calls, _ in results for call in score_calls]
        errors = [error for _, _, error in results if error]
        thresholds = [self.threshold_for(proposal) for proposal in proposals]
        target = self.escalation_target
        offset = target.offset() if target is not None else 0.0
        verdicts = tuple(
            verdict(proposal, score, threshold + offset)
            for proposal, score, threshold in zip(proposals, scores, thresholds, strict=True)
        )
        chosen = pick(tuple(scores), verdicts)
        if target is not None:
            target.record(step_margin(proposals, scores, thresholds), escalated=chosen is None)
        return {
            "scores": scores,
            "verdicts": list(verdicts),
            "chosen": chosen,
            "threshold": min(max(self.threshold + offset, 0.0), 1.0),
            "calls": calls,
            "errors": errors,
        }

    def threshold_for(self, proposal: Proposal) -> float:
        """Return the acceptance threshold of a proposal's action kind."""
        return threshold_for(proposal, self.threshold, self.thresholds_by_kind)

    def _score(
        self, state: SpeculationState, proposal: Proposal
    ) -> tuple[float | None, list[ModelCall], str | None]:
        assert self.verifier is not None
        if not proposal.valid:
            return None, [], None
        result = _capture(lambda: self.verifier.score(  # type: ignore[union-attr]
            state["messages"], state["tools"], proposal
        ))
        return self._scored(state, result)

    async def _ascore(
        self, state: SpeculationState, proposal: Proposal
    ) -> tuple[float | None, list[ModelCall], str | None]:
        assert self.verifier is not None
        if not proposal.valid:
            return None, [], None
        result = await _acapture(lambda: ascore(self.verifier, state["messages"], state["tools"],
                                                proposal))
        return self._scored(state, result)

    def _scored(
        self, state: SpeculationState, result: tuple[Any, Exception | None]
    ) -> tuple[float | None, list[ModelCall], str | None]:
        value, error = result
        if error is not None:
            assert self.verifier is not None
            # A verifier failure counts as REJECT: the decision fails closed.
            message = describe_error(error)
            logger.warning("Verifier %s failed on %s: %s", self.verifier.name, state.get("step_id"),
                           message)
            return None, [], f"verifier: {message}"
        score, calls = value
        return score, calls, None

    def run_fallback(self, state: SpeculationState) -> dict[str, Any]:
        """Let the fallback model act; its failure propagates with the step id."""
        assert self.fallback is not None
        result = _capture(lambda: self.fallback.propose(  # type: ignore[union-attr]
            state["messages"], state["tools"], n=1, seed=state.get("seed", 0)
        ))
        return self._fallen_back(state, result)

    async def arun_fallback(self, state: SpeculationState) -> dict[str, Any]:
        """Async `run_fallback`."""
        assert self.fallback is not None
        result = await _acapture(lambda: apropose(
            self.fallback, state["messages"], state["tools"], n=1,  # type: ignore[arg-type]
            seed=state.get("seed", 0),
        ))
        return self._fallen_back(state, result)

    def _fallen_back(self, state: SpeculationState, result: tuple[Any, Exception | None]) -> dict[str, Any]:
        value, error = result
        assert self.fallback is not None
        if error is not None:
            raise SpecAgentRuntimeError(
                f"Fallback model {self.fallback.name} failed on step {state.get('step_id')!r}: {error}"
            ) from error
        proposals, calls = value
        return {"fallback": proposals[0], "calls": calls}

    def finalize(self, state: SpeculationState) -> dict[str, Any]:
        """Assemble the decision record and price its calls."""
        calls = tuple(state.get("calls", []))
        proposals = tuple(state.get("proposals", []))
        chosen = state.get("chosen")
        if self.verifier is None and proposals:
            chosen = 0
        decision = Decision(
            decision=_decision_kind(self.proposer, self.verifier, state.get("fallback")),
            proposals=proposals,
            scores=tuple(state.get("scores", [])),
            verdicts=tuple(state.get("verdicts", [])),
            chosen=chosen,
            fallback=state.get("fallback"),
            threshold=state.get("threshold", self.threshold) if self.verifier is not None else None,
            calls=calls,
            cost=self.cost_model.call_cost(list(calls)),
            flops=self.cost_model.token_flops(list(calls)),
            latency_s=sum(call.latency_s for call in calls),
        )
        return {"decision": decision}


def describe_error(error: BaseException) -> str:
    """Return an error's type and message with secrets masked, cut to 200 characters.

    Provider errors can quote the request, keys included, and this text reaches logs and traces.
    """
    from spec_agent.redaction import redact_secrets

    return f"{type(error).__name__}: {redact_secrets(str(error))}"[:200]


def _decision_kind(
    proposer: Proposer | None, verifier: Verifier | None, fallback: Proposal | None
) -> Literal["accept", "escalate", "direct", "unverified"]:
    if proposer is None:
        return "direct"
    if verifier is None:
        return "unverified"
    return "escalate" if fallback is not None else "accept"


def _capture(call: Callable[[], _Result]) -> tuple[_Result | None, Exception | None]:
    """Run `call` and return its result or the exception it raised.

    LangGraph's control-flow exceptions (`GraphBubbleUp`: interrupts, parent commands) propagate.
    """
    try:
        return call(), None
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001 - the caller decides what a failure means
        return None, error


async def _acapture(
    call: Callable[[], Awaitable[_Result]],
) -> tuple[_Result | None, Exception | None]:
    """Await `call()` and return its result or the exception it raised, as `_capture` does."""
    try:
        return await call(), None
    except GraphBubbleUp:
        raise
    except Exception as error:  # noqa: BLE001 - the caller decides what a failure means
        return None, error
