"""Tests of the BFCL converter on small inline entries and, when available, the real data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from spec_agent.errors import DatasetError
from spec_agent.eval.bfcl import (
    MAX_TOOL_OUTPUT_CHARS,
    build_examples,
    gold_arguments,
    kind_of_call,
    parse_call,
    perturb_value,
    serialise_output,
    to_json_schema,
)
from spec_agent.eval.matching import action_matches

BACKEND_DIR = Path("bfcl_eval/eval_checker/multi_turn_eval/func_source_code")
DATA_DIR = Path("bfcl_eval/data")


def _real_root() -> Path | None:
    value = os.environ.get("SPEC_AGENT_BFCL_ROOT")
    if not value or not (Path(value) / BACKEND_DIR / "gorilla_file_system.py").is_file():
        return None
    return Path(value)


needs_bfcl = pytest.mark.skipif(
    _real_root() is None,
    reason="set SPEC_AGENT_BFCL_ROOT to the extracted bfcl-eval wheel (the folder with bfcl_eval/)",
)

SIMPLE_ENTRY = {
    "id": "simple_python_0",
    "question": [[{"role": "user", "content": "Find the area of a triangle with a base of 10 units and height of 5 units."}]],
    "function": [
        {
            "name": "calculate_triangle_area",
            "description": "Calculate the area of a triangle given its base and height.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer", "description": "The base of the triangle."},
                    "height": {"type": "integer", "description": "The height of the triangle."},
                    "unit": {"type": "string", "description": "The unit of measure."},
                },
                "required": ["base", "height"],
            },
        }
    ],
}
SIMPLE_ANSWER = {
    "id": "simple_python_0",
    "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}],
}
PARALLEL_ENTRY = {
    "id": "parallel_0",
    "question": [[{"role": "user", "content": "Play Taylor Swift for 20 minutes and Maroon 5 for 15."}]],
    "function": [
        {
            "name": "spotify.play",
            "description": "Play tracks from an artist.",
            "parameters": {
                "type": "dict",
                "properties": {"artist": {"type": "string"}, "duration": {"type": "integer"}},
                "required": ["artist", "duration"],
            },
        }
    ],
}
PARALLEL_ANSWER = {
    "id": "parallel_0",
    "ground_truth": [
        {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
        {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
    ],
}
IRRELEVANCE_ENTRY = {
    "id": "irrelevance_0",
    "question": [[{"role": "user", "content": "Calculate the area of a triangle."}]],
    "function": [
        {
            "name": "determine_body_mass_index",
            "description": "Calculate body mass index.",
            "parameters": {"type": "dict", "properties": {"weight": {"type": "float"}}, "required": ["weight"]},
        }
    ],
}

# multi_turn_base_0 of bfcl-eval 2026.3.23 (Apache-2.0), without its unused Twitter state.
BASE_0_ENTRY = {
    "id": "multi_turn_base_0",
    "question": [
        [{"role": "user", "content": "Move 'final_report.pdf' within document directory to 'temp' directory in document. Make sure to create the directory"}],
        [{"role": "user", "content": "Perform a detailed search using grep to identify sections in the file pertaining to 'budget analysis'."}],
        [{"role": "user", "content": "Upon identifying the requisite 'budget analysis' content, sort the 'final_report.pdf' by line for improved clarity and comprehension."}],
        [{"role": "user", "content": "Move 'previous_report.pdf' in document directory to temp as well and having final report also there, proceed to juxtapose it with 'previous_report.pdf' to detect any critical alterations."}],
    ],
    "initial_config": {
        "GorillaFileSystem": {
            "root": {
                "workspace": {
                    "type": "directory",
                    "contents": {
                        "document": {
                            "type": "directory",
                            "contents": {
                                "final_report.pdf": {"type": "file", "content": "Year2024 This is the final report content including budget analysis and other sections."},
                                "previous_report.pdf": {"type": "file", "content": "Year203 This is the previous report content with different budget analysis."},
                            },
                        },
                        "archive": {"type": "directory", "contents": {}},
                    },
                }
            }
        }
    },
    "involved_classes": ["TwitterAPI", "GorillaFileSystem"],
    "excluded_function": ["cp"],
}
BASE_0_ANSWER = {
    "id": "multi_turn_base_0",
    "ground_truth": [
        ["cd(folder='document')", "mkdir(dir_name='temp')", "mv(source='final_report.pdf', destination='temp')"],
        ["cd(folder='temp')", "grep(file_name='final_report.pdf',pattern='budget analysis')"],
        ["sort('final_report.pdf')"],
        ["cd(folder='..')", "mv(source='previous_report.pdf',destination='temp')", "cd(folder='temp')", "diff(file_name1='final_report.pdf',file_name2='previous_report.pdf')"],
    ],
}
FILE_SYSTEM = {
    "GorillaFileSystem": {
        "root": {"alex": {"type": "directory", "contents": {"notes.txt": {"type": "file", "content": "b\na"}}}}
    }
}


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _write_category(root: Path, category: str, entries: list[dict], answers: list[dict] | None) -> None:
    _write_rows(root / DATA_DIR / f"BFCL_v4_{category}.json", entries)
    if answers is not None:
        _write_rows(root / DATA_DIR / "possible_answer" / f"BFCL_v4_{category}.json", answers)


@pytest.fixture()
def single_turn_root(tmp_path: Path) -> Path:
    _write_category(tmp_path, "simple_python", [SIMPLE_ENTRY], [SIMPLE_ANSWER])
    _write_category(tmp_path, "parallel", [PARALLEL_ENTRY], [PARALLEL_ANSWER])
    _write_category(tmp_path, "irrelevance", [IRRELEVANCE_ENTRY], None)
    return tmp_path


def _multi_turn_root(tmp_path: Path, category: str, entries: list[dict], answers: list[dict]) -> Path:
    """Build a BFCL root with copies of the real backend sources and the given entries."""
    real = _real_root()
    assert real is not None
    for name in ("gorilla_file_system.py", "long_context.py", "posting_api.py"):
        target = tmp_path / BACKEND_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / BACKEND_DIR / name, target)
    for name in ("gorilla_file_system.json", "posting_api.json"):
        target = tmp_path / DATA_DIR / "multi_turn_func_doc" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / DATA_DIR / "multi_turn_func_doc" / name, target)
    prompts = tmp_path / "bfcl_eval/constants/default_prompts.py"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(real / "bfcl_eval/constants/default_prompts.py", prompts)
    _write_category(tmp_path, category, entries, answers)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ls", "file_read"),
        ("cd", "file_read"),
        ("sort", "file_read"),
        ("mkdir", "file_write"),
        ("echo", "file_write"),
        ("get_ticket", "retrieval"),
        ("displayCarStatus", "retrieval"),
        ("ticket_get_login_status", "retrieval"),
        ("hotel.find", "retrieval"),
        ("post_tweet", "tool_call"),
        ("spotify.play", "tool_call"),
        ("math.sort", "tool_call"),
    ],
)
def test_kind_of_call_table(name: str, kind: str) -> None:
    assert kind_of_call(name) == kind


def test_json_schema_types_converted() -> None:
    schema = to_json_schema(
        {
            "type": "dict",
            "properties": {
                "x": {"type": "float", "default": {"type": "weird"}},
                "pair": {"type": "tuple", "items": {"type": "float"}},
                "anything": {"type": "any"},
            },
        }
    )
    assert schema["type"] == "object"
    assert schema["properties"]["x"] == {"type": "number", "x-bfcl-type": "float", "default": {"type": "weird"}}
    assert schema["properties"]["pair"]["type"] == "array"
    assert schema["properties"]["pair"]["x-bfcl-type"] == "tuple"
    assert schema["properties"]["pair"]["items"] == {"type": "number", "x-bfcl-type": "float"}
    assert schema["properties"]["anything"] == {"x-bfcl-type": "any"}


def test_json_schema_unknown_type_raises() -> None:
    with pytest.raises(DatasetError, match="'bogus'"):
        to_json_schema({"type": "dict", "properties": {"x": {"type": "bogus"}}})


def test_parse_call_keywords_and_positional() -> None:
    call = parse_call("sort('a.txt')", parameter_names=lambda name: ["file_name"])
    assert call.name == "sort"
    assert call.arguments == {"file_name": "a.txt"}
    call = parse_call("tail(file_name='log.txt',lines=20)")
    assert call.arguments == {"file_name": "log.txt", "lines": 20}


@pytest.mark.parametrize(
    "text",
    ["cd(folder=__import__('os').getcwd())", "os.system('ls')", "ls(**{'a': True})", "1 + 2"],
)
def test_parse_call_rejects_code(text: str) -> None:
    with pytest.raises(ValueError):
        parse_call(text)


def test_gold_arguments_optional_and_nested() -> None:
    accepted = {"size": ["large"], "note": [""], "extra": ["", "hot"], "prefs": [{"milk": ["oat"], "sugar": [""]}]}
    assert gold_arguments(accepted) == {"size": "large", "extra": "hot", "prefs": {"milk": "oat"}}
    assert gold_arguments({"origin": [""]}, required=["origin"]) == {"origin": ""}


def test_perturb_value_cases() -> None:
    assert perturb_value("final_report.pdf") == "fnial_report.pdf"
    assert perturb_value("temp") == "tmep"
    assert perturb_value(12) == 1012
    assert perturb_value(True) is None
    assert perturb_value("..") is None


def test_serialise_output_truncates() -> None:
    text = serialise_output({"file_content": "x" * (MAX_TOOL_OUTPUT_CHARS + 500)})
    assert len(text) < MAX_TOOL_OUTPUT_CHARS + 60
    assert text.endswith("...[truncated 520 characters]")
    assert serialise_output(None) == "null"


def test_single_turn_examples(single_turn_root: Path) -> None:
    examples = build_examples(single_turn_root, categories=["simple_python", "parallel", "irrelevance"])
    simple, parallel, irrelevant = examples
    assert simple.id == "simple_python_0"
    assert simple.scenario == "simple_python:simple_python_0"
    assert simple.source == "bfcl/simple_python"
    assert simple.action.kind == "tool_call"
    assert simple.action.tool_call.arguments == {"base": 10, "height": 5, "unit": "units"}
    assert simple.accepted == [SIMPLE_ANSWER["ground_truth"][0]["calculate_triangle_area"]]
    assert simple.tools[0]["parameters"]["type"] == "object"
    assert [call.arguments["artist"] for call in parallel.action.tool_calls] == ["Taylor Swift", "Maroon 5"]
    assert irrelevant.action.kind == "BLOCKED"
    assert irrelevant.tools[0]["parameters"]["properties"]["weight"]["type"] == "number"
    assert all(action_matches(example.action, example) for example in examples)


def test_progress_reports_each_entry(single_turn_root: Path) -> None:
    calls = []
    build_examples(single_turn_root, categories=["parallel"], progress=lambda *args: calls.append(args))
    assert calls == [(0, 1, "bfcl/parallel"), (1, 1, "bfcl/parallel")]


def test_missing_ground_truth_raises(tmp_path: Path) -> None:
    _write_category(tmp_path, "simple_python", [SIMPLE_ENTRY], [{"id": "simple_python_0"}])
    with pytest.raises(DatasetError) as error:
        build_examples(tmp_path, categories=["simple_python"])
    message = str(error.value)
    assert "BFCL_v4_simple_python.json" in message
    assert "'simple_python_0'" in message
    assert "'ground_truth'" in message


def test_malformed_question_raises(tmp_path: Path) -> None:
    _write_category(tmp_path, "simple_python", [{**SIMPLE_ENTRY, "question": "hi"}], [SIMPLE_ANSWER])
    with pytest.raises(DatasetError, match="'question'"):
        build_examples(tmp_path, categories=["simple_python"])


def test_unknown_category_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'memory'"):
        build_examples(tmp_path, categories=["memory"])


def test_self_failing_gold_skipped(tmp_path: Path) -> None:
    answer = {"id": "simple_python_0", "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "side": [3]}}]}
    _write_category(tmp_path, "simple_python", [SIMPLE_ENTRY], [answer])
    skipped: list[str] = []
    assert build_examples(tmp_path, categories=["simple_python"], skipped=skipped) == []
    assert skipped == ["simple_python_0"]


@needs_bfcl
def test_multi_turn_base_0(tmp_path: Path) -> None:
    root = _multi_turn_root(tmp_path, "multi_turn_base", [BASE_0_ENTRY], [BASE_0_ANSWER])
    examples = build_examples(root, categories=["multi_turn_base"])
    # 10 calls, 4 turn ends and 3 repairs (calls 1, 4 and 7 of 7 with a failing typo).
    assert len(examples) == 17
    first = examples[0]
    assert first.id == "multi_turn_base_0:t0:s0"
    assert first.scenario == "multi_turn:0"
    assert first.action.kind == "file_read"
    assert first.action.tool_call.name == "cd"
    assert first.action.tool_call.arguments == {"folder": "document"}
    assert first.messages == BASE_0_ENTRY["question"][0]
    assert "cp" not in {tool["name"] for tool in first.tools}
    assert "post_tweet" in {tool["name"] for tool in first.tools}
    assert first.metadata == {"category": "multi_turn_base", "turn": 0, "step": 0, "involved_classes": ["TwitterAPI", "GorillaFileSystem"]}
    kinds = [example.action.kind for example in examples]
    assert kinds.count("final_answer") == 4
    assert kinds.count("repair") == 3


@needs_bfcl
def test_multi_turn_history_and_repair(tmp_path: Path) -> None:
    root = _multi_turn_root(tmp_path, "multi_turn_base", [BASE_0_ENTRY], [BASE_0_ANSWER])
    examples = {example.id: example for example in build_examples(root, categories=["multi_turn_base"])}
    repair = examples["multi_turn_base_0:t0:s0:repair"]
    assert repair.action.kind == "repair"
    assert repair.action.tool_call.arguments == {"folder": "document"}
    wrong_call = repair.messages[-2]["tool_calls"][0]
    assert wrong_call["function"] == {"name": "cd", "arguments": {"folder": "dcoument"}}
    assert repair.messages[-1]["content"] == '{"error": "cd: \'dcoument\': No such file or directory"}'
    assert repair.messages[-1]["tool_call_id"] == wrong_call["id"]
    grep = examples["multi_turn_base_0:t1:s1"]
    assert grep.messages[-1] == {"role": "tool", "tool_call_id": "call_t1s0", "name": "cd", "content": '{"current_working_directory": "temp"}'}
    sort = examples["multi_turn_base_0:t2:s0"]
    assert sort.action.tool_call.arguments == {"file_name": "final_report.pdf"}
    end = examples["multi_turn_base_0:t1:s2"]
    assert end.action.kind == "final_answer"
    assert json.loads(end.messages[-1]["content"])["matching_lines"] == [
        "Year2024 This is the final report content including budget analysis and other sections."
    ]


@needs_bfcl
def test_multi_turn_verifier_after_write(tmp_path: Path) -> None:
    entry = {
        "id": "multi_turn_base_7",
        "question": [[{"role": "user", "content": "Create a.txt and list the folder."}]],
        "initial_config": FILE_SYSTEM,
        "involved_classes": ["GorillaFileSystem"],
    }
    answer = {"id": "multi_turn_base_7", "ground_truth": [["touch(file_name='a.txt')", "ls()", "cd(folder='..')"]]}
    root = _multi_turn_root(tmp_path, "multi_turn_base", [entry], [answer])
    examples = {example.id: example for example in build_examples(root, categories=["multi_turn_base"])}
    assert examples["multi_turn_base_7:t0:s0"].action.kind == "file_write"
    listing = examples["multi_turn_base_7:t0:s1"]
    assert listing.action.kind == "verifier"
    assert listing.accepted == [{"a": [False, ""]}]
    assert examples["multi_turn_base_7:t0:s2"].messages[-1]["content"] == '{"current_directory_content": ["notes.txt", "a.txt"]}'


@needs_bfcl
def test_multi_turn_miss_func_blocked(tmp_path: Path) -> None:
    entry = {
        "id": "multi_turn_miss_func_3",
        "question": [[{"role": "user", "content": "Sort notes.txt."}], []],
        "initial_config": FILE_SYSTEM,
        "involved_classes": ["GorillaFileSystem"],
        "missed_function": {"1": ["sort"]},
    }
    answer = {"id": "multi_turn_miss_func_3", "ground_truth": [[], ["sort(file_name='notes.txt')"]]}
    root = _multi_turn_root(tmp_path, "multi_turn_miss_func", [entry], [answer])
    examples = {example.id: example for example in build_examples(root, categories=["multi_turn_miss_func"])}
    blocked = examples["multi_turn_miss_func_3:t0:s0"]
    sort = examples["multi_turn_miss_func_3:t1:s0"]
    end = examples["multi_turn_miss_func_3:t1:s1"]
    assert blocked.action.kind == "BLOCKED"
    assert "sort" not in {tool["name"] for tool in blocked.tools}
    assert sort.action.tool_call.name == "sort"
    assert "sort" in {tool["name"] for tool in sort.tools}
    assert sort.messages[-1]["role"] == "user"
    assert "more functions" in sort.messages[-1]["content"]
    assert json.loads(end.messages[-1]["content"]) == {"sorted_content": "a\nb"}


@needs_bfcl
def test_multi_turn_miss_param_asks(tmp_path: Path) -> None:
    entry = {
        "id": "multi_turn_miss_param_3",
        "question": [[{"role": "user", "content": "Show me a file."}], [{"role": "user", "content": "notes.txt"}]],
        "initial_config": FILE_SYSTEM,
        "involved_classes": ["GorillaFileSystem"],
    }
    answer = {"id": "multi_turn_miss_param_3", "ground_truth": [[], ["cat(file_name='notes.txt')"]]}
    root = _multi_turn_root(tmp_path, "multi_turn_miss_param", [entry], [answer])
    examples = build_examples(root, categories=["multi_turn_miss_param"])
    assert [example.action.kind for example in examples[:2]] == ["ask_clarification", "file_read"]
    assert examples[1].scenario == "multi_turn:3"


@needs_bfcl
def test_invalid_call_string_raises(tmp_path: Path) -> None:
    entry = {**BASE_0_ENTRY, "question": BASE_0_ENTRY["question"][:1]}
    answer = {"id": "multi_turn_base_0", "ground_truth": [["cd(folder=open('x'))"]]}
    root = _multi_turn_root(tmp_path, "multi_turn_base", [entry], [answer])
    with pytest.raises(DatasetError, match=r"multi_turn_base_0.*ground_truth\[0\]"):
        build_examples(root, categories=["multi_turn_base"])


@pytest.mark.slow
@needs_bfcl
def test_real_multi_turn_base_counts() -> None:
    examples = build_examples(_real_root(), categories=["multi_turn_base"])
    calls = [example for example in examples if example.action.tool_calls and example.action.kind != "repair"]
    assert len(calls) == 1142
    assert sum(example.action.kind == "final_answer" for example in examples) == 734
    assert len({example.id for example in examples}) == len(examples)
    assert all(action_matches(example.action, example) for example in examples)


@pytest.mark.slow
@needs_bfcl
def test_real_single_turn_golds_match() -> None:
    skipped: list[str] = []
    examples = build_examples(_real_root(), categories=["simple_python", "live_multiple", "parallel_multiple"], skipped=skipped)
    assert len(examples) + len(skipped) == 400 + 1053 + 200
    assert len(skipped) <= 6
    assert all(action_matches(example.action, example) for example in examples)
