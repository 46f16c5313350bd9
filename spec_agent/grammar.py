"""A character-level recogniser of the tool-call payloads that an action line carries.

`HFChatModel` constrains decoding with it after a tool kind's opening (`tool_call:`). Every token
must keep the text a prefix of a list of calls that fit the available tools:
- each call names one of the tools;
- each argument is a parameter of that tool's schema, given once, with a value of the declared type;
- `)` comes only after every required argument;
- a call that repeats an earlier one character for character ends the line.
The payload then always parses and fits the schemas. Whether the values are right is still up to
the model.

The recogniser is a pushdown automaton over characters. Its state is an immutable tuple of frames,
so one state can be extended by many candidate tokens without copies. Spacing is the one
`render_action` writes (`repr`'s): `, ` between items, `: ` in dicts, none around `=` or inside
brackets. A model fine-tuned on that format stays in it, and a stray space cannot grow into a
run of spaces that ends only at the token budget.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

State = tuple[tuple[Any, ...], ...]
"""A recogniser state: the stack of frames, innermost last."""

_TYPE_CLASSES: dict[str, frozenset[str]] = {
    "string": frozenset({"str"}),
    "str": frozenset({"str"}),
    "integer": frozenset({"int"}),
    "int": frozenset({"int"}),
    "number": frozenset({"int", "float"}),
    "float": frozenset({"int", "float"}),
    "boolean": frozenset({"bool"}),
    "bool": frozenset({"bool"}),
    "array": frozenset({"list"}),
    "list": frozenset({"list"}),
    "tuple": frozenset({"list"}),
    "object": frozenset({"dict"}),
    "dict": frozenset({"dict"}),
    "null": frozenset({"none"}),
}
_ANY_CLASS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
_NUMBER_PREFIX = re.compile(r"-?(0|[1-9][0-9]*)?")
_FLOAT_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]*)?)?")
_INT_COMPLETE = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT_COMPLETE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class ValueSpec:
    """What a value may be: its type classes and the spec of list items.

    A schema's `enum` is not enforced: BFCL's gold calls pass values outside their own enums
    (`'dontcare'`, other letter case), and its checker accepts them.
    """

    classes: frozenset[str] = _ANY_CLASS
    """Allowed Python literal classes: `str`, `int`, `float`, `bool`, `list`, `dict`, `none`."""
    items: ValueSpec | None = None
    """Spec of each item of a list. None allows any value."""

    @classmethod
    def from_schema(cls, schema: Any) -> ValueSpec:
        """Read a JSON-schema property (`type`, `items`). Whatever it leaves out allows any value."""
        if not isinstance(schema, Mapping):
            return cls()
        declared = schema.get("type")
        names = declared if isinstance(declared, list) else [declared]
        classes: frozenset[str] = frozenset()
        for name in names:
            if not isinstance(name, str) or name not in _TYPE_CLASSES:
                classes = _ANY_CLASS
                break
            classes |= _TYPE_CLASSES[name]
        # `"type": []` names no type at all. Reading it as any keeps the value from being a dead end.
        classes = classes or _ANY_CLASS
        items = cls.from_schema(schema["items"]) if isinstance(schema.get("items"), Mapping) else None
        return cls(classes=classes, items=items)


_ANY = ValueSpec()
_DICT = ValueSpec(frozenset({"dict"}))


@dataclass(frozen=True)
class _Tool:
    parameters: dict[str, ValueSpec]
    required: frozenset[str]
    keyword_names: frozenset[str]
    """Parameters that cannot be Python keyword arguments, so they go into one `**{...}`."""


class CallGrammar:
    """The language of one line of comma-separated calls of the given tools.

    Args:
        tools: Tool schemas as the benchmark and `render_chat` take them: `name`, and
            `parameters` with `properties` and `required`.
    """

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self.tools: dict[str, _Tool] = {}
        for tool in tools:
            parameters = tool.get("parameters") or {}
            properties = parameters.get("properties") or {}
            required = frozenset(str(key) for key in parameters.get("required") or () if key in properties)
            specs = {str(key): ValueSpec.from_schema(value) for key, value in properties.items()}
            # An optional parameter may be passed as None, as BFCL's gold calls do.
            specs = {key: spec if key in required else dataclasses.replace(spec, classes=spec.classes | {"none"})
                     for key, spec in specs.items()}
            self.tools[str(tool["name"])] = _Tool(
                parameters=specs,
                required=required,
                keyword_names=frozenset(
                    str(key) for key in properties if not str(key).isidentifier() or keyword.iskeyword(key)
                ),
            )
        self._name_prefixes = _prefixes(self.tools)
        self._key_prefixes = {
            name: _prefixes(key for key in tool.parameters if key not in tool.keyword_names)
            for name, tool in self.tools.items()
        }

    def start(self) -> State:
        """Return the state before the payload's first character."""
        return (("calls", "start", frozenset(), "", False),)

    def feed(self, state: State, text: str) -> State | None:
        """Return the state after `text`, or None when `text` leaves the language."""
        for character in text:
            next_state = self._call_step(state, character)
            if next_state is None:
                return None
            state = next_state
        return state

    def accepts(self, state: State) -> bool:
        """Tell whether the payload may end in this state."""
        return len(state) == 1 and state[0][1] == "after"

    def _call_step(self, state: State, char: str) -> State | None:
        """Step, and keep in the bottom frame the text of the open call and of the closed ones.

        A small model that has written a call can fall into writing it again and again until the
        token budget ends. A repeat ends the line instead. Rejecting the repeat itself could leave
        no way out: in `ls(a=True), ls(a=True`, only `)` can follow.
        """
        _, _, closed, text, repeated = state[0]
        next_state = self._step(state, char)
        if next_state is None:
            return None
        phase = next_state[0][1]
        if len(state) == 1 and len(next_state) == 1:
            # Between calls: the separator and the space after the colon belong to no call.
            if phase == "comma" and repeated:
                return None
            return (("calls", phase, closed, text, repeated),)
        text += char
        if len(next_state) > 1:
            return (("calls", phase, closed, text, repeated), *next_state[1:])
        return (("calls", phase, closed | {text}, "", text in closed),)

    def _step(self, stack: State, char: str) -> State | None:
        frame = stack[-1]
        kind = frame[0]
        rest = stack[:-1]
        if kind == "calls":
            return self._calls_step(frame[1], char)
        if kind == "name":
            name = frame[1]
            if char == "(" and name in self.tools:
                return (*rest, ("args", name, frozenset(), "open"))
            extended = name + char
            return (*rest, ("name", extended)) if extended in self._name_prefixes else None
        if kind == "args":
            return self._args_step(rest, frame, char)
        if kind == "key":
            return self._key_step(rest, frame, char)
        if kind == "star":
            _, name, used = frame
            if char != "*":
                return None
            # `**{...}` carries the parameters whose names are not Python identifiers. Its keys are
            # not checked, and `render_action` puts it last, so it ends the argument list.
            every = frozenset(self.tools[name].parameters)
            return (*rest, ("args", name, every, "after"), ("value", _DICT))
        return self._value_step(rest, frame, char)

    def _calls_step(self, phase: str, char: str) -> State | None:
        # One space may follow the opening's colon, as in `tool_call: ls()`.
        if phase == "start" and char == " ":
            return (("calls", "name"),)
        if phase in ("start", "name"):
            return (("calls", "after"), ("name", char)) if char in self._name_prefixes else None
        return _separator(phase, char, (("calls", "name"),), lambda separated: (("calls", separated),))

    def _args_step(self, rest: State, frame: tuple[Any, ...], char: str) -> State | None:
        _, name, used, phase = frame
        tool = self.tools[name]
        if char == ")" and phase in ("open", "after"):
            return rest if tool.required <= used else None
        if phase in ("after", "comma"):
            if char == "," and used >= tool.parameters.keys():
                # With every parameter given, only `)` can follow, and `f(a=1,)` is not the format.
                return None
            return _separator(phase, char, (*rest, ("args", name, used, "key")),
                              lambda separated: (*rest, ("args", name, used, separated)))
        if char == "*" and tool.keyword_names - used:
            return (*rest, ("star", name, used))
        if char in self._key_prefixes[name] and _unused_prefix(char, tool, used):
            return (*rest, ("key", name, used, char))
        return None

    def _key_step(self, rest: State, frame: tuple[Any, ...], char: str) -> State | None:
        _, name, used, key = frame
        tool = self.tools[name]
        if char == "=":
            # The key prefixes leave out keyword names, so `key` is never one of them.
            if key not in tool.parameters or key in used:
                return None
            return (*rest, ("args", name, used | {key}, "after"), ("value", tool.parameters[key]))
        extended = key + char
        if extended in self._key_prefixes[name] and _unused_prefix(extended, tool, used):
            return (*rest, ("key", name, used, extended))
        return None

    def _value_step(self, rest: State, frame: tuple[Any, ...], char: str) -> State | None:
        kind = frame[0]
        if kind == "value":
            return self._value_start(rest, frame[1], char)
        if kind == "str":
            return _string_step(rest, frame, char)
        if kind == "num":
            _, text, floats = frame
            extended = text + char
            pattern = _FLOAT_PREFIX if floats else _NUMBER_PREFIX
            if pattern.fullmatch(extended):
                return (*rest, ("num", extended, floats))
            complete = _FLOAT_COMPLETE if floats else _INT_COMPLETE
            # A number ends at the first character that cannot extend it; the parent reads that one.
            return self._step(rest, char) if complete.fullmatch(text) else None
        if kind == "word":
            _, word, index = frame
            if char != word[index]:
                return None
            return rest if index + 1 == len(word) else (*rest, ("word", word, index + 1))
        if kind == "seq":
            return self._sequence_step(rest, frame, char)
        return self._dict_step(rest, frame, char)

    def _value_start(self, rest: State, spec: ValueSpec, char: str) -> State | None:
        classes = spec.classes
        if char in "'\"" and "str" in classes:
            return (*rest, ("str", char, False))
        if (char.isdigit() or char == "-") and classes & {"int", "float"}:
            return self._value_step(rest, ("num", "", "float" in classes), char)
        words = {"T": ("bool", "True"), "F": ("bool", "False"), "N": ("none", "None")}
        if char in words and words[char][0] in classes:
            return (*rest, ("word", words[char][1], 1))
        if char in "[(" and "list" in classes:
            return (*rest, ("seq", "]" if char == "[" else ")", "open", spec.items or _ANY))
        if char == "{" and "dict" in classes:
            return (*rest, ("dict", "open"))
        return None

    def _sequence_step(self, rest: State, frame: tuple[Any, ...], char: str) -> State | None:
        _, close, phase, items = frame
        if char == close and phase in ("open", "after"):
            return rest
        if phase in ("after", "comma"):
            return _separator(phase, char, (*rest, ("seq", close, "item", items)),
                              lambda separated: (*rest, ("seq", close, separated, items)))
        return self._value_start((*rest, ("seq", close, "after", items)), items, char)

    def _dict_step(self, rest: State, frame: tuple[Any, ...], char: str) -> State | None:
        phase = frame[1]
        if phase == "colon":
            return (*rest, ("dict", "space")) if char == ":" else None
        if phase == "space":
            return (*rest, ("dict", "after"), ("value", _ANY)) if char == " " else None
        if char == "}" and phase in ("open", "after"):
            return rest
        if phase in ("after", "comma"):
            return _separator(phase, char, (*rest, ("dict", "key")), lambda separated: (*rest, ("dict", separated)))
        # JSON keys are strings, so a dict literal's keys must be too.
        return (*rest, ("dict", "colon"), ("str", char, False)) if char in "'\"" else None


def _separator(phase: str, char: str, done: State, in_phase: Any) -> State | None:
    """Read `, `, the only separator between items that `repr` writes.

    The comma comes in phase `after` and leads to `in_phase("comma")`. The space then gives `done`.
    """
    if phase == "after":
        return in_phase("comma") if char == "," else None
    return done if char == " " else None


def _string_step(rest: State, frame: tuple[Any, ...], char: str) -> State | None:
    _, quote, escaped = frame
    if char == "\n":
        return None
    if escaped:
        return (*rest, ("str", quote, False))
    if char == quote:
        return rest
    if char == "\\":
        return (*rest, ("str", quote, True))
    return (*rest, frame)


def _prefixes(words: Any) -> frozenset[str]:
    return frozenset(word[:end] for word in words for end in range(1, len(word) + 1))


def _unused_prefix(prefix: str, tool: _Tool, used: frozenset[str]) -> bool:
    return any(key.startswith(prefix) for key in tool.parameters if key not in used)
