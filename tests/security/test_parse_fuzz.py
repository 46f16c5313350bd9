"""Property tests: untrusted model output through `parse_action` and the decision.

Any text a model writes must come back as a proposal, valid or invalid with its error recorded,
without an exception and without `eval` or `exec`. A valid proposal holds only JSON values, so it
can be stored and sent to a tool; an invalid one is always rejected.
"""

from __future__ import annotations

import ast
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spec_agent import verifiers
from spec_agent.actions import ACTION_KINDS, TOOL_KINDS
from spec_agent.decision import Proposal, decide
from spec_agent.errors import ConfigError
from spec_agent.prompts import parse_action, render_action
from tests.security.guards import no_eval
from tests.security.strategies import (
    ADVERSARIAL_EXPRESSIONS,
    DATA_EXPRESSIONS,
    untrusted_outputs,
    valid_actions,
)
from tests.security.tally import TALLY

FUZZ = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scores = st.one_of(
    st.none(), st.floats(), st.floats(min_value=0, max_value=1), st.integers(-3, 3),
    st.sampled_from(("0.9", "ACCEPT", b"1", [0.9], {"score": 1})),
)


def parse_counted(text: str) -> Proposal:
    """Parse under the eval guard and count the output, and any crash, in the tally."""
    TALLY["outputs fuzzed"] += 1
    try:
        with no_eval():
            proposal = parse_action(text)
    except Exception:
        TALLY["crashes"] += 1
        raise
    if not proposal.valid:
        TALLY["invalid proposals"] += 1
    return proposal


def check_proposal(proposal: Proposal, text: str) -> None:
    assert proposal.text == text
    if proposal.action is None:
        assert isinstance(proposal.error, str)
        assert proposal.error
        assert len(proposal.error) <= 300
        return
    assert proposal.error is None
    assert proposal.action.kind in ACTION_KINDS
    for call in proposal.action.tool_calls:
        # A plain or dotted name (`math.factorial`), never an expression.
        assert all(part.isidentifier() for part in call.name.split("."))
        assert all(isinstance(key, str) for key in call.arguments)
    # Strict JSON: no NaN, infinities, sets, bytes or non-string keys reach the store or a tool.
    json.dumps(proposal.to_dict(), allow_nan=False, sort_keys=True)


@FUZZ
@given(untrusted_outputs)
def test_parse_never_crashes(text):
    proposal = parse_counted(text)
    check_proposal(proposal, text)


@settings(max_examples=200, deadline=None, database=None)
@given(valid_actions())
def test_valid_action_round_trips(action):
    text = render_action(action)
    proposal = parse_counted(text)
    assert proposal.error is None
    assert proposal.action == action


@pytest.mark.parametrize("expression", ADVERSARIAL_EXPRESSIONS, ids=range(len(ADVERSARIAL_EXPRESSIONS)))
@pytest.mark.parametrize("kind", ["tool_call", "file_write"])
def test_adversarial_argument_is_invalid(expression, kind):
    proposal = parse_counted(f"{kind}: rm(file_name={expression})")
    assert proposal.action is None
    assert proposal.error


@pytest.mark.parametrize("expression", DATA_EXPRESSIONS, ids=range(len(DATA_EXPRESSIONS)))
def test_literal_argument_is_data(expression):
    proposal = parse_counted(f"file_write: rm(file_name={expression})")
    value = proposal.action.tool_call.arguments["file_name"]
    # Tuples come back as lists, so compare the JSON forms.
    assert json.dumps(value) == json.dumps(ast.literal_eval(expression))


@pytest.mark.parametrize(
    "text",
    [
        "tool_call: __import__(name='os').system(command='ls')",
        "tool_call: tools[0].run(command='ls')",
        "tool_call: (lambda: rm(file_name='a'))()",
        "tool_call: rm(file_name='a')[0]",
        "tool_call: getattr(rm, '__call__')(file_name='a')",
        "tool_call: rm(file_name='a') if True else ls()",
        "tool_call: [rm(file_name=x) for x in 'ab']",
    ],
)
def test_call_lookalikes_are_invalid(text):
    proposal = parse_counted(text)
    assert proposal.action is None
    assert "name(key=value" in proposal.error or "call syntax" in proposal.error


def test_dotted_tool_name_is_data_not_code():
    # Namespaced tools (`math.factorial`) parse to their dotted name; nothing is looked up, and the
    # schema check rejects a name that no offered tool has.
    proposal = parse_counted("tool_call: os.system(command='ls')")
    assert proposal.action.tool_call.name == "os.system"
    assert proposal.action.tool_call.arguments == {"command": "ls"}
    tools = [{"name": "math.factorial", "parameters": {"properties": {"n": {"type": "integer"}}}}]
    assert verifiers.SchemaVerifier().problems(tools, proposal) == ["unknown tool 'os.system'"]


def test_dunder_tool_name_is_data_not_code():
    # A dunder name parses as a tool name like any other; only a dispatcher or verifier may use it.
    proposal = parse_counted("tool_call: __import__(name='os')")
    assert proposal.action.tool_call.name == "__import__"
    assert proposal.action.tool_call.arguments == {"name": "os"}


@settings(FUZZ, max_examples=300)
@given(st.lists(untrusted_outputs, min_size=1, max_size=3), st.data())
def test_decide_accepts_only_valid_scored(texts, data):
    proposals = tuple(parse_counted(text) for text in texts)
    drawn = tuple(data.draw(scores) for _ in proposals)
    threshold = data.draw(st.floats(min_value=0, max_value=1))
    try:
        with no_eval():
            outcome = decide(proposals, drawn, threshold)
    except Exception:
        TALLY["crashes"] += 1
        raise
    for proposal, score, verdict in zip(proposals, drawn, outcome.verdicts, strict=True):
        if verdict == "ACCEPT":
            assert proposal.valid
            assert isinstance(score, (int, float))
            assert math.isfinite(score)
            assert threshold <= score <= 1
    if outcome.chosen is not None:
        assert outcome.verdicts[outcome.chosen] == "ACCEPT"
    assert outcome.escalate is (outcome.chosen is None)


def test_decide_length_mismatch_raises_config_error():
    proposal = parse_action("final_answer: done")
    with pytest.raises(ConfigError, match="1 scores for 2 proposals"):
        decide((proposal, proposal), (0.9,), 0.5)


SchemaVerifier = getattr(verifiers, "SchemaVerifier", None)


@pytest.mark.skipif(SchemaVerifier is None, reason="spec_agent.verifiers has no SchemaVerifier yet")
@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(untrusted_outputs)
def test_schema_verifier_never_crashes(text):
    tools = [{"name": "rm", "description": "Remove a file.",
              "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}},
                             "required": ["file_name"]}}]
    proposal = parse_counted(text)
    try:
        with no_eval():
            score, _calls = SchemaVerifier().score([{"role": "user", "content": "x"}], tools, proposal)
    except Exception:
        TALLY["crashes"] += 1
        raise
    if score is not None and score > 0 and proposal.valid and proposal.action.kind in TOOL_KINDS:
        for call in proposal.action.tool_calls:
            assert call.name == "rm"
            assert isinstance(call.arguments.get("file_name"), str)
