"""Convert the Berkeley Function Calling Leaderboard (BFCL) data into eval-v3 next-action examples.

The input is the extracted `bfcl-eval` wheel: the folder that contains `bfcl_eval/`. Only its JSON
lines data files and the backend classes in
`bfcl_eval/eval_checker/multi_turn_eval/func_source_code/` are used. The backend modules are loaded
by file path, so the package's `__init__` files (which create folders and import vendor SDKs) never
run, and ground-truth call strings are parsed with `ast` and dispatched by name, never evaluated.

Multi-turn entries are replayed turn by turn on fresh backend instances, so every tool message contains
the real return value of the call. Each ground-truth call becomes one example whose gold action is
that call; the end of each turn becomes a `final_answer` example. A turn whose ground truth is empty
becomes `ask_clarification` (`multi_turn_miss_param`), `BLOCKED` (`multi_turn_miss_func`) or
`final_answer` (other categories). Some calls also yield a `repair` example: a perturbed copy of the
call runs on a copy of the backend state, and its real error sits in the history before the gold.

Single-turn entries give one example each. Parallel categories give one action with several calls,
and irrelevance categories give `BLOCKED` because no offered tool can serve the request.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from spec_agent.actions import Action, ActionKind, ToolCall
from spec_agent.errors import DatasetError
from spec_agent.eval.matching import action_matches
from spec_agent.eval.schema import Example

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None", str], None]
"""Progress hook `(advance, total, description)`; `total` is the entry count of the category."""

MULTI_TURN_CATEGORIES: tuple[str, ...] = (
    "multi_turn_base",
    "multi_turn_miss_param",
    "multi_turn_miss_func",
    "multi_turn_long_context",
)
SINGLE_TURN_CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
IRRELEVANCE_CATEGORIES: tuple[str, ...] = ("irrelevance", "live_irrelevance")
DEFAULT_CATEGORIES: tuple[str, ...] = (
    MULTI_TURN_CATEGORIES + SINGLE_TURN_CATEGORIES + IRRELEVANCE_CATEGORIES
)

MAX_TOOL_OUTPUT_CHARS = 4000
"""Maximum length of a tool message in characters; `multi_turn_long_context` outputs reach tens
of thousands, so longer ones are cut."""
TRUNCATION_MARKER = "...[truncated {omitted} characters]"
"""Appended to a cut tool message; `omitted` is the number of characters dropped."""
REPAIR_EVERY = 3
"""Within one entry, the 1st, 4th, 7th, ... call whose perturbation fails on the backend gets a
`repair` example."""

# Backend class -> (module file stem, function doc file), as laid out in bfcl-eval 2026.3.23.
BACKENDS: dict[str, tuple[str, str]] = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
_BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_BACKEND_DIR = Path("bfcl_eval/eval_checker/multi_turn_eval/func_source_code")
_DATA_DIR = Path("bfcl_eval/data")
_PROMPTS_FILE = Path("bfcl_eval/constants/default_prompts.py")
_ADDED_FUNCTIONS_PROMPT_NAME = "DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC"

FILE_READ_CALLS = frozenset(
    {"ls", "cat", "pwd", "find", "grep", "tail", "wc", "du", "diff", "sort", "cd"}
)
"""File system calls that change no file.

`sort` is here because the BFCL backend returns the sorted lines and leaves the file unchanged.
`cd` is here because it only moves the working directory."""
FILE_WRITE_CALLS = frozenset({"touch", "echo", "mkdir", "rm", "rmdir", "mv", "cp"})
"""File system calls that create, change, move or delete files or directories."""
RETRIEVAL_PREFIXES: tuple[str, ...] = (
    "get",
    "list",
    "search",
    "check",
    "view",
    "display",
    "retrieve",
    "filter",
    "find",
)
"""Lower-cased name prefixes of calls that look up state without changing it."""
RETRIEVAL_INFIXES: tuple[str, ...] = ("_get_",)
"""Name parts of look-ups with a class prefix, e.g. `ticket_get_login_status`."""
VERIFIER_EXCLUDED_CALLS = frozenset({"cd"})
"""Reads that never count as re-checking a write: changing directory inspects nothing."""

# BFCL type names (Python and Java spellings) -> JSON Schema type; None drops the type (any value).
_JSON_SCHEMA_TYPES: dict[str, str | None] = {
    "dict": "object",
    "object": "object",
    "HashMap": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "long": "integer",
    "integer": "integer",
    "int": "integer",
    "tuple": "array",
    "array": "array",
    "list": "array",
    "Array": "array",
    "ArrayList": "array",
    "string": "string",
    "String": "string",
    "char": "string",
    "boolean": "boolean",
    "Boolean": "boolean",
    "null": "null",
    "any": None,
    "": None,
}


def kind_of_call(name: str) -> ActionKind:
    """Map a BFCL function name to the action kind of a call to it.

    The rules, in order:
    - `FILE_READ_CALLS` (`ls`, `cat`, `pwd`, `find`, `grep`, `tail`, `wc`, `du`, `diff`, `sort`,
      `cd`) give `file_read`;
    - `FILE_WRITE_CALLS` (`touch`, `echo`, `mkdir`, `rm`, `rmdir`, `mv`, `cp`) give `file_write`;
    - names whose last dotted part starts with one of `RETRIEVAL_PREFIXES` (case-insensitive,
      e.g. `get_*`, `list_*`, `search*`, `check_*`, `displayCarStatus`, `hotel.find`) or
      contains `_get_` give `retrieval`;
    - every other name gives `tool_call`.

    `repair` and `verifier` depend on the history, not on the name; the converter assigns them.

    Args:
        name: Function name, e.g. `mkdir`, `get_ticket` or `spotify.play`.
    """
    if name in FILE_READ_CALLS:
        return "file_read"
    if name in FILE_WRITE_CALLS:
        return "file_write"
    lowered = name.rsplit(".", 1)[-1].lower()
    if lowered.startswith(RETRIEVAL_PREFIXES) or any(part in lowered for part in RETRIEVAL_INFIXES):
        return "retrieval"
    return "tool_call"


def kind_rules() -> list[tuple[str, str]]:
    """Return the rules of `kind_of_call` as `(names, kind)` rows for the dataset card."""
    return [
        (", ".join(sorted(FILE_READ_CALLS)), "file_read"),
        (", ".join(sorted(FILE_WRITE_CALLS)), "file_write"),
        (
            ", ".join(f"{prefix}*" for prefix in RETRIEVAL_PREFIXES)
            + ", *"
            + "*, *".join(RETRIEVAL_INFIXES)
            + "*",
            "retrieval",
        ),
        ("any other function", "tool_call"),
    ]


def build_examples(
    bfcl_root: Path,
    *,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    progress: ProgressCallback | None = None,
    skipped: list[str] | None = None,
) -> list[Example]:
    """Convert BFCL categories into eval-v3 examples.

    Args:
        bfcl_root: Extracted `bfcl-eval` wheel, the folder that contains `bfcl_eval/`.
        categories: Categories to convert, from `DEFAULT_CATEGORIES`.
        progress: Called with `(0, entry_count, category)` when a category starts and with
            `(1, entry_count, category)` after each entry.
        skipped: If given, receives the ids of single-turn entries left out because their own
            gold call fails the matching rules (e.g. it uses a parameter that the function
            doc does not declare); bfcl-eval 2026.3.23 has 6 such entries.

    Raises:
        DatasetError: A category is unknown, a data file is missing or a row is malformed.
    """
    bfcl_root = Path(bfcl_root)
    for category in categories:
        if category not in DEFAULT_CATEGORIES:
            raise DatasetError(
                f"Unknown BFCL category {category!r}; expected one of {', '.join(DEFAULT_CATEGORIES)}."
            )
    examples: list[Example] = []
    for category in categories:
        before = len(examples)
        if category in MULTI_TURN_CATEGORIES:
            examples.extend(_convert_multi_turn_category(bfcl_root, category, progress))
        else:
            examples.extend(
                _convert_single_turn_category(bfcl_root, category, progress, skipped)
            )
        logger.info("Converted bfcl/%s into %d examples", category, len(examples) - before)
    return examples


# --- Reading the data files ------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a BFCL JSON lines file (its extension is `.json`, one object per line).

    Raises:
        DatasetError: The file is missing or a line is not a JSON object.
    """
    if not path.is_file():
        raise DatasetError(
            f"BFCL data file {str(path)!r} not found; pass the folder that contains bfcl_eval/."
        )
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}: line {number} is not valid JSON: {error}") from error
            if not isinstance(row, dict) or "id" not in row:
                raise DatasetError(f"{path}: line {number} has no field 'id'.")
            rows.append(row)
    return rows


def _entries_with_answers(
    bfcl_root: Path, category: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    data_dir = bfcl_root / _DATA_DIR
    entries = read_jsonl(data_dir / f"BFCL_v4_{category}.json")
    if category in IRRELEVANCE_CATEGORIES:
        yield from ((entry, None) for entry in entries)
        return
    answer_path = data_dir / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {row["id"]: row for row in read_jsonl(answer_path)}
    for entry in entries:
        answer = answers.get(entry["id"])
        if answer is None or "ground_truth" not in answer:
            raise DatasetError(f"{answer_path}: entry {entry['id']!r} is missing field 'ground_truth'.")
        yield entry, answer


def _field(row: Mapping[str, Any], name: str, kind: type, origin: str) -> Any:
    value = row.get(name)
    if not isinstance(value, kind):
        raise DatasetError(
            f"{origin}: entry {row.get('id')!r} field {name!r} must be a {kind.__name__}, "
            f"got {type(value).__name__}."
        )
    return value


# --- Tool schemas ------------------------------------------------------------------------------


def to_json_schema(schema: Any, *, origin: str = "<memory>") -> Any:
    """Convert BFCL's parameter types to JSON Schema types, recursively.

    `dict` becomes `object`. Every other changed type keeps its BFCL name under `x-bfcl-type`
    (`float` becomes `number` with `x-bfcl-type: float`, `tuple` becomes `array`, and `any` loses
    its `type` because JSON Schema spells "any value" as no type). Only schema keywords are
    followed (`properties`, `items`, `additionalProperties`, `anyOf`, `oneOf`), so `default` and
    `enum` values are copied unchanged.

    Raises:
        DatasetError: A type name is not a known BFCL type.
    """
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    if isinstance(schema.get("type"), str):
        converted.update(_converted_type(schema["type"], origin))
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            continue
        converted[key] = _convert_keyword(key, value, origin)
    return converted


def _convert_keyword(key: str, value: Any, origin: str) -> Any:
    if key == "properties" and isinstance(value, dict):
        return {name: to_json_schema(item, origin=origin) for name, item in value.items()}
    if key in ("items", "additionalProperties") and isinstance(value, dict):
        return to_json_schema(value, origin=origin)
    if key in ("anyOf", "oneOf") and isinstance(value, list):
        return [to_json_schema(item, origin=origin) for item in value]
    return value


def _converted_type(bfcl_type: str, origin: str) -> dict[str, str]:
    if bfcl_type not in _JSON_SCHEMA_TYPES:
        raise DatasetError(f"{origin}: unknown parameter type {bfcl_type!r} in a function doc.")
    json_type = _JSON_SCHEMA_TYPES[bfcl_type]
    converted = {} if json_type is None else {"type": json_type}
    if json_type != bfcl_type and bfcl_type != "dict":
        converted["x-bfcl-type"] = bfcl_type
    return converted


def _tool_schema(doc: Mapping[str, Any], origin: str) -> dict[str, Any]:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("name"), str):
        raise DatasetError(f"{origin}: a function doc has no field 'name'.")
    parameters = doc.get("parameters") or {"type": "dict", "properties": {}}
    return {
        "name": doc["name"],
        "description": str(doc.get("description") or ""),
        "parameters": to_json_schema(parameters, origin=f"{origin} ({doc['name']})"),
    }


# --- Single-turn categories --------------------------------------------------------------------


def _convert_single_turn_category(
    bfcl_root: Path, category: str, progress: ProgressCallback | None, skipped: list[str] | None
) -> list[Example]:
    pairs = list(_entries_with_answers(bfcl_root, category))
    _report(progress, 0, len(pairs), category)
    examples = []
    for entry, answer in pairs:
        example = _single_turn_example(entry, answer, category)
        if action_matches(example.action, example):
            examples.append(example)
        else:
            logger.warning("Skipped bfcl/%s entry %s: its gold fails its own checker", category, example.id)
            if skipped is not None:
                skipped.append(example.id)
        _report(progress, 1, len(pairs), category)
    return examples


def _single_turn_example(
    entry: dict[str, Any], answer: dict[str, Any] | None, category: str
) -> Example:
    origin = f"BFCL_v4_{category}.json"
    question = _field(entry, "question", list, origin)
    if len(question) != 1 or not isinstance(question[0], list) or not question[0]:
        raise DatasetError(f"{origin}: entry {entry['id']!r} field 'question' must hold one turn.")
    docs = _field(entry, "function", list, origin)
    tools = [_tool_schema(doc, f"{origin}: entry {entry['id']!r} field 'function'") for doc in docs]
    if answer is None:
        action, accepted = Action(kind="BLOCKED"), []
    else:
        required = {tool["name"]: tool["parameters"].get("required") or [] for tool in tools}
        action, accepted = _gold_from_possible_answer(answer, category, required)
    return Example(
        id=f"{entry['id']}",
        source=f"bfcl/{category}",
        scenario=f"{category}:{entry['id']}",
        messages=[dict(message) for message in question[0]],
        tools=tools,
        action=action,
        accepted=accepted,
        metadata={"category": category},
    )


def _gold_from_possible_answer(
    answer: dict[str, Any], category: str, required: Mapping[str, list[str]]
) -> tuple[Action, list[dict[str, list[Any]]]]:
    origin = f"possible_answer/BFCL_v4_{category}.json: entry {answer['id']!r}"
    ground_truth = answer["ground_truth"]
    if not isinstance(ground_truth, list) or not ground_truth:
        raise DatasetError(f"{origin} field 'ground_truth' must be a non-empty list.")
    calls, accepted = [], []
    for item in ground_truth:
        if not isinstance(item, dict) or len(item) != 1:
            raise DatasetError(f"{origin} field 'ground_truth' must hold one-key call objects.")
        (name, parameters), = item.items()
        if not isinstance(parameters, dict) or not all(
            isinstance(values, list) for values in parameters.values()
        ):
            raise DatasetError(f"{origin} field 'ground_truth.{name}' must map params to lists.")
        arguments = gold_arguments(parameters, required=required.get(name, ()))
        calls.append(ToolCall(name=name, arguments=arguments))
        accepted.append(parameters)
    return Action(kind=kind_of_call(calls[0].name), tool_calls=tuple(calls)), accepted


_ABSENT = object()


def gold_arguments(
    accepted: Mapping[str, list[Any]], *, required: Sequence[str] = ()
) -> dict[str, Any]:
    """Pick one gold argument per parameter from BFCL accepted values.

    The first accepted value other than `""` wins. A parameter whose only accepted value is `""`
    (optional) is omitted, unless the schema lists it in `required`: then `""` itself is the only
    value that passes BFCL's checker. Nested dicts of accepted values are resolved the same way.
    """
    arguments = {}
    for name, values in accepted.items():
        value = _first_accepted(values)
        if value is not _ABSENT:
            arguments[name] = value
        elif name in required and "" in values:
            arguments[name] = ""
    return arguments


def _first_accepted(values: list[Any]) -> Any:
    for value in values:
        if value != "":
            return _resolve_nested(value)
    return _ABSENT


def _resolve_nested(value: Any) -> Any:
    if _is_accepted_dict(value):
        return gold_arguments(value)
    if isinstance(value, list):
        return [_resolve_nested(item) for item in value]
    return value


def _is_accepted_dict(value: Any) -> bool:
    """Tell whether a dict is in BFCL's nested accepted-values layout (every value a list)."""
    return isinstance(value, dict) and all(isinstance(item, list) for item in value.values())


# --- Backend classes -----------------------------------------------------------------------------


class BackendLoader:
    """Loader of BFCL's multi-turn backend classes from their source files, without the package.

    Modules are executed under private names (`_spec_agent_bfcl_<stem>`). While one runs, its sibling
    `long_context` module is also visible under its package path, because the backends import it
    by that absolute name.
    """

    def __init__(self, *, bfcl_root: Path) -> None:
        self._source_dir = Path(bfcl_root) / _BACKEND_DIR
        self._modules: dict[str, ModuleType] = {}

    def backend_class(self, class_name: str) -> type:
        """Return the backend class named `class_name`, loading its module once.

        Raises:
            DatasetError: The class is not a supported backend or its source file is missing.
        """
        if class_name not in BACKENDS:
            raise DatasetError(
                f"Unsupported BFCL backend class {class_name!r}; expected one of {', '.join(BACKENDS)}."
            )
        stem = BACKENDS[class_name][0]
        with self._package_alias("long_context"):
            module = self._module(stem)
        return getattr(module, class_name)

    def _module(self, stem: str) -> ModuleType:
        if stem in self._modules:
            return self._modules[stem]
        path = self._source_dir / f"{stem}.py"
        if not path.is_file():
            raise DatasetError(
                f"BFCL backend source {str(path)!r} not found; pass the folder that contains bfcl_eval/."
            )
        spec = importlib.util.spec_from_file_location(f"_spec_agent_bfcl_{stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._modules[stem] = module
        return module

    @contextmanager
    def _package_alias(self, stem: str) -> Iterator[None]:
        # Register only the leaf module name: the import system finds it in sys.modules and never
        # imports the parent packages, whose __init__ files are the ones to avoid.
        name = f"{_BACKEND_PACKAGE}.{stem}"
        previous = sys.modules.get(name)
        sys.modules[name] = self._module(stem)
        try:
            yield
        finally:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class Environment:
    """The live backend instances of one multi-turn entry, and dispatch of parsed calls to them."""

    def __init__(self, *, instances: dict[str, Any]) -> None:
        self.instances = instances

    @classmethod
    def create(
        cls,
        loader: BackendLoader,
        *,
        classes: Sequence[str],
        initial_config: Mapping[str, Any],
        long_context: bool,
    ) -> Environment:
        """Instantiate each backend class and load its part of `initial_config`."""
        instances = {}
        for class_name in classes:
            instance = loader.backend_class(class_name)()
            if hasattr(instance, "_load_scenario"):
                config = copy.deepcopy(dict(initial_config.get(class_name, {})))
                instance._load_scenario(config, long_context=long_context)
            instances[class_name] = instance
        return cls(instances=instances)

    def copy(self) -> Environment:
        """Return an independent deep copy, for running a call without touching this state."""
        return Environment(instances=copy.deepcopy(self.instances))

    def method(self, name: str) -> Callable[..., Any] | None:
        """Return the public backend method called `name`, or None if no instance has one."""
        if name.startswith("_"):
            return None
        for instance in self.instances.values():
            method = getattr(instance, name, None)
            if inspect.ismethod(method):
                return method
        return None

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """Run a call and return its serialised output and whether it is an error."""
        method = self.method(call.name)
        if method is None:
            return f"Error during execution: unknown function {call.name!r}", True
        try:
            result = method(**call.arguments)
        except Exception as error:  # A failing backend call is an observation, as in BFCL.
            return f"Error during execution: {error}", True
        is_error = isinstance(result, dict) and "error" in result
        return serialise_output(result), is_error


def serialise_output(result: Any) -> str:
    """Serialise a backend return value to JSON, cut to `MAX_TOOL_OUTPUT_CHARS` with a marker.

    Values that JSON cannot hold (e.g. mpmath numbers) are written with `str`.
    """
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    if len(text) <= MAX_TOOL_OUTPUT_CHARS:
        return text
    omitted = len(text) - MAX_TOOL_OUTPUT_CHARS
    return text[:MAX_TOOL_OUTPUT_CHARS] + TRUNCATION_MARKER.format(omitted=omitted)


# --- Parsing ground-truth call strings -----------------------------------------------------------


def parse_call(text: str, *, parameter_names: Callable[[str], list[str]] | None = None) -> ToolCall:
    """Parse a call string such as `mv(source='a', destination='b')` into a `ToolCall`.

    Only `name(literal, ..., keyword=literal, ...)` is accepted; each argument goes through
    `ast.literal_eval`, so nothing in the string is executed.

    Args:
        text: The call string.
        parameter_names: Returns the ordered parameter names of a function; needed to name
            positional arguments.

    Raises:
        SyntaxError: The string is not Python syntax.
        ValueError: The string is not such a call, an argument is not a literal, or a positional
            argument cannot be named.
    """
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {text!r}")
    name = node.func.id
    arguments: dict[str, Any] = {}
    if node.args:
        names = parameter_names(name) if parameter_names else []
        if len(names) < len(node.args):
            raise ValueError(f"cannot name the positional arguments of {text!r}")
        for param, value in zip(names, node.args):
            arguments[param] = _literal(value, text)
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ValueError(f"'**' arguments are not supported: {text!r}")
        arguments[keyword.arg] = _literal(keyword.value, text)
    return ToolCall(name=name, arguments=arguments)


def _literal(node: ast.expr, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (TypeError, RecursionError, MemoryError) as error:
        # An unhashable set member or dict key (`{[1]: 2}`) fails as TypeError while building it.
        raise ValueError(f"invalid literal in {text[:200]!r}: {error}") from error


def _signature_parameters(environment: Environment, name: str) -> list[inspect.Parameter]:
    method = environment.method(name)
    if method is None:
        return []
    return list(inspect.signature(method).parameters.values())


def accepted_from_call(call: ToolCall, parameters: Sequence[inspect.Parameter]) -> dict[str, list]:
    """Build BFCL-style accepted values for a replayed call: its arguments, plus the defaults.

    A parameter that the gold call leaves out is optional (`""`) and may also take its default.
    A gold argument equal to the default may be left out.
    """
    accepted: dict[str, list] = {name: [value] for name, value in call.arguments.items()}
    for parameter in parameters:
        if parameter.default is inspect.Parameter.empty:
            continue
        values = accepted.setdefault(parameter.name, [])
        if parameter.name not in call.arguments:
            if parameter.default is not None:
                values.append(parameter.default)
            values.append("")
        elif call.arguments[parameter.name] == parameter.default:
            values.append("")
    return accepted


# --- Multi-turn categories -----------------------------------------------------------------------


@dataclass
class _Replay:
    """The conversation and tool list built so far while replaying one multi-turn entry."""

    entry_id: str
    category: str
    classes: list[str]
    environment: Environment
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    held_out: dict[str, list[str]] = field(default_factory=dict)
    repair_candidates: int = 0
    empty_turns: int = 0
    last_write_class: str | None = None


def _convert_multi_turn_category(
    bfcl_root: Path, category: str, progress: ProgressCallback | None
) -> list[Example]:
    loader = BackendLoader(bfcl_root=bfcl_root)
    docs = _FunctionDocs(bfcl_root)
    added_prompt = _added_functions_prompt(bfcl_root)
    pairs = list(_entries_with_answers(bfcl_root, category))
    _report(progress, 0, len(pairs), category)
    examples = []
    for entry, answer in pairs:
        assert answer is not None
        examples.extend(_replay_entry(entry, answer, category, loader, docs, added_prompt))
        _report(progress, 1, len(pairs), category)
    return examples


class _FunctionDocs(dict):
    """Tool schemas per backend class, read from `multi_turn_func_doc/` on first use."""

    def __init__(self, bfcl_root: Path) -> None:
        super().__init__()
        self._doc_dir = bfcl_root / _DATA_DIR / "multi_turn_func_doc"

    def __missing__(self, class_name: str) -> list[dict[str, Any]]:
        doc_file = BACKENDS[class_name][1]
        origin = f"multi_turn_func_doc/{doc_file}"
        tools = [_tool_schema(doc, origin) for doc in read_jsonl_docs(self._doc_dir / doc_file)]
        self[class_name] = tools
        return tools


def read_jsonl_docs(path: Path) -> list[dict[str, Any]]:
    """Read a function doc file: JSON lines of `{"name", "description", "parameters"}` objects."""
    if not path.is_file():
        raise DatasetError(f"BFCL function doc file {str(path)!r} not found.")
    try:
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: a line is not valid JSON: {error}") from error


def _added_functions_prompt(bfcl_root: Path) -> str:
    """Read the user message BFCL sends when held-out functions come back (`miss_func`).

    The constant is read from the wheel's prompt module with `ast`, without importing it.
    """
    path = bfcl_root / _PROMPTS_FILE
    if not path.is_file():
        raise DatasetError(f"BFCL prompt file {str(path)!r} not found.")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == _ADDED_FUNCTIONS_PROMPT_NAME
            for target in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise DatasetError(f"{path}: constant {_ADDED_FUNCTIONS_PROMPT_NAME} not found.")


def _replay_entry(
    entry: dict[str, Any],
    answer: dict[str, Any],
    category: str,
    loader: BackendLoader,
    docs: Mapping[str, list[dict[str, Any]]],
    added_prompt: str,
) -> list[Example]:
    origin = f"BFCL_v4_{category}.json"
    questions = _field(entry, "question", list, origin)
    turns = _field(answer, "ground_truth", list, f"possible_answer/{origin}")
    if len(questions) != len(turns):
        raise DatasetError(
            f"{origin}: entry {entry['id']!r} field 'question' has {len(questions)} turns but the "
            f"ground truth has {len(turns)}."
        )
    replay = _start_replay(entry, category, loader, docs, origin)
    held_out = replay.held_out = _held_out_functions(entry, origin)
    all_tools = _entry_tools(entry, docs, origin)
    for turn, (question, calls) in enumerate(zip(questions, turns)):
        if str(turn) in held_out:
            question = [{"role": "user", "content": added_prompt}]
        replay.tools = _tools_at_turn(all_tools, held_out, turn)
        if not isinstance(question, list) or not isinstance(calls, list):
            raise DatasetError(f"{origin}: entry {entry['id']!r} turn {turn} must be a list.")
        replay.messages.extend(dict(message) for message in question)
        _replay_turn(replay, turn, calls, origin)
    return replay.examples


def _start_replay(
    entry: dict[str, Any],
    category: str,
    loader: BackendLoader,
    docs: Mapping[str, list[dict[str, Any]]],
    origin: str,
) -> _Replay:
    classes = _field(entry, "involved_classes", list, origin)
    for class_name in classes:
        if class_name not in BACKENDS:
            raise DatasetError(
                f"{origin}: entry {entry['id']!r} field 'involved_classes' names unsupported "
                f"class {class_name!r}."
            )
    environment = Environment.create(
        loader,
        classes=classes,
        initial_config=entry.get("initial_config") or {},
        long_context=category == "multi_turn_long_context",
    )
    return _Replay(
        entry_id=entry["id"], category=category, classes=classes, environment=environment, tools=[]
    )


def _held_out_functions(entry: Mapping[str, Any], origin: str) -> dict[str, list[str]]:
    held_out = entry.get("missed_function") or {}
    if not isinstance(held_out, dict):
        raise DatasetError(f"{origin}: entry {entry['id']!r} field 'missed_function' must be a dict.")
    return held_out


def _entry_tools(
    entry: Mapping[str, Any], docs: Mapping[str, list[dict[str, Any]]], origin: str
) -> list[dict[str, Any]]:
    excluded = set(entry.get("excluded_function") or [])
    return [
        tool for class_name in entry["involved_classes"] for tool in docs[class_name]
        if tool["name"] not in excluded
    ]


def _tools_at_turn(
    all_tools: list[dict[str, Any]], held_out: Mapping[str, list[str]], turn: int
) -> list[dict[str, Any]]:
    # A function held out until turn k is offered from turn k on, as BFCL's inference loop does.
    hidden = {
        name for start, names in held_out.items() if int(start) > turn for name in names
    }
    return [tool for tool in all_tools if tool["name"] not in hidden]


def _replay_turn(replay: _Replay, turn: int, calls: list[Any], origin: str) -> None:
    if not calls:
        kind = _empty_turn_kind(replay, turn)
        replay.examples.append(_text_example(replay, turn, 0, kind))
        replay.empty_turns += 1
        return
    replay.last_write_class = None
    for step, text in enumerate(calls):
        call = _parse_ground_truth(replay, text, origin, turn)
        parameters = _signature_parameters(replay.environment, call.name)
        accepted = [accepted_from_call(call, parameters)]
        kind = _step_kind(replay, call)
        replay.examples.append(_call_example(replay, turn, step, call, kind, accepted))
        _maybe_add_repair(replay, turn, step, call, accepted)
        output, _ = replay.environment.execute(call)
        _append_call(replay.messages, call, output, call_id=f"call_t{turn}s{step}", kind=kind)
        replay.last_write_class = _write_class(replay, call)
    replay.examples.append(_text_example(replay, turn, len(calls), "final_answer"))


def _empty_turn_kind(replay: _Replay, turn: int) -> ActionKind:
    """Return the gold kind of a turn whose ground truth contains no call.

    In `miss_func`, the turn before a held-out function comes back needs that function, which is
    not on offer, so no call can serve it: a refusal (BLOCKED), which a verifier must tell apart
    from reporting finished work (final_answer). In `miss_param`, the first empty turn lacks a
    parameter that the next user message supplies. Other empty turns, as in `base`, need a reply
    without a call (e.g. an invoice asked for after its booking was cancelled).
    """
    if replay.category == "multi_turn_miss_func" and str(turn + 1) in replay.held_out:
        return "BLOCKED"
    # NOTE: in bfcl-eval 2026.3.23 every miss_param entry has one turn with a missing parameter
    # and it precedes the base-style empty turns, but entry 180 is misaligned with its base.
    if replay.category == "multi_turn_miss_param" and replay.empty_turns == 0:
        return "ask_clarification"
    return "final_answer"


def _parse_ground_truth(replay: _Replay, text: Any, origin: str, turn: int) -> ToolCall:
    def names(function: str) -> list[str]:
        return [parameter.name for parameter in _signature_parameters(replay.environment, function)]

    try:
        if not isinstance(text, str):
            raise ValueError(f"expected a call string, got {type(text).__name__}")
        call = parse_call(text, parameter_names=names)
    except (SyntaxError, ValueError) as error:
        raise DatasetError(
            f"possible_answer/{origin}: entry {replay.entry_id!r} field 'ground_truth[{turn}]' "
            f"holds an invalid call: {error}"
        ) from error
    if replay.environment.method(call.name) is None:
        raise DatasetError(
            f"possible_answer/{origin}: entry {replay.entry_id!r} field 'ground_truth[{turn}]' "
            f"calls {call.name!r}, which no class in {replay.classes} defines."
        )
    return call


def _step_kind(replay: _Replay, call: ToolCall) -> ActionKind:
    """Return `verifier` for a look-up right after a write of the same class, else the name's kind."""
    kind = kind_of_call(call.name)
    if replay.last_write_class is None or call.name in VERIFIER_EXCLUDED_CALLS:
        return kind
    if kind in ("file_read", "retrieval") and _class_of(replay, call.name) == replay.last_write_class:
        return "verifier"
    return kind


def _class_of(replay: _Replay, name: str) -> str | None:
    for class_name, instance in replay.environment.instances.items():
        if inspect.ismethod(getattr(instance, name, None)):
            return class_name
    return None


def _write_class(replay: _Replay, call: ToolCall) -> str | None:
    # A write is any call that is not a read or look-up: file writes and state-changing API calls.
    if kind_of_call(call.name) in ("file_read", "retrieval"):
        return None
    return _class_of(replay, call.name)


def _append_call(
    messages: list[dict[str, Any]], call: ToolCall, output: str, *, call_id: str, kind: ActionKind
) -> None:
    # `action_kind` lets prompts show earlier steps in the same `<kind>: <call>` form as the target.
    messages.append(
        {
            "role": "assistant",
            "content": "",
            "action_kind": kind,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": dict(call.arguments)},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": output})


def _call_example(
    replay: _Replay,
    turn: int,
    step: int,
    call: ToolCall,
    kind: ActionKind,
    accepted: list[dict[str, list]],
    *,
    messages: list[dict[str, Any]] | None = None,
    suffix: str = "",
) -> Example:
    return _example(
        replay,
        turn,
        step,
        Action(kind=kind, tool_calls=(call,)),
        accepted=accepted,
        messages=messages,
        suffix=suffix,
    )


def _text_example(replay: _Replay, turn: int, step: int, kind: ActionKind) -> Example:
    return _example(replay, turn, step, Action(kind=kind))


def _example(
    replay: _Replay,
    turn: int,
    step: int,
    action: Action,
    *,
    accepted: list[dict[str, list]] | None = None,
    messages: list[dict[str, Any]] | None = None,
    suffix: str = "",
) -> Example:
    index = replay.entry_id.rsplit("_", 1)[-1]
    return Example(
        id=f"{replay.entry_id}:t{turn}:s{step}{suffix}",
        source=f"bfcl/{replay.category}",
        scenario=f"multi_turn:{index}",
        messages=list(replay.messages if messages is None else messages),
        tools=replay.tools,
        action=action,
        accepted=accepted or [],
        metadata={
            "category": replay.category,
            "turn": turn,
            "step": step,
            "involved_classes": list(replay.classes),
        },
    )


# --- Repair examples -----------------------------------------------------------------------------


def _maybe_add_repair(
    replay: _Replay, turn: int, step: int, call: ToolCall, accepted: list[dict[str, list]]
) -> None:
    """Add a `repair` example for every `REPAIR_EVERY`-th call whose perturbation fails."""
    failure = _failing_perturbation(replay.environment, call)
    if failure is None:
        return
    replay.repair_candidates += 1
    if (replay.repair_candidates - 1) % REPAIR_EVERY != 0:
        return
    wrong_call, error_output = failure
    messages = list(replay.messages)
    _append_call(
        messages, wrong_call, error_output, call_id=f"call_t{turn}s{step}x", kind=kind_of_call(wrong_call.name)
    )
    replay.examples.append(
        _call_example(
            replay, turn, step, call, "repair", accepted, messages=messages, suffix=":repair"
        )
    )


def _failing_perturbation(environment: Environment, call: ToolCall) -> tuple[ToolCall, str] | None:
    """Find a one-argument typo of `call` that makes the real backend return an error.

    The perturbed call runs on a copy of the state, so the replayed state is left as it was.
    """
    for name, value in call.arguments.items():
        wrong_value = perturb_value(value)
        if wrong_value is None:
            continue
        wrong_call = ToolCall(name=call.name, arguments={**call.arguments, name: wrong_value})
        output, is_error = environment.copy().execute(wrong_call)
        if is_error:
            return wrong_call, output
    return None


def perturb_value(value: Any) -> Any:
    """Return a plausible wrong value: two letters swapped in a name, or a shifted id number.

    Strings keep their extension (`report.pdf` becomes `rpeort.pdf`); values that cannot be
    perturbed (booleans, short strings, lists) give None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value + 1000
    if not isinstance(value, str) or len(value) < 3:
        return None
    stem, dot, extension = value.rpartition(".")
    if not dot or not stem:
        stem, dot, extension = value, "", ""
    for index in range(1, len(stem) - 1):
        if stem[index] != stem[index + 1] and stem[index].isalnum() and stem[index + 1].isalnum():
            swapped = stem[:index] + stem[index + 1] + stem[index] + stem[index + 2 :]
            return swapped + dot + extension
    return None


def _report(progress: ProgressCallback | None, advance: int, total: int | None, category: str) -> None:
    if progress is not None:
        progress(advance, total, f"bfcl/{category}")
