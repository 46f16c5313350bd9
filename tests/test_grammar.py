"""The call grammar accepts exactly the payloads that parse and fit the tool schemas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_agent.actions import TOOL_KINDS, Action, ToolCall
from spec_agent.grammar import CallGrammar
from spec_agent.prompts import parse_action, render_action

TOOLS = [
    {"name": "ls", "parameters": {"properties": {"a": {"type": "boolean"}}, "required": []}},
    {"name": "cat", "parameters": {"properties": {"file_name": {"type": "string"}}, "required": ["file_name"]}},
    {"name": "math.hypot", "parameters": {
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "scale": {"type": "integer"}},
        "required": ["x", "y"]}},
    {"name": "post", "parameters": {"properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
        "anything": {}}, "required": []}},
    {"name": "book", "parameters": {
        "properties": {"from": {"type": "string"}, "to": {"type": "string"}}, "required": ["from", "to"]}},
]


def payload(action: Action) -> str:
    return render_action(action).split(":", 1)[1]


def accepted(text: str, tools=TOOLS) -> bool:
    grammar = CallGrammar(tools)
    state = grammar.feed(grammar.start(), text)
    return state is not None and grammar.accepts(state)


@pytest.mark.parametrize(
    "text",
    [
        " ls()",
        "ls(a=True)",
        " cat(file_name='a b.txt'), cat(file_name=\"it's\")",
        " ls(), ls(a=True), ls(a=False)",
        " math.hypot(x=-3.5, y=4e2, scale=-2)",
        " math.hypot(x=0, y=1., scale=None)",
        " post(tags=['a', \"b\"], meta={'k': [1, {'n': None}]}, anything=(1, 'x'))",
        " post(tags=[], meta={}, anything=False)",
        " book(**{'from': 'SFO', 'to': 'JFK'})",
        " book(to='JFK', **{'from': 'SFO'})",
        " cat(file_name='a\\'b\\\\')",
    ],
)
def test_accepts_fitting_payloads(text):
    assert accepted(text)
    assert parse_action("tool_call:" + text).valid


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (" rm(path='a')", "unknown tool"),
        (" cat(path='a')", "unknown parameter"),
        (" cat(file_name='a', file_name='b')", "repeated parameter"),
        (" cat()", "missing required parameter"),
        (" math.hypot(x=1)", "missing required parameter"),
        (" math.hypot(x='1', y=2)", "string for a number"),
        (" math.hypot(x=1, y=2, scale=1.5)", "float for an integer"),
        (" math.hypot(x=1, y=02)", "leading zero"),
        (" cat(file_name=None)", "None for a required parameter"),
        (" cat('a.txt')", "positional argument"),
        (" cat(file_name='a\nb')", "newline in a string"),
        (" cat(file_name='a'", "unclosed call"),
        (" ls() ls()", "calls without a comma"),
        (" post(tags=['a' 'b'])", "implicit string concatenation"),
        (" post(meta={1: 2})", "non-string dict key"),
        (" ls(a=__import__('os'))", "an expression as value"),
        (" book(from='SFO', to='JFK')", "keyword as parameter name"),
        (" book(**{'from': 'SFO'}, to='JFK')", "an argument after the ** dict"),
        ("", "empty payload"),
        ("  ls()", "two spaces after the colon"),
        (" ls( a=True)", "space inside the parentheses"),
        (" ls(a =True)", "space before ="),
        (" cat(file_name='a'),cat(file_name='b')", "no space after the comma"),
        (" post(tags=['a',])", "trailing comma"),
        (" post(meta={'k':1})", "no space after the dict colon"),
        (" ls() ", "trailing space"),
        (" ls(), ls(), ls()", "a call after a repeated call"),
        (" cat(file_name='a'), ls(), cat(file_name='a'), ls(a=True)", "a call after a later repeat"),
    ],
)
def test_rejects_unfit_payloads(text, why):
    assert not accepted(text), why


def test_accepted_payload_prefixes_live():
    grammar = CallGrammar(TOOLS)
    text = " math.hypot(x=-3.5, y=4, scale=7), post(tags=['x'])"
    assert text[:33].endswith(")")
    state = grammar.start()
    for index, character in enumerate(text):
        state = grammar.feed(state, character)
        assert state is not None, text[: index + 1]
        assert grammar.accepts(state) == (text[: index + 1] in {text[:33], text})


def test_repeated_call_ends_the_line():
    grammar = CallGrammar(TOOLS)
    repeated = grammar.feed(grammar.start(), " ls(a=True), ls(a=True)")
    assert grammar.accepts(repeated)
    assert grammar.feed(repeated, ",") is None
    assert grammar.feed(grammar.start(), " ls(a=True), ls(a=False),") is not None


def test_comma_after_last_parameter_rejected():
    grammar = CallGrammar(TOOLS)
    assert grammar.feed(grammar.start(), " cat(file_name='a'") is not None
    assert grammar.feed(grammar.start(), " cat(file_name='a',") is None


@settings(max_examples=300, deadline=None)
@given(choices=st.lists(st.integers(0, 10**6), min_size=1, max_size=80))
def test_no_prefix_is_a_dead_end(choices):
    """Whatever fitting characters decoding picks, some character can follow or the line can end."""
    tools = [*TOOLS, {"name": "odd", "parameters": {"properties": {"x": {"type": []}}, "required": ["x"]}}]
    grammar = CallGrammar(tools)
    # Structure and the names' letters only, so that walks reach deep into argument lists.
    words = [tool["name"] for tool in tools] + [key for tool in tools for key in tool["parameters"]["properties"]]
    alphabet = sorted(set("".join(words)) | set("'(),=[]{}: *-.019TrueFalsNon"))
    state = grammar.start()
    for choice in choices:
        fitting = [(character, after) for character in alphabet
                   if (after := grammar.feed(state, character)) is not None]
        if not fitting:
            # Only the end of the line may follow a repeated call.
            assert grammar.accepts(state), state
            return
        state = fitting[choice % len(fitting)][1]


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=3))
def test_rendered_free_values_accepted(values):
    names = [f"p{index}" for index in range(len(values))]
    tools = [{"name": "tool.do", "parameters": {"properties": {name: {} for name in names}, "required": names}}]
    action = Action(kind="tool_call", tool_calls=(ToolCall(name="tool.do", arguments=dict(zip(names, values))),))
    assert accepted(payload(action), tools)
    assert parse_action(render_action(action)).valid


@pytest.mark.slow
def test_real_gold_payloads_accepted():
    from spec_agent._commands import default_dataset_dir
    from spec_agent.eval.dataset import load_split

    folder = default_dataset_dir()
    if not (folder / "eval.jsonl").is_file():
        pytest.skip(f"no built dataset in {folder}; run `spec-agent data build`")
    calls = [example for example in load_split(folder, "eval") if example.action.kind in TOOL_KINDS]
    rejected = [example.id for example in calls if not accepted(payload(example.action), example.tools)]
    # The rest are gold calls that break their own schemas: a string for an integer id, a call of
    # a tool that the example does not list.
    assert len(rejected) / len(calls) < 0.02, rejected[:10]
