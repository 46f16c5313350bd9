"""The speculation loop as a LangGraph state graph: propose, verify, fall back on REJECT.

    START -> propose -> verify --ACCEPT--> finalize -> END
       \\                   \\--REJECT--> fallback -> finalize
        \\-- (no proposer) ------------> fallback

Every configuration of the benchmark and every wrapped agent runs through this graph; the nodes
are thin shells over the decision functions in `spec_agent.decision`.
"""

from __future__ import annotations

import logging
import operator
from typing import Annotated, Any, Literal, TypedDict

from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph

from spec_agent.cost import CostModel, ModelCall
from spec_agent.decision import Decision, Proposal, check_threshold, decide
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from spec_agent.proposers import Proposer
from spec_agent.verifiers import Verifier

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

    Raises:
        ConfigError: The combination of arguments cannot make a decision.
    """
    _check_arguments(proposer, verifier, fallback, n_proposals, threshold)
    nodes = _Nodes(
        proposer=proposer,
        verifier=verifier,
        fallback=fallback,
        n_proposals=n_proposals,
        threshold=threshold,
        cost_model=cost_model or CostModel(),
    )
    graph = StateGraph(SpeculationState)
    graph.add_node("finalize", nodes.finalize)
    graph.add_edge("finalize", END)
    if fallback is not None:
        graph.add_node("fallback", nodes.run_fallback)
        graph.add_edge("fallback", "finalize")
    if proposer is None:
        graph.add_edge(START, "fallback")
        return graph.compile(name=name)
    graph.add_node("propose", nodes.propose)
    graph.add_edge(START, "propose")
    if verifier is None:
        graph.add_edge("propose", "finalize")
        return graph.compile(name=name)
    graph.add_node("verify", nodes.verify)
    graph.add_edge("propose", "verify")
    graph.add_conditional_edges("verify", route_after_verify, ["finalize", "fallback"])
    return graph.compile(name=name)


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
    """The node functions, bound to one set of models and one policy."""

    def __init__(
        self,
        *,
        proposer: Proposer | None,
        verifier: Verifier | None,
        fallback: Proposer | None,
        n_proposals: int,
        threshold: float,
        cost_model: CostModel,
    ) -> None:
        self.proposer = proposer
        self.verifier = verifier
        self.fallback = fallback
        self.n_proposals = n_proposals
        self.threshold = threshold
        self.cost_model = cost_model

    def propose(self, state: SpeculationState) -> dict[str, Any]:
        """Ask the proposer for candidates; a proposer failure leaves none, which escalates."""
        assert self.proposer is not None
        try:
            proposals, calls = self.proposer.propose(
                state["messages"], state["tools"], n=self.n_proposals, seed=state.get("seed", 0)
            )
        except GraphBubbleUp:
            raise
        except Exception as error:  # noqa: BLE001 - any proposer failure must fall back, not crash
            logger.warning("Proposer %s failed on %s: %s", self.proposer.name, state.get("step_id"),
                           error)
            return {"proposals": [], "calls": [], "errors": [f"proposer: {error}"]}
        return {"proposals": proposals, "calls": calls}

    def verify(self, state: SpeculationState) -> dict[str, Any]:
        """Score every proposal, then accept the best one at or above the threshold."""
        proposals = state.get("proposals", [])
        scores: list[float | None] = []
        calls: list[ModelCall] = []
        errors: list[str] = []
        for proposal in proposals:
            score, score_calls, error = self._score(state, proposal)
            scores.append(score)
            calls.extend(score_calls)
            errors.extend([error] if error else [])
        outcome = decide(tuple(proposals), tuple(scores), self.threshold)
        return {
            "scores": scores,
            "verdicts": list(outcome.verdicts),
            "chosen": outcome.chosen,
            "calls": calls,
            "errors": errors,
        }

    def _score(
        self, state: SpeculationState, proposal: Proposal
    ) -> tuple[float | None, list[ModelCall], str | None]:
        assert self.verifier is not None
        if not proposal.valid:
            return None, [], None
        try:
            score, calls = self.verifier.score(state["messages"], state["tools"], proposal)
        except GraphBubbleUp:
            raise
        except Exception as error:  # noqa: BLE001 - a verifier failure counts as REJECT
            logger.warning("Verifier %s failed on %s: %s", self.verifier.name, state.get("step_id"),
                           error)
            return None, [], f"verifier: {error}"
        return score, calls, None

    def run_fallback(self, state: SpeculationState) -> dict[str, Any]:
        """Let the fallback model act; its failure propagates with the step id."""
        assert self.fallback is not None
        try:
            proposals, calls = self.fallback.propose(
                state["messages"], state["tools"], n=1, seed=state.get("seed", 0)
            )
        except GraphBubbleUp:
            raise
        except Exception as error:
            raise SpecAgentRuntimeError(
                f"Fallback model {self.fallback.name} failed on step {state.get('step_id')!r}: {error}"
            ) from error
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
            threshold=self.threshold if self.verifier is not None else None,
            calls=calls,
            cost=self.cost_model.call_cost(list(calls)),
            flops=self.cost_model.token_flops(list(calls)),
            latency_s=sum(call.latency_s for call in calls),
        )
        return {"decision": decision}


def _decision_kind(
    proposer: Proposer | None, verifier: Verifier | None, fallback: Proposal | None
) -> Literal["accept", "escalate", "direct", "unverified"]:
    if proposer is None:
        return "direct"
    if verifier is None:
        return "unverified"
    return "escalate" if fallback is not None else "accept"
