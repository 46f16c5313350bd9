"""Tests of the scenario split, the dataset build and its card."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from spec_agent.actions import ACTION_KINDS, Action, ToolCall
from spec_agent.errors import DatasetError
from spec_agent.eval.dataset import DatasetCard, build_dataset, load_split, scenario_position, split_examples
from spec_agent.eval.schema import Example

DATA_DIR = Path("bfcl_eval/data")
ENTRY = {
    "id": "simple_python_0",
    "question": [[{"role": "user", "content": "Area of a triangle, base 10, height 5."}]],
    "function": [
        {
            "name": "calculate_triangle_area",
            "description": "Calculate the area of a triangle.",
            "parameters": {"type": "dict", "properties": {"base": {"type": "integer"}, "height": {"type": "integer"}}, "required": ["base", "height"]},
        }
    ],
}
ANSWER = {"id": "simple_python_0", "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5]}}]}


def _example(index: int, scenario: str) -> Example:
    return Example(
        id=f"row{index}",
        source="bfcl/test",
        scenario=scenario,
        messages=[{"role": "user", "content": "hi"}],
        tools=[],
        action=Action(kind="tool_call", tool_calls=(ToolCall(name="ls"),)) if index % 2 else Action(kind="final_answer"),
    )


EXAMPLES = [_example(index, f"multi_turn:{index % 40}") for index in range(200)]


def test_split_keeps_scenarios_apart() -> None:
    splits = split_examples(EXAMPLES)
    train = {example.scenario for example in splits["train"]}
    held_out = {example.scenario for example in splits["eval"]}
    assert not train & held_out
    assert len(splits["train"]) + len(splits["eval"]) == len(EXAMPLES)
    assert 5 <= len(held_out) <= 25


def test_split_deterministic() -> None:
    first = split_examples(EXAMPLES)
    second = split_examples(list(EXAMPLES))
    assert [example.id for example in first["eval"]] == [example.id for example in second["eval"]]
    assert scenario_position("multi_turn:0") == scenario_position("multi_turn:0")
    # Pinned so that a change of the hash rule shows up as a moved scenario.
    digest = hashlib.sha256(b"spec-agent-v1:multi_turn:0").digest()
    assert scenario_position("multi_turn:0") == int.from_bytes(digest[:8], "big") / 2**64


def test_split_salt_changes_assignment() -> None:
    default = {example.scenario for example in split_examples(EXAMPLES)["eval"]}
    salted = {example.scenario for example in split_examples(EXAMPLES, salt="other")["eval"]}
    assert default != salted


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_invalid_fraction_raises(fraction: float) -> None:
    with pytest.raises(DatasetError, match="eval_fraction"):
        split_examples(EXAMPLES, eval_fraction=fraction)


def test_build_dataset_small(tmp_path: Path) -> None:
    root = tmp_path / "bfcl"
    for folder, row in ((DATA_DIR, ENTRY), (DATA_DIR / "possible_answer", ANSWER)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "BFCL_v4_simple_python.json").write_text(json.dumps(row) + "\n")
    meta = root / "bfcl_eval-2026.3.23.dist-info" / "METADATA"
    meta.parent.mkdir()
    meta.write_text("Name: bfcl-eval\nVersion: 2026.3.23\n")
    out = tmp_path / "out"
    card = build_dataset(root, out, categories=["simple_python"])
    assert isinstance(card, DatasetCard)
    assert card.bfcl_version == "2026.3.23"
    assert card.license == "Apache-2.0"
    assert set(card.support["train"]) == set(ACTION_KINDS)
    assert sum(card.support["train"].values()) + sum(card.support["eval"].values()) == 1
    rows = load_split(out, "train") + load_split(out, "eval")
    assert [row.id for row in rows] == ["simple_python_0"]
    for split in ("train", "eval"):
        assert card.sha256[split] == hashlib.sha256((out / f"{split}.jsonl").read_bytes()).hexdigest()
    saved = json.loads((out / "card.json").read_text())
    assert saved["support"] == card.support
    markdown = (out / "CARD.md").read_text()
    assert "| verifier | 0 | 0 |" in markdown
    assert "Apache-2.0" in markdown
    assert "BLOCKED" in markdown


def test_load_split_unknown_name_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'test'"):
        load_split(tmp_path, "test")


@pytest.mark.slow
def test_build_dataset_real(tmp_path: Path) -> None:
    value = os.environ.get("SPEC_AGENT_BFCL_ROOT")
    if not value or not (Path(value) / DATA_DIR / "BFCL_v4_multi_turn_base.json").is_file():
        pytest.skip("set SPEC_AGENT_BFCL_ROOT to the extracted bfcl-eval wheel (the folder with bfcl_eval/)")
    card = build_dataset(Path(value), tmp_path)
    eval_rows = load_split(tmp_path, "eval")
    train_rows = load_split(tmp_path, "train")
    assert len(eval_rows) >= 1000
    assert not {row.scenario for row in eval_rows} & {row.scenario for row in train_rows}
    assert all(card.support["eval"][kind] > 0 for kind in ACTION_KINDS)
    again = build_dataset(Path(value), tmp_path / "again")
    assert again.sha256 == card.sha256
