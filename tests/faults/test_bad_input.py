"""Bad data and configuration: malformed dataset rows, oversized contexts and invalid CLI values.

Malformed rows raise `DatasetError` naming the file, the row id and the field; an oversized
context is cut with a warning, never silently; an invalid CLI value exits with code 2 and a
message that names the value and the fix.
"""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from spec_agent import prompts
from spec_agent.cli import app
from spec_agent.errors import DatasetError
from spec_agent.eval.schema import read_examples
from tests.security.tally import TALLY

GOOD_ROW = {
    "id": "row-1",
    "source": "test/synthetic",
    "scenario": "s1",
    "messages": [{"role": "user", "content": "List the files."}],
    "tools": [{"name": "ls", "description": "List files.", "parameters": {"type": "object"}}],
    "action": {"kind": "file_read", "tool_calls": [{"name": "ls", "arguments": {}}]},
}


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def with_changes(**changes) -> dict:
    row = dict(GOOD_ROW)
    for key, value in changes.items():
        if value is ...:
            row.pop(key)
        else:
            row[key] = value
    return row


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (with_changes(source=...), "'source'"),
        (with_changes(action=...), "'action'"),
        (with_changes(messages=None), "'messages'"),
        (with_changes(messages="hello"), "'messages'"),
        (with_changes(messages=[]), "'messages'"),
        (with_changes(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (with_changes(messages=[{"content": "x"}]), "messages[0].role"),
        (with_changes(tools={"name": "ls"}), "'tools'"),
        (with_changes(tools=[{"description": "no name"}]), "tools[0].name"),
        (with_changes(tools=[{"name": 3}]), "tools[0].name"),
        (with_changes(action={"kind": "teleport"}), "action.kind"),
        (with_changes(action={"kind": "file_read"}), "'action'"),
        (with_changes(action={"kind": "file_read", "tool_calls": [{"arguments": {}}]}), "'action'"),
        (with_changes(action=["file_read"]), "action.kind"),
        (with_changes(action=42), "action.kind"),
    ],
    ids=["no-source", "no-action", "null-messages", "string-messages", "empty-messages",
         "unknown-role", "missing-role", "tools-dict", "tool-without-name", "tool-name-int",
         "unknown-kind", "tool-kind-without-calls", "call-without-name", "action-list",
         "action-int"],
)
def test_malformed_row_names_file_row_and_field(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [GOOD_ROW | {"id": "row-0"}, row])
    TALLY["faults injected"] += 1
    with pytest.raises(DatasetError) as raised:
        read_examples(path)
    message = str(raised.value)
    assert str(path) in message
    assert "'row-1'" in message
    assert field in message
    TALLY["faults survived"] += 1


def test_action_json_string_that_is_invalid(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [with_changes(action="{not json")])
    TALLY["faults injected"] += 1
    with pytest.raises(DatasetError) as raised:
        read_examples(path)
    assert "'row-1'" in str(raised.value)
    assert "action" in str(raised.value)
    TALLY["faults survived"] += 1


def test_invalid_json_line_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n" + '{"id": "row-2", "source": \n', encoding="utf-8")
    TALLY["faults injected"] += 1
    with pytest.raises(DatasetError, match="line 2 is not valid JSON") as raised:
        read_examples(path)
    assert str(path) in str(raised.value)
    TALLY["faults survived"] += 1


def test_parquet_missing_column_names_field(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {key: value if isinstance(value, str) else json.dumps(value)
           for key, value in GOOD_ROW.items() if key != "tools"}
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([row]), path)
    TALLY["faults injected"] += 1
    with pytest.raises(DatasetError) as raised:
        read_examples(path)
    message = str(raised.value)
    assert str(path) in message
    assert "'row-1'" in message
    assert "'tools'" in message
    TALLY["faults survived"] += 1


@pytest.mark.parametrize("line", ["[1, 2]", "42", '"row"', "null"])
def test_non_object_line_raises_dataset_error(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    TALLY["faults injected"] += 1
    with pytest.raises(DatasetError, match="not a JSON object") as raised:
        read_examples(path)
    assert str(path) in str(raised.value)
    TALLY["faults survived"] += 1


@pytest.mark.parametrize("name", ["data.csv", "missing.jsonl"])
def test_unsupported_or_missing_file(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("id\n1\n")
    with pytest.raises(DatasetError, match=name):
        read_examples(path)


def tool_message(length: int) -> dict:
    return {"role": "tool", "name": "cat", "tool_call_id": "c1", "content": "x" * length}


def test_tool_output_cut_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(prompts, "_truncations", prompts._TruncationCounter())
    messages = [{"role": "user", "content": "Read it."}, tool_message(5000), tool_message(7000)]
    with caplog.at_level(logging.DEBUG, logger="spec_agent.prompts"):
        chat = prompts.render_chat(messages, [])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4400 characters" in warnings[0].getMessage()
    assert prompts.truncated_tool_results() == 2
    assert chat[-1]["content"].count("characters cut]") == 2


def test_short_tool_output_not_counted(monkeypatch):
    monkeypatch.setattr(prompts, "_truncations", prompts._TruncationCounter())
    prompts.render_chat([tool_message(prompts.MAX_TOOL_OUTPUT_CHARS)], [])
    assert prompts.truncated_tool_results() == 0


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_causal_lm

    return str(build_causal_lm(tmp_path_factory.mktemp("tiny")))


def test_encode_drops_old_messages_with_warning(tiny_model_dir, caplog):
    from spec_agent.hf import GenerationConfig, HFChatModel

    model = HFChatModel(tiny_model_dir, role="cheap",
                        generation=GenerationConfig(max_new_tokens=2, max_prompt_tokens=120))
    chat = [{"role": "system", "content": "You are the decision step."}]
    chat += [{"role": "user" if index % 2 == 0 else "assistant",
              "content": f"file_read: ls(a=True) number {index}"} for index in range(20)]
    with caplog.at_level(logging.WARNING, logger="spec_agent.hf"):
        ids = model.encode(chat)
    assert ids.shape[1] <= 120
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropped its" in warnings[0]


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        (["--configs", "XYZ"], ["'X'", "A, B, C, D, E"]),
        (["--limit", "-1"], ["-1", "limit", ">= 0"]),
        (["--judge-threshold", "2"], ["judge=2.0", "[0, 1]"]),
        (["--verifier-threshold", "-0.5"], ["verifier=-0.5", "[0, 1]"]),
    ],
    ids=["configs", "limit", "judge-threshold", "verifier-threshold"],
)
def test_cli_invalid_value_exits_2(tmp_path, monkeypatch, arguments, names):
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "runs"), *arguments])
    assert result.exit_code == 2, result.output
    for name in names:
        assert name in result.output
    assert not (tmp_path / "runs").exists()
