"""Synthetic examples and tiny model folders shared by the benchmark-runner tests."""

from __future__ import annotations

from spec_agent.actions import Action, ToolCall
from spec_agent.eval.schema import Example
from tests.tiny_models import build_causal_lm

TOOLS = [{"name": "ls", "description": "List files.",
          "parameters": {"type": "object", "properties": {"a": {"type": "boolean"}}}}]


def make_examples(count: int) -> list[Example]:
    """Return `count` one-step examples whose gold action is `file_read: ls()`."""
    return [
        Example(
            id=f"ex{index}",
            source="test/synthetic",
            scenario=f"s{index}",
            messages=[{"role": "user", "content": f"List the files, request {index}."}],
            tools=TOOLS,
            action=Action(kind="file_read", tool_calls=(ToolCall(name="ls", arguments={}),)),
        )
        for index in range(count)
    ]


def tiny_model_dirs(tmp_path_factory) -> tuple[str, str]:
    """Build two different tiny causal LMs and return their folders (cheap, strong)."""
    cheap = build_causal_lm(tmp_path_factory.mktemp("cheap"), seed=1)
    strong = build_causal_lm(tmp_path_factory.mktemp("strong"), seed=2)
    return str(cheap), str(strong)
