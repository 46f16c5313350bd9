"""spec-agent: speculative agent actions for LangGraph.

A cheap model proposes each agent action, a verifier accepts or rejects it, and the strong model
acts only on rejection. Heavy dependencies (torch, transformers) load on first use, so importing
this package to wrap an agent stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "ACTION_KINDS": "spec_agent.actions",
    "Action": "spec_agent.actions",
    "ActionKind": "spec_agent.actions",
    "BudgetExceededError": "spec_agent.errors",
    "BufferedTraceWriter": "spec_agent.db.writer",
    "CallGrammar": "spec_agent.grammar",
    "CONFIGURATIONS": "spec_agent.graphs.configurations",
    "ChatModelJudge": "spec_agent.verifiers",
    "ChatModelProposer": "spec_agent.proposers",
    "ConfidenceVerifier": "spec_agent.verifiers",
    "ConfigError": "spec_agent.errors",
    "CostModel": "spec_agent.cost",
    "Decision": "spec_agent.decision",
    "DecisionRow": "spec_agent.db.store",
    "EscalationTarget": "spec_agent.escalation",
    "GenerationConfig": "spec_agent.hf",
    "GrammarConstraint": "spec_agent.constrained",
    "HFChatModel": "spec_agent.hf",
    "JudgeVerifier": "spec_agent.verifiers",
    "KindVerifier": "spec_agent.verifiers",
    "LangChainProposer": "spec_agent.proposers",
    "LocalProposer": "spec_agent.proposers",
    "ModelCall": "spec_agent.cost",
    "OpeningHead": "spec_agent.opening_head",
    "Proposal": "spec_agent.decision",
    "Proposer": "spec_agent.proposers",
    "Redactor": "spec_agent.redaction",
    "ReplaySetting": "spec_agent.db.replay",
    "SchemaVerifier": "spec_agent.verifiers",
    "SpecAgentChatModel": "spec_agent.chat_models",
    "SpecAgentError": "spec_agent.errors",
    "SpecAgentRuntimeError": "spec_agent.errors",
    "SpeculationBudget": "spec_agent.budget",
    "SpeculationLoop": "spec_agent.graphs.speculation",
    "SpeculativeMiddleware": "spec_agent.middleware",
    "SqlTraceStore": "spec_agent.db.store",
    "ToolCall": "spec_agent.actions",
    "TrainedVerifier": "spec_agent.training.verifier",
    "Verifier": "spec_agent.verifiers",
    "VerifierChain": "spec_agent.verifiers",
    "WritePolicy": "spec_agent.db.writer",
    "build_configuration": "spec_agent.graphs.configurations",
    "build_speculation_graph": "spec_agent.graphs.speculation",
    "decide": "spec_agent.decision",
    "fit_opening_head": "spec_agent.opening_head",
    "flush_traces": "spec_agent.node",
    "load_frame": "spec_agent.db.replay",
    "load_opening_head": "spec_agent.opening_head",
    "load_thresholds": "spec_agent.eval.calibration",
    "parse_action": "spec_agent.prompts",
    "redact_messages": "spec_agent.redaction",
    "redact_secrets": "spec_agent.redaction",
    "render_action": "spec_agent.prompts",
    "render_chat": "spec_agent.prompts",
    "rate_for_cost": "spec_agent.escalation",
    "replay": "spec_agent.db.replay",
    "replay_target": "spec_agent.db.replay",
    "speculative_node": "spec_agent.node",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spec_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
