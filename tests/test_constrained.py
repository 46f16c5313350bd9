"""Grammar-constrained decoding: the logits processor alone, then inside `HFChatModel.generate`."""

from __future__ import annotations

import math

import pytest
import torch

from spec_agent.actions import Action, ToolCall
from spec_agent.constrained import GrammarConstraint
from spec_agent.grammar import CallGrammar
from spec_agent.hf import GenerationConfig, HFChatModel
from spec_agent.prompts import parse_action
from spec_agent.proposers import LocalProposer
from tests.tiny_models import build_causal_lm

TOOLS = [{"name": "cat", "parameters": {"properties": {"file_name": {"type": "string"}},
                                         "required": ["file_name"]}}]
VOCABULARY = ["", " cat", "(", "file_name", "=", "'a'", ")", ")\n", "\n", "rm", ", "]
STOP = 0


def step(constraint: GrammarConstraint, generated: list[int], preferred: list[int]) -> torch.Tensor:
    """Run the processor once on scores that rank `preferred` first, in that order."""
    scores = torch.zeros(1, len(VOCABULARY))
    for rank, token in enumerate(preferred):
        scores[0, token] = 10.0 - rank
    ids = torch.tensor([[99, *generated]])
    return constraint(ids, scores)


def make(greedy: bool = True, width: int = 3) -> GrammarConstraint:
    return GrammarConstraint(CallGrammar(TOOLS), VOCABULARY, start=1, rows=1, stop_ids=[STOP],
                             greedy=greedy, width=width)


def allowed(scores: torch.Tensor) -> set[int]:
    return {index for index, value in enumerate(scores[0].tolist()) if math.isfinite(value)}


def test_greedy_keeps_the_best_fitting_token():
    constraint = make()
    assert allowed(step(constraint, [], preferred=[9, 1, 2])) == {1}


def test_line_ends_only_when_accepted():
    constraint = make(greedy=False, width=len(VOCABULARY))
    generated = [1, 2, 3, 4, 5]
    for index in range(len(generated)):
        step(constraint, generated[:index], preferred=[generated[index]])
    # After `cat(file_name='a'`, neither a newline nor a stop token fits, and `, ` does not either,
    # because cat has no other parameter. `)` and `)\n` do.
    assert allowed(step(constraint, generated, preferred=[8, STOP, 6, 7])) == {6, 7}
    assert allowed(step(constraint, [*generated, 6], preferred=[8, STOP, 10])) == {8, STOP, 10}


def test_unfit_best_tokens_scan_the_rest():
    constraint = make(width=2)
    assert allowed(step(constraint, [], preferred=[9, 8, 2, 1])) == {1}
    assert constraint.full_scans == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    directory = build_causal_lm(tmp_path_factory.mktemp("tiny"))
    return HFChatModel(str(directory), role="cheap", generation=GenerationConfig(max_new_tokens=24))


def test_random_model_calls_given_tools(tiny_model):
    """A random model's free payloads never parse; within the grammar every finished one does."""
    tools = [{"name": "ls", "parameters": {"properties": {"a": {"type": "boolean"}}, "required": ["a"]}}]
    openings = ("file_read:",)
    greedy, _ = tiny_model.generate([{"role": "user", "content": "list files"}], openings=openings, tools=tools)
    sampled, _ = tiny_model.generate([{"role": "user", "content": "list files"}], n=4, sample=True, seed=3,
                                     openings=openings, tools=tools)
    for item in greedy + sampled:
        proposal = parse_action(item.text)
        if item.completion_tokens < tiny_model.generation.max_new_tokens:
            assert proposal.valid, item.text
            assert proposal.action.tool_call.name == "ls"
            assert isinstance(proposal.action.tool_call.arguments["a"], bool)
        assert 0.0 <= item.confidence <= 1.0


def test_proposer_constrain_calls_flag(tiny_model):
    messages = [{"role": "user", "content": "list files"}]
    tools = [{"name": "ls", "parameters": {"properties": {}, "required": []}}]
    proposals, _ = LocalProposer(tiny_model, openings=("file_read:",)).propose(messages, tools)
    assert proposals[0].action == Action(kind="file_read", tool_calls=(ToolCall(name="ls"),))
    free, _ = LocalProposer(tiny_model, openings=("file_read:",), constrain_calls=False).propose(messages, tools)
    assert not free[0].valid
