"""Kind and full-action accuracy of a predicted action against an example's gold action.

Full-action matching follows the rules of BFCL's AST checker, re-implemented here:
- the kinds are equal, and for text kinds (`final_answer`, `ask_clarification`, `BLOCKED`) that is
  the whole match;
- for tool kinds, predicted and gold calls pair up one to one in any order (parallel calls), with
  the same function name;
- every parameter that the tool schema marks `required` is present, and no parameter is present
  that the schema or the accepted values do not list;
- every value equals the gold argument or one of the example's `accepted` values, after
  normalisation. Strings compare lower-cased without spaces and without the characters
  `,./-_*^`, with single quotes read as double quotes. An int counts as a float where the schema
  expects a number. Lists compare element by element and dicts key by key with the same rules;
- a parameter may be left out when `""` is among its accepted values (optional).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from spec_agent.actions import TOOL_KINDS, Action, ToolCall
from spec_agent.eval.schema import Example

_STRIPPED_CHARACTERS = re.compile(r"[ ,./\-_*^]")
OPTIONAL = ""
"""Accepted value that marks a parameter as optional (BFCL possible-answer convention)."""


def kind_matches(pred: Action | None, gold: Action) -> bool:
    """Tell whether the predicted action has the gold action's kind (None never matches)."""
    return pred is not None and pred.kind == gold.kind


def action_matches(pred: Action | None, example: Example) -> bool:
    """Tell whether the predicted action equals the example's gold action under BFCL's rules.

    Args:
        pred: The predicted action; None (no parseable prediction) never matches.
        example: The example whose gold `action`, `accepted` values and `tools` schemas apply.
    """
    gold = example.action
    if not kind_matches(pred, gold):
        return False
    if gold.kind not in TOOL_KINDS:
        return True
    assert pred is not None
    accepted = [
        _accepted_for(call, example.accepted, index) for index, call in enumerate(gold.tool_calls)
    ]
    schemas = {tool.get("name"): tool.get("parameters") or {} for tool in example.tools}
    return _calls_pair_up(list(pred.tool_calls), list(gold.tool_calls), accepted, schemas)


def normalise_string(text: str) -> str:
    """Normalise a string the way BFCL's checker does before comparing it."""
    return _STRIPPED_CHARACTERS.sub("", text).lower().replace("'", '"')


def _accepted_for(
    call: ToolCall, accepted: Sequence[Mapping[str, list[Any]]], index: int
) -> Mapping[str, list[Any]]:
    if index < len(accepted) and accepted[index]:
        return accepted[index]
    return {name: [value] for name, value in call.arguments.items()}


def _calls_pair_up(
    predicted: list[ToolCall],
    gold: list[ToolCall],
    accepted: list[Mapping[str, list[Any]]],
    schemas: Mapping[str, Any],
) -> bool:
    """Find a one-to-one pairing of predicted and gold calls by backtracking (lists are short)."""
    if len(predicted) != len(gold):
        return False
    if not gold:
        return True
    first_gold, rest_gold = gold[0], gold[1:]
    for index, candidate in enumerate(predicted):
        schema = schemas.get(first_gold.name) or {}
        if call_matches(candidate, first_gold, accepted[0], schema):
            rest_predicted = predicted[:index] + predicted[index + 1 :]
            if _calls_pair_up(rest_predicted, rest_gold, accepted[1:], schemas):
                return True
    return False


def call_matches(
    pred: ToolCall, gold: ToolCall, accepted: Mapping[str, list[Any]], schema: Mapping[str, Any]
) -> bool:
    """Tell whether one predicted call matches one gold call.

    Args:
        pred: The predicted call.
        gold: The gold call.
        accepted: Accepted values per parameter; `""` among them marks the parameter optional.
        schema: The tool's `parameters` JSON schema (`properties`, `required`); may be empty.
    """
    if pred.name != gold.name:
        return False
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if any(name not in pred.arguments for name in required):
        return False
    for name, value in pred.arguments.items():
        if name not in accepted or (properties and name not in properties):
            return False
        if not _value_accepted(value, accepted[name], properties.get(name) or {}):
            return False
    return all(
        name in pred.arguments or OPTIONAL in values for name, values in accepted.items()
    )


def _value_accepted(value: Any, accepted: list[Any], schema: Mapping[str, Any]) -> bool:
    return any(value_matches(value, candidate, schema) for candidate in accepted)


def value_matches(value: Any, expected: Any, schema: Mapping[str, Any] | None = None) -> bool:
    """Tell whether a predicted value equals one accepted value under BFCL's normalisation.

    Args:
        value: The predicted value.
        expected: One accepted value; a dict whose values are all lists is read as BFCL's nested
            layout (key -> accepted values), any other value literally.
        schema: The parameter's JSON schema; `type: number` lets an int stand for a float.
    """
    schema = schema or {}
    if isinstance(expected, dict):
        return _dict_matches(value, expected, schema)
    if isinstance(expected, list):
        return _list_matches(value, expected, schema)
    if isinstance(expected, str):
        return isinstance(value, str) and normalise_string(value) == normalise_string(expected)
    if isinstance(expected, bool) or isinstance(value, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(expected, (int, float)):
        return _number_matches(value, expected, schema)
    return value == expected


def _number_matches(value: Any, expected: int | float, schema: Mapping[str, Any]) -> bool:
    if not isinstance(value, (int, float)):
        return False
    float_expected = isinstance(expected, float) or schema.get("type") == "number"
    if isinstance(value, float) and not float_expected:
        return False
    return float(value) == float(expected)


def _list_matches(value: Any, expected: list[Any], schema: Mapping[str, Any]) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) != len(expected):
        return False
    items = schema.get("items") or {}
    return all(value_matches(item, want, items) for item, want in zip(value, expected))


def _dict_matches(value: Any, expected: dict[str, Any], schema: Mapping[str, Any]) -> bool:
    if not isinstance(value, dict):
        return False
    properties = schema.get("properties") or {}
    literal = set(value) == set(expected) and all(
        value_matches(value[key], expected[key], properties.get(key) or {}) for key in expected
    )
    if literal or not expected or not all(isinstance(item, list) for item in expected.values()):
        return literal
    # BFCL's nested layout: each key maps to its accepted values, and "" marks it optional.
    for key, item in value.items():
        if key not in expected or not _value_accepted(item, expected[key], properties.get(key) or {}):
            return False
    return all(key in value or OPTIONAL in values for key, values in expected.items())
