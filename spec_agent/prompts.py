"""Rendering of a next-action context into chat messages, and the text format of actions.

Training and inference share these functions, so a model is always prompted in the format it was
trained on. An action is one line, `<kind>: <payload>`:

    file_read: ls(a=True)
    tool_call: send_message(receiver_id='USR002', message='Hello'), post_tweet(content='Hi')
    final_answer: The report was moved to the archive folder.
    BLOCKED: None of the available tools can book a flight.

Tool payloads are Python call syntax with keyword arguments and literal values. They are parsed with
`ast` and `ast.literal_eval` on the argument nodes only; model output is never evaluated.
"""

from __future__ import annotations

import ast
import json
import keyword
import logging
import math
import re
import threading
from typing import Any

from spec_agent.actions import ACTION_KINDS, TOOL_KINDS, Action, ToolCall
from spec_agent.decision import Proposal

logger = logging.getLogger(__name__)

MAX_TOOL_OUTPUT_CHARS = 600
"""Tool results longer than this are cut in the prompt, with a marker saying how much was cut."""
MAX_ACTION_CHARS = 4000
"""Generated text longer than this is rejected unparsed."""
MAX_DESCRIPTION_CHARS = 120

INSTRUCTIONS = """\
You are the decision step of a tool-using agent. Choose the single next action and write it on one \
line as `<kind>: <payload>`.
Kinds with tool calls (payload: Python calls with keyword arguments, comma-separated when parallel):
  file_read (list or read files), file_write (create, change or delete files), retrieval (look up \
state: get_*, list_*, search*, check_*), tool_call (any other call), repair (a corrected call after a \
tool error), verifier (a call that re-checks the previous write).
Kinds with text: final_answer (the request is done; summarise), ask_clarification (a required value \
is missing; ask for it), BLOCKED (no available tool can do it; say why).
Examples:
file_read: cat(file_name='notes.txt')
final_answer: The file notes.txt now contains the summary."""

KIND_OPENINGS = tuple(f"{kind}:" for kind in ACTION_KINDS)
"""The openings of the nine action lines; `LocalProposer` makes every generation start with one."""

_KIND_PATTERN = re.compile(
    r"^\s*[`*]*\s*(" + "|".join(re.escape(kind) for kind in ACTION_KINDS) + r")\s*[`*]*\s*:\s*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_KIND_BY_LOWER = {kind.lower(): kind for kind in ACTION_KINDS}
# BFCL's multi-turn tool docs open with the same sentence about the owning API class before the
# actual description. It costs tokens and adds nothing about the tool.
_BOILERPLATE = re.compile(r"^This tool belongs to .*?Tool description: ", re.IGNORECASE)


def render_tools(tools: list[dict[str, Any]]) -> str:
    """Render tool schemas as compact signatures, one per line, to keep prompts short."""
    return "\n".join(_render_tool(tool) for tool in tools)


def _render_tool(tool: dict[str, Any]) -> str:
    parameters = tool.get("parameters") or {}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    rendered = []
    for name, schema in properties.items():
        kind = schema.get("type", "any") if isinstance(schema, dict) else "any"
        rendered.append(f"{name}: {kind}" if name in required else f"{name}: {kind} = None")
    description = " ".join(str(tool.get("description") or "").split())
    description = _BOILERPLATE.sub("", description)
    if len(description) > MAX_DESCRIPTION_CHARS:
        description = description[: MAX_DESCRIPTION_CHARS - 3] + "..."
    return f"- {tool['name']}({', '.join(rendered)}): {description}"


def render_action(action: Action) -> str:
    """Render an action as the one-line text a model is trained to emit."""
    if action.kind in TOOL_KINDS:
        return f"{action.kind}: {', '.join(_render_call(call) for call in action.tool_calls)}"
    return f"{action.kind}: {' '.join(action.content.split())}".rstrip()


def _render_call(call: ToolCall) -> str:
    # Names that cannot be Python keyword arguments (`from`, `max-size`) go into one `**{...}`.
    plain = {key: value for key, value in call.arguments.items() if _is_keyword_name(key)}
    rendered = [f"{key}={value!r}" for key, value in plain.items()]
    other = {key: value for key, value in call.arguments.items() if key not in plain}
    if other:
        rendered.append(f"**{other!r}")
    return f"{call.name}({', '.join(rendered)})"


def _is_keyword_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def render_chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Render a context as plain `system`/`user`/`assistant` chat messages for any chat template.

    Assistant tool calls become action lines and tool results become user messages, because small
    models' templates (SmolLM2's among them) have no tool roles. Consecutive messages of one role are
    merged so that strict templates accept the result.
    """
    system = INSTRUCTIONS + "\nAvailable tools:\n" + (render_tools(tools) or "(none)")
    chat: list[dict[str, str]] = [{"role": "system", "content": system}]
    for message in messages:
        role, content = _render_message(message)
        if not content:
            continue
        if chat[-1]["role"] == role:
            chat[-1] = {"role": role, "content": chat[-1]["content"] + "\n" + content}
        else:
            chat.append({"role": role, "content": content})
    return chat


def _render_message(message: dict[str, Any]) -> tuple[str, str]:
    role = message.get("role", "user")
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = json.dumps(content)
    if role == "system":
        return "user", content
    if role == "tool":
        name = message.get("name") or "tool"
        return "user", f"Tool result ({name}): {_truncate(content)}"
    if role == "assistant" and message.get("tool_calls"):
        calls = [_message_call(call) for call in message["tool_calls"]]
        kind = message.get("action_kind", "tool_call")
        kind = kind if kind in TOOL_KINDS else "tool_call"
        return "assistant", render_action(Action(kind=kind, tool_calls=tuple(calls)))
    return role, content


def _message_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function", call)
    arguments = function.get("arguments") or function.get("args") or {}
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    return ToolCall(name=function["name"], arguments=arguments)


class _TruncationCounter:
    """Count of tool results cut for prompts; the first cut in a process logs a warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def record(self, cut: int) -> None:
        with self._lock:
            self.count += 1
            first = self.count == 1
        if first:
            logger.warning(
                "Cut a tool result by %s characters to fit the prompt limit of %s characters; "
                "later cuts are logged at DEBUG and counted by truncated_tool_results()",
                cut, MAX_TOOL_OUTPUT_CHARS,
            )
        else:
            logger.debug("Cut a tool result by %s characters for the prompt", cut)


_truncations = _TruncationCounter()


def truncated_tool_results() -> int:
    """Return how many tool results this process has cut to `MAX_TOOL_OUTPUT_CHARS` in prompts."""
    return _truncations.count


def _truncate(text: str) -> str:
    if len(text) <= MAX_TOOL_OUTPUT_CHARS:
        return text
    cut = len(text) - MAX_TOOL_OUTPUT_CHARS
    _truncations.record(cut)
    return f"{text[:MAX_TOOL_OUTPUT_CHARS]}... [{cut} characters cut]"


def parse_action(text: str, *, confidence: float | None = None, kind_probability: float | None = None) -> Proposal:
    """Parse generated text into a proposal; text that does not parse gives an invalid proposal.

    Args:
        text: Raw model output; only the first action line (or call expression) is read.
        confidence: The generating model's confidence, stored on the proposal.
        kind_probability: The generating model's probability of the kind it opened with, stored on
            the proposal.
    """
    try:
        action = _parse(text)
    # TypeError: `ast.literal_eval` builds sets and dicts, so `{[1]: 2}` fails while hashing.
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as error:
        return Proposal(text=text, action=None, error=str(error)[:300], confidence=confidence,
                        kind_probability=kind_probability)
    return Proposal(text=text, action=action, confidence=confidence, kind_probability=kind_probability)


def _parse(text: str) -> Action:
    if len(text) > MAX_ACTION_CHARS:
        raise ValueError(f"output of {len(text)} characters exceeds {MAX_ACTION_CHARS}")
    match = _KIND_PATTERN.match(text.strip())
    if match is None:
        raise ValueError("no '<kind>: <payload>' line with a known action kind")
    kind = _KIND_BY_LOWER[match.group(1).lower()]
    payload = match.group(2).strip()
    if kind not in TOOL_KINDS:
        return Action(kind=kind, content=payload.splitlines()[0].strip() if payload else "")
    return Action(kind=kind, tool_calls=_parse_calls(payload))


def _parse_calls(payload: str) -> tuple[ToolCall, ...]:
    # A model may keep generating after the call, so fall back to the first line alone.
    for candidate in (payload, payload.splitlines()[0] if payload else ""):
        try:
            tree = ast.parse(candidate.strip().rstrip(";"), mode="eval")
        except SyntaxError:
            continue
        return _calls_from_tree(tree.body)
    raise ValueError("payload is not Python call syntax")


def _calls_from_tree(node: ast.expr) -> tuple[ToolCall, ...]:
    nodes = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
    if not nodes:
        raise ValueError("no tool call in payload")
    return tuple(_call_from_node(item) for item in nodes)


def _call_from_node(node: ast.expr) -> ToolCall:
    name = _dotted_name(node.func) if isinstance(node, ast.Call) else None
    if name is None:
        raise ValueError("each tool call must look like name(key=value, ...)")
    if node.args:
        raise ValueError(f"call of {name!r} has positional arguments; use keywords")
    arguments: dict[str, Any] = {}
    for argument in node.keywords:
        if argument.arg is None:
            arguments.update(_unpacked_arguments(argument.value, name))
            continue
        value = ast.literal_eval(argument.value)
        arguments[argument.arg] = _json_value(value, f"argument {argument.arg!r} of {name!r}")
    return ToolCall(name=name, arguments=arguments)


def _dotted_name(node: ast.expr) -> str | None:
    """Return `a.b.c` for a chain of plain names, the form of namespaced tools such as
    `math.factorial`; None for any other expression, such as a call or a subscript."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted_name(node.value)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def _unpacked_arguments(node: ast.expr, name: str) -> dict[str, Any]:
    """Read `**{...}`, which carries arguments whose names are not Python identifiers."""
    if not isinstance(node, ast.Dict):
        raise ValueError(f"call of {name!r} uses ** unpacking of a non-literal; write a dict literal")
    value = _json_value(ast.literal_eval(node), f"** arguments of {name!r}")
    return dict(value)


def _json_value(value: Any, where: str) -> Any:
    """Return a literal as a JSON value: tuples become lists, anything JSON cannot hold raises.

    Sets, bytes, complex numbers, Ellipsis, NaN, infinities and non-string keys would break the
    trace store and tool-argument validation, so they make the proposal invalid.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}; use a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(item, where) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"{where} has the dict key {key!r:.40}; JSON keys are strings")
        return {key: _json_value(item, where) for key, item in value.items()}
    raise ValueError(
        f"{where} is of type {type(value).__name__}; use JSON values (str, number, bool, None, "
        "list, dict)"
    )
