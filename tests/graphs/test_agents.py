"""The example BFCL agent: whole episodes with scripted models and the state-based check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from spec_agent.eval.bfcl import BackendLoader, Environment
from spec_agent.graphs.agents import (
    EXAMPLE_CLASSES,
    bfcl_tools,
    load_episodes,
    public_state,
    run_episode,
    same_state,
)
from spec_agent.node import speculative_node
from tests.chat_fakes import ScriptedVerifier, scripted, tool_reply

ROOT = os.environ.get("SPEC_AGENT_BFCL_ROOT")
pytestmark = pytest.mark.skipif(ROOT is None, reason="the bfcl-eval asset is not fetched")

GOLD_TURNS = [
    [tool_reply("find", path=".", name="test"), AIMessage("final_answer: Found them.")],
    [
        tool_reply("cd", folder="projects"),
        tool_reply("cd", folder="photography"),
        tool_reply("cp", source="test_image1.jpg", destination="backup_tests"),
        tool_reply("cp", source="test_document.txt", destination="backup_tests"),
        AIMessage("final_answer: Copied both."),
    ],
]


@pytest.fixture(scope="module")
def episode():
    episodes = load_episodes(Path(ROOT), split="eval", limit=2)
    chosen = [item for item in episodes if item.entry_id == "multi_turn_base_3"]
    assert chosen, [item.entry_id for item in episodes]
    return chosen[0]


@pytest.fixture(scope="module")
def loader():
    return BackendLoader(bfcl_root=Path(ROOT))


def strong_node(replies, verifier=None, cheap=None):
    def make(tools):
        return speculative_node(cheap, verifier, scripted(*replies), tools=tools)

    return make


def test_gold_calls_pass_state_check(episode, loader):
    replies = [reply for turn in GOLD_TURNS for reply in turn]
    result = run_episode(episode, strong_node(replies), loader=loader, config_name="A", max_steps_per_turn=6)
    assert result.success is True
    assert result.turns_passed == 2
    assert result.steps == 7
    assert result.decisions == {"direct": 7}
    assert str(result.cost) == "7.00"


def test_wrong_copy_fails_state_check(episode, loader):
    wrong = [reply for turn in GOLD_TURNS for reply in turn]
    wrong[4] = tool_reply("cp", source="test_image1.jpg", destination="elsewhere")
    result = run_episode(episode, strong_node(wrong), loader=loader, config_name="A", max_steps_per_turn=6)
    assert result.success is False
    assert result.turns_passed == 1


def test_rejected_draft_never_touches_backend(episode, loader):
    drafts = [tool_reply("wipe_disk", file_name="test_image1.jpg")] * 7
    replies = [reply for turn in GOLD_TURNS for reply in turn]
    make = strong_node(replies, verifier=ScriptedVerifier(*[0.99] * 7), cheap=scripted(*drafts))
    result = run_episode(episode, make, loader=loader, config_name="D", max_steps_per_turn=6)
    assert result.success is True
    assert result.decisions == {"escalate": 7}


def test_step_limit_cuts_turn(episode, loader):
    replies = [tool_reply("pwd")] * 4 + [AIMessage("final_answer: gave up")] * 2
    result = run_episode(episode, strong_node(replies), loader=loader, config_name="A", max_steps_per_turn=2)
    assert result.cut_turns >= 1
    assert result.success is False


def test_public_state_skips_private_and_cycles(loader):
    environment = Environment.create(loader, classes=["GorillaFileSystem"],
                                     initial_config={}, long_context=False)
    snapshot = public_state(environment.instances["GorillaFileSystem"])
    assert snapshot["__class__"] == "GorillaFileSystem"
    assert "_current_dir" not in snapshot
    assert snapshot["root"]["parent"] is None


def test_same_state_sees_a_write(loader):
    first, second = (
        Environment.create(loader, classes=["GorillaFileSystem", "MessageAPI"],
                           initial_config={}, long_context=False)
        for _ in range(2)
    )
    assert same_state(first, second) is True
    tools = {tool.name: tool for tool in bfcl_tools(first, [
        {"name": "touch", "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}}}}
    ])}
    tools["touch"].invoke({"file_name": "new.txt"})
    assert same_state(first, second) is False


def test_example_classes_load(loader):
    for name in EXAMPLE_CLASSES:
        assert loader.backend_class(name).__name__ == name
