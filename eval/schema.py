"""The eval-v3 next-action example, and JSONL/Parquet reading and writing with row validation.

An example is one agent step: the chat so far (`messages`, including assistant tool calls and tool
results), the tools on offer (`tools`, JSON schemas) and the gold next `action`. Messages use the
OpenAI chat layout so that any chat template can render them:

    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": {"a": true}}}]}
    {"role": "tool", "tool_call_id": "c1", "name": "ls", "content": "{\"current_directory_content\": []}"}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spec_agent.actions import ACTION_KINDS, Action
from spec_agent.errors import DatasetError

REQUIRED_FIELDS = ("id", "source", "scenario", "messages", "tools", "action")
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, kw_only=True)
class Example:
    """One next-action example of the eval-v3 schema."""

    id: str
    """Unique row id, e.g. `multi_turn_base_12:turn2:step1`."""
    source: str
    """Origin of the row, e.g. `bfcl/multi_turn_base`."""
    scenario: str
    """Split key: every row of one scenario lands in the same split."""
    messages: list[dict[str, Any]]
    """Chat so far in OpenAI layout; the agent decides its next action after the last message."""
    tools: list[dict[str, Any]]
    """Tools on offer as `{"name", "description", "parameters"}` JSON schemas."""
    action: Action
    """Gold next action."""
    accepted: list[dict[str, list[Any]]] = field(default_factory=list)
    """Per gold tool call, the accepted values of each argument (BFCL possible answers);
    empty means the gold arguments are the only accepted values."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (category, turn, step, involved classes)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the example as a JSON-compatible row."""
        return {
            "id": self.id,
            "source": self.source,
            "scenario": self.scenario,
            "messages": self.messages,
            "tools": self.tools,
            "action": self.action.to_dict(),
            "accepted": self.accepted,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, origin: str = "<memory>") -> Example:
        """Validate a row and build an example.

        Args:
            row: A mapping with at least the fields in `REQUIRED_FIELDS`.
            origin: File name used in error messages.

        Raises:
            DatasetError: A field is missing or malformed; the message names file, row id and field.
        """
        if not isinstance(row, dict):
            raise DatasetError(
                f"{origin}: a row is a {type(row).__name__}, not a JSON object with the fields "
                f"{', '.join(REQUIRED_FIELDS)}."
            )
        row_id = row.get("id", "<no id>")
        for name in REQUIRED_FIELDS:
            if name not in row or row[name] is None:
                raise DatasetError(f"{origin}: row {row_id!r} is missing field {name!r}.")
        _check_messages(row["messages"], origin, row_id)
        _check_tools(row["tools"], origin, row_id)
        action = _parse_action(row["action"], origin, row_id)
        return cls(
            id=str(row_id),
            source=str(row["source"]),
            scenario=str(row["scenario"]),
            messages=list(row["messages"]),
            tools=list(row["tools"]),
            action=action,
            accepted=list(row.get("accepted") or []),
            metadata=dict(row.get("metadata") or {}),
        )


def _check_messages(messages: Any, origin: str, row_id: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{origin}: row {row_id!r} field 'messages' must be a non-empty list.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise DatasetError(
                f"{origin}: row {row_id!r} field 'messages[{index}].role' must be one of "
                f"{sorted(MESSAGE_ROLES)}, got {message!r:.80}."
            )


def _check_tools(tools: Any, origin: str, row_id: Any) -> None:
    if not isinstance(tools, list):
        raise DatasetError(f"{origin}: row {row_id!r} field 'tools' must be a list of JSON schemas.")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise DatasetError(f"{origin}: row {row_id!r} field 'tools[{index}].name' is missing.")


def _parse_action(data: Any, origin: str, row_id: Any) -> Action:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{origin}: row {row_id!r} field 'action' is a string but not valid JSON: {error}"
            ) from error
    if not isinstance(data, dict) or data.get("kind") not in ACTION_KINDS:
        kind = data.get("kind") if isinstance(data, dict) else data
        raise DatasetError(
            f"{origin}: row {row_id!r} field 'action.kind' is {kind!r}; "
            f"expected one of {', '.join(ACTION_KINDS)}."
        )
    try:
        return Action.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{origin}: row {row_id!r} field 'action' is invalid: {error}") from error


def read_examples(path: str | Path, *, column_map: dict[str, str] | None = None) -> list[Example]:
    """Read examples from a `.jsonl` or `.parquet` file.

    Args:
        path: File to read.
        column_map: Renames applied to each row first, from the file's column to the schema field,
            e.g. `{"context": "messages"}`.

    Raises:
        DatasetError: The file type is unsupported or a row is malformed.
    """
    path = Path(path)
    return [
        Example.from_dict(_rename(row, column_map), origin=str(path)) for row in _iter_rows(path)
    ]


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise DatasetError(f"Dataset file {str(path)!r} not found.")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise DatasetError(f"{path}: line {number} is not valid JSON: {error}") from error
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            yield {key: _maybe_json(value) for key, value in row.items()}
    else:
        raise DatasetError(f"Unsupported dataset file {str(path)!r}; use .jsonl or .parquet.")


def _maybe_json(value: Any) -> Any:
    # Parquet files written by `write_examples` store nested fields as JSON strings.
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _rename(row: dict[str, Any], column_map: dict[str, str] | None) -> dict[str, Any]:
    if not column_map:
        return row
    return {column_map.get(key, key): value for key, value in row.items()}


def write_examples(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples to `.jsonl` or `.parquet` (nested fields as JSON strings) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [example.to_dict() for example in examples]
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [
            {key: json.dumps(value) if not isinstance(value, str) else value for key, value in row.items()}
            for row in rows
        ]
        pq.write_table(pa.Table.from_pylist(flat), path)
    else:
        raise DatasetError(f"Unsupported dataset file {str(path)!r}; use .jsonl or .parquet.")
    return path
