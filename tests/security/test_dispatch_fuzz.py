"""Property tests: untrusted calls through the BFCL dispatcher on a real `GorillaFileSystem`.

`parse_call` must fail only with its documented errors, and `Environment.execute` must turn any
call into an observation (output text and an error flag) without raising, without `eval` or
`exec`, and without running a private method. In the full path (parse, schema check, decision,
dispatch) no call that the decision did not accept reaches the backend.
"""

from __future__ import annotations

import json
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spec_agent import assets
from spec_agent.actions import TOOL_KINDS, ToolCall
from spec_agent.decision import decide
from spec_agent.eval.bfcl import BackendLoader, Environment, parse_call
from spec_agent.prompts import parse_action
from tests.security.guards import no_eval
from tests.security.strategies import call_text, json_values, untrusted_outputs
from tests.security.tally import TALLY

pytestmark = pytest.mark.skipif(
    not assets.is_fetched("bfcl-eval"), reason="the bfcl-eval asset is not fetched; run "
    "`spec-agent assets fetch bfcl-eval` with SPEC_AGENT_CACHE set"
)

FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROOT = {"alex": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "line one\nline two\n"},
    "docs": {"type": "directory", "contents": {"a.md": {"type": "file", "content": "# A"}}},
}}}
PUBLIC_TOOLS = ("pwd", "ls", "cd", "mkdir", "touch", "echo", "cat", "find", "wc", "sort", "grep",
                "du", "tail", "diff", "mv", "rm", "rmdir", "cp")


class Spy:
    """Records every method of a backend instance that runs, private ones included."""

    def __init__(self, instance) -> None:
        self.ran: list[str] = []
        for name, attribute in vars(type(instance)).items():
            if callable(attribute) and not isinstance(attribute, type):
                setattr(instance, name, types.MethodType(self._wrap(name, attribute), instance))

    def _wrap(self, name, function):
        def recorded(instance, *args, **kwargs):
            self.ran.append(name)
            return function(instance, *args, **kwargs)

        return recorded


@pytest.fixture(scope="module")
def environment():
    # Load the backend module before any test patches `exec`, which the import system uses.
    loader = BackendLoader(bfcl_root=assets.resolve_data("bfcl-eval"))
    environment = Environment.create(loader, classes=["GorillaFileSystem"],
                                     initial_config={"GorillaFileSystem": {"root": ROOT}},
                                     long_context=False)
    spy = Spy(environment.instances["GorillaFileSystem"])
    return environment, spy


def schema_tools(environment) -> list[dict]:
    import inspect

    tools = []
    for name in PUBLIC_TOOLS:
        method = environment.method(name)
        parameters = inspect.signature(method).parameters
        tools.append({"name": name, "parameters": {"type": "object", "properties": {
            parameter: {} for parameter in parameters}, "required": [
            parameter for parameter, value in parameters.items() if value.default is value.empty]}})
    return tools


def schema_score(tools, proposal) -> float | None:
    """Score 1.0 when every call names an offered tool with known, complete arguments."""
    if proposal.action is None or proposal.action.kind not in TOOL_KINDS:
        return 0.0
    schemas = {tool["name"]: tool["parameters"] for tool in tools}
    for call in proposal.action.tool_calls:
        schema = schemas.get(call.name)
        if schema is None or not set(call.arguments) <= set(schema["properties"]):
            return 0.0
        if not set(schema["required"]) <= set(call.arguments):
            return 0.0
    return 1.0


def execute_counted(environment, call: ToolCall) -> tuple[str, bool]:
    TALLY["outputs fuzzed"] += 1
    try:
        with no_eval():
            return environment.execute(call)
    except Exception:
        TALLY["crashes"] += 1
        raise


@FUZZ
@given(st.one_of(call_text(), st.text(max_size=80)))
def test_parse_call_raises_only_documented(text):
    TALLY["outputs fuzzed"] += 1
    try:
        with no_eval():
            call = parse_call(text)
    except (SyntaxError, ValueError):
        TALLY["invalid proposals"] += 1
        return
    except Exception:
        TALLY["crashes"] += 1
        raise
    assert call.name.isidentifier()


@FUZZ
@given(
    name=st.one_of(st.sampled_from(PUBLIC_TOOLS), st.sampled_from(
        ("__init__", "_load_scenario", "__class__", "__reduce__", "_current_dir", "root",
         "long_context", "eval", "exec", "system", "__import__", "", "x" * 300))),
    arguments=st.dictionaries(
        st.one_of(st.sampled_from(("file_name", "folder", "dir_name", "content", "lines", "mode",
                                   "source", "destination", "pattern", "self", "a")),
                  st.text(max_size=8)),
        json_values, max_size=3),
)
def test_execute_never_raises(environment, name, arguments):
    environment, spy = environment
    before = len(spy.ran)
    output, is_error = execute_counted(environment, ToolCall(name=name, arguments=arguments))
    assert isinstance(output, str)
    assert isinstance(is_error, bool)
    ran = spy.ran[before:]
    if name not in PUBLIC_TOOLS:
        assert ran == []
        assert is_error is True
    else:
        assert ran[:1] == [name]


@FUZZ
@given(untrusted_outputs)
def test_only_accepted_calls_reach_backend(environment, text):
    environment, spy = environment
    tools = schema_tools(environment)
    TALLY["outputs fuzzed"] += 1
    with no_eval():
        proposal = parse_action(text)
        outcome = decide((proposal,), (schema_score(tools, proposal),), 1.0)
    if not proposal.valid:
        TALLY["invalid proposals"] += 1
    before = len(spy.ran)
    if outcome.chosen is not None:
        for call in proposal.action.tool_calls:
            execute_counted(environment, call)
            TALLY["accepted tool executions"] += 1
    ran = spy.ran[before:]
    accepted = [] if outcome.chosen is None else [call.name for call in proposal.action.tool_calls]
    unaccepted = [name for name in ran if name not in PUBLIC_TOOLS and not name.startswith("_")
                  or name in PUBLIC_TOOLS and name not in accepted]
    TALLY["unaccepted tool executions"] += len(unaccepted)
    assert unaccepted == []
    # Public tools call private helpers; every run must start at an accepted public tool.
    assert [name for name in ran if name in PUBLIC_TOOLS] == [
        name for name in accepted if name in PUBLIC_TOOLS
    ]


def test_private_and_dunder_names_never_run(environment):
    environment, spy = environment
    before = len(spy.ran)
    for name in ("__init__", "_load_scenario", "_navigate_to_directory", "__reduce_ex__"):
        output, is_error = execute_counted(environment, ToolCall(name=name, arguments={}))
        assert is_error is True
        assert "unknown function" in output
    assert spy.ran[before:] == []


def test_wrong_argument_types_are_observations(environment):
    environment, _spy = environment
    for call in (ToolCall(name="cd", arguments={"folder": 12}),
                 ToolCall(name="tail", arguments={"file_name": "notes.txt", "lines": "many"}),
                 ToolCall(name="echo", arguments={"content": None, "file_name": ["a"]}),
                 ToolCall(name="ls", arguments={"self": 1})):
        output, is_error = execute_counted(environment, call)
        assert isinstance(output, str)
        assert is_error is True, (call, output)


def test_serialised_outputs_are_json_or_text(environment):
    environment, _spy = environment
    output, is_error = execute_counted(environment, ToolCall(name="ls", arguments={"a": True}))
    assert is_error is False
    assert "current_directory_content" in json.loads(output)
