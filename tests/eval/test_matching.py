"""Tests of kind and full-action matching under BFCL's AST-checker rules."""

from __future__ import annotations

from typing import Any

import pytest

from spec_agent.actions import Action, ToolCall
from spec_agent.eval.matching import action_matches, kind_matches, normalise_string, value_matches
from spec_agent.eval.schema import Example

TOOLS = [
    {
        "name": "book",
        "description": "Book a trip.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "nights": {"type": "integer"},
                "budget": {"type": "number", "x-bfcl-type": "float"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "prefs": {"type": "object", "properties": {"room": {"type": "string"}, "view": {"type": "string"}}},
                "note": {"type": "string"},
            },
            "required": ["city", "nights"],
        },
    },
    {"name": "ls", "description": "List files.", "parameters": {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": []}},
]
ACCEPTED = {
    "city": ["New York", "NYC"],
    "nights": [3],
    "budget": [500.0],
    "tags": [["Quiet", "sea-view"]],
    "prefs": [{"room": ["double"], "view": ["", "sea"]}],
    "note": [""],
}
GOLD_ARGUMENTS = {"city": "New York", "nights": 3, "budget": 500.0, "tags": ["Quiet", "sea-view"], "prefs": {"room": "double"}}


def _example(*calls: ToolCall, kind: str = "tool_call", accepted: list[dict[str, list[Any]]] | None = None) -> Example:
    return Example(
        id="x",
        source="test",
        scenario="s",
        messages=[{"role": "user", "content": "go"}],
        tools=TOOLS,
        action=Action(kind=kind, tool_calls=calls),
        accepted=accepted or [],
    )


BOOK_EXAMPLE = _example(ToolCall(name="book", arguments=GOLD_ARGUMENTS), accepted=[ACCEPTED])


def _book(**changes: Any) -> Action:
    arguments = {**GOLD_ARGUMENTS, **changes}
    return Action(kind="tool_call", tool_calls=(ToolCall(name="book", arguments={k: v for k, v in arguments.items() if v is not None}),))


@pytest.mark.parametrize(
    ("case", "pred", "expected"),
    [
        ("gold itself", _book(), True),
        ("other accepted value", _book(city="NYC"), True),
        ("string normalised", _book(city="new-york"), True),
        ("string wrong", _book(city="Boston"), False),
        ("int for float", _book(budget=500), True),
        ("float for int", _book(nights=3.0), False),
        ("bool for int", _book(nights=True), False),
        ("optional absent", _book(budget=None, tags=None, prefs=None), False),
        ("optional note given empty", _book(note=""), True),
        ("optional note given text", _book(note="hi"), False),
        ("missing required", _book(city=None), False),
        ("unexpected param", _book(floor=2), False),
        ("list normalised", _book(tags=["quiet", "Sea View"]), True),
        ("list order matters", _book(tags=["sea-view", "Quiet"]), False),
        ("nested optional key given", _book(prefs={"room": "Double", "view": "sea"}), True),
        ("nested unexpected key", _book(prefs={"room": "double", "bed": "king"}), False),
        ("nested missing key", _book(prefs={"view": "sea"}), False),
        ("wrong name", Action(kind="tool_call", tool_calls=(ToolCall(name="ls", arguments={}),)), False),
        ("wrong kind", Action(kind="retrieval", tool_calls=(ToolCall(name="book", arguments=GOLD_ARGUMENTS),)), False),
        ("no prediction", None, False),
    ],
)
def test_action_matches_table(case: str, pred: Action | None, expected: bool) -> None:
    assert action_matches(pred, BOOK_EXAMPLE) is expected, case


def test_optional_params_absent_when_allowed() -> None:
    accepted = {**ACCEPTED, "budget": [500.0, ""], "tags": ["", ["Quiet", "sea-view"]], "prefs": ["", {"room": ["double"]}]}
    example = _example(ToolCall(name="book", arguments=GOLD_ARGUMENTS), accepted=[accepted])
    assert action_matches(_book(budget=None, tags=None, prefs=None), example)


def test_parallel_order_insensitive() -> None:
    first = ToolCall(name="ls", arguments={"a": True})
    second = ToolCall(name="ls", arguments={"a": False})
    example = _example(first, second)
    swapped = Action(kind="tool_call", tool_calls=(second, first))
    assert action_matches(swapped, example)
    assert not action_matches(Action(kind="tool_call", tool_calls=(first, first)), example)
    assert not action_matches(Action(kind="tool_call", tool_calls=(first,)), example)


def test_gold_arguments_used_without_accepted() -> None:
    example = _example(ToolCall(name="ls", arguments={"a": True}))
    assert action_matches(Action(kind="tool_call", tool_calls=(ToolCall(name="ls", arguments={"a": True}),)), example)
    assert not action_matches(Action(kind="tool_call", tool_calls=(ToolCall(name="ls", arguments={}),)), example)


@pytest.mark.parametrize("kind", ["final_answer", "ask_clarification", "BLOCKED"])
def test_text_kinds_match_on_kind(kind: str) -> None:
    example = _example(kind=kind)
    assert action_matches(Action(kind=kind, content="anything"), example)
    assert not action_matches(Action(kind="final_answer" if kind != "final_answer" else "BLOCKED"), example)


def test_kind_matches_cases() -> None:
    gold = Action(kind="BLOCKED")
    assert kind_matches(Action(kind="BLOCKED", content="no tool"), gold)
    assert not kind_matches(Action(kind="final_answer"), gold)
    assert not kind_matches(None, gold)


def test_normalise_string_strips_bfcl_punctuation() -> None:
    assert normalise_string("April 1, 2024") == normalise_string("april 1 2024")
    assert normalise_string("a_b-c/d.e*f^g") == "abcdefg"
    assert normalise_string("it's") == 'it"s'


def test_value_matches_literal_dict_with_lists() -> None:
    assert value_matches({"tags": ["a", "b"]}, {"tags": ["a", "b"]})
    assert not value_matches({"tags": ["a"]}, {"tags": ["a", "b"]})
