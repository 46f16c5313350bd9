"""Action text format and chat rendering."""

from __future__ import annotations

import pytest

from spec_agent.actions import Action, ToolCall
from spec_agent.prompts import MAX_TOOL_OUTPUT_CHARS, parse_action, render_action, render_chat

ROUND_TRIP_ACTIONS = [
    Action(kind="file_read", tool_calls=(ToolCall(name="ls", arguments={"a": True}),)),
    Action(
        kind="tool_call",
        tool_calls=(
            ToolCall(name="send_message", arguments={"receiver_id": "USR002", "message": "it's 5"}),
            ToolCall(name="post_tweet", arguments={"tags": ["#a", "#b"], "mentions": []}),
        ),
    ),
    Action(kind="retrieval", tool_calls=(ToolCall(name="get_stock_info", arguments={"symbol": "NVDA"}),)),
    Action(kind="tool_call", tool_calls=(ToolCall(name="book", arguments={"from": "SFO", "max-seats": 2, "to": "JFK"}),)),
    Action(kind="tool_call", tool_calls=(
        ToolCall(name="circle.calculate_area", arguments={"radius": 5}),
        ToolCall(name="math.geometry.hypot", arguments={"x": 3, "y": 4}),
    )),
    Action(kind="final_answer", content="The file was moved."),
    Action(kind="BLOCKED", content="No tool can book a flight."),
    Action(kind="ask_clarification", content="Which folder should I use?"),
]


@pytest.mark.parametrize("action", ROUND_TRIP_ACTIONS, ids=lambda action: action.kind)
def test_render_then_parse_round_trips(action):
    proposal = parse_action(render_action(action))
    assert proposal.error is None
    assert proposal.action == action


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("I will list the files.", "known action kind"),
        ("file_read: ls(", "call syntax"),
        ("file_read: __import__('os').system('rm -rf /')", "name(key=value"),
        ("tool_call: rm(path=open('/etc/passwd').read())", "malformed node"),
        ("file_read: ls(True)", "positional"),
        ("file_read: ls(**kwargs)", "non-literal"),
        ("file_read: ls(**{1: 2})", "JSON keys"),
        ("tool_call: " + "f(x=" * 200 + "1" + ")" * 200, ""),
        ("final_answer: " + "x" * 5000, "exceeds"),
    ],
)
def test_untrusted_output_becomes_invalid_proposal(text, error):
    proposal = parse_action(text)
    assert proposal.action is None
    assert error in proposal.error


def test_parse_tolerates_markup_and_trailing_text():
    proposal = parse_action("**File_Read**: cat(file_name='a.txt')\nThis reads the file.")
    assert proposal.action == Action(
        kind="file_read", tool_calls=(ToolCall(name="cat", arguments={"file_name": "a.txt"}),)
    )


def test_render_chat_turns_tool_traffic_into_text():
    messages = [
        {"role": "user", "content": "Go to docs and list it."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "cd", "arguments": {"folder": "docs"}}}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "cd", "content": "x" * (MAX_TOOL_OUTPUT_CHARS + 50)},
    ]
    tools = [{"name": "cd", "description": "Change directory.",
              "parameters": {"type": "object", "properties": {"folder": {"type": "string"}}, "required": ["folder"]}}]
    chat = render_chat(messages, tools)
    assert [message["role"] for message in chat] == ["system", "user", "assistant", "user"]
    assert "- cd(folder: string): Change directory." in chat[0]["content"]
    assert chat[2]["content"] == "tool_call: cd(folder='docs')"
    assert chat[3]["content"].endswith("[50 characters cut]")
