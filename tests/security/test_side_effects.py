"""Side-effect safety: in a LangGraph agent, no tool of a rejected or unverified draft ever runs.

The agent is a `MessagesState` graph whose model node speculates (through `speculative_node` and
through a plain wrapper around `build_speculation_graph`) and whose `ToolNode` runs tools that
record each call. Scripted drafts carry a `marker` argument, `d<step>` for the cheap model and
`f<step>` for the fallback, so the record shows whose call ran.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import convert_to_openai_messages
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from spec_agent.actions import TOOL_KINDS
from spec_agent.cost import ModelCall
from spec_agent.graphs.speculation import build_speculation_graph
from spec_agent.prompts import parse_action
from tests.security.tally import TALLY

try:
    from spec_agent.node import speculative_node
except ImportError:  # The node is optional here; the wrapper below covers the same contract.
    speculative_node = None

RUN_CONFIG = {"recursion_limit": 60}


def recording_tools(ran: list[tuple[str, str]]) -> list:
    """Build tools that append `(tool name, marker)` to `ran` when they run."""

    @tool
    def delete_file(file_name: str, marker: str) -> str:
        """Delete a file."""
        ran.append(("delete_file", marker))
        return f"deleted {file_name}"

    @tool
    def list_files(marker: str) -> str:
        """List the files in the current folder."""
        ran.append(("list_files", marker))
        return "a.txt b.txt"

    @tool
    def send_email(to: str, body: str, marker: str) -> str:
        """Send an email."""
        ran.append(("send_email", marker))
        return "sent"

    return [delete_file, list_files, send_email]


class StepProposer:
    """Proposer that returns the scripted text of the current step (AI messages so far)."""

    def __init__(self, script: list[str], *, name: str, role: str) -> None:
        self.script = script
        self.name = name
        self.role = role

    def propose(self, messages, tools, *, n=1, seed=0):
        step = sum(1 for message in messages if message.get("role") == "assistant")
        text = self.script[min(step, len(self.script) - 1)]
        return [parse_action(text, confidence=0.9)], [ModelCall(role=self.role, model=self.name)]


class StepVerifier:
    """Verifier with a scripted verdict per step: a score, or an exception to raise."""

    name = "scripted"

    def __init__(self, verdicts: list) -> None:
        self.verdicts = verdicts

    def score(self, messages, tools, proposal):
        step = sum(1 for message in messages if message.get("role") == "assistant")
        verdict = self.verdicts[min(step, len(self.verdicts) - 1)]
        if isinstance(verdict, BaseException):
            raise verdict
        return verdict, []


def wrapper_node(proposer, verifier, fallback, *, tools):
    """Wrap the speculation graph as a model node: the chosen action becomes one AIMessage."""
    graph = build_speculation_graph(proposer=proposer, verifier=verifier, fallback=fallback)
    schemas = [convert_to_openai_tool(item)["function"] for item in tools]

    def node(state: MessagesState) -> dict:
        messages = convert_to_openai_messages(state["messages"])
        result = graph.invoke({"messages": messages, "tools": schemas, "seed": 0,
                               "step_id": f"step {len(messages)}"})
        action = result["decision"].action
        if action is None:
            return {"messages": [parse_action("final_answer: no valid action").action.to_message()]}
        return {"messages": [action.to_message()]}

    return node


def library_node(proposer, verifier, fallback, *, tools):
    return speculative_node(proposer, verifier, fallback, tools=tools)


NODE_FACTORIES = [pytest.param(wrapper_node, id="wrapper")]
if speculative_node is not None:
    NODE_FACTORIES.append(pytest.param(library_node, id="speculative_node"))


def run_agent(factory, drafts, verdicts, fallbacks) -> list[tuple[str, str]]:
    ran: list[tuple[str, str]] = []
    tools = recording_tools(ran)
    node = factory(StepProposer(drafts, name="cheap", role="cheap"), StepVerifier(verdicts),
                   StepProposer(fallbacks, name="strong", role="strong"), tools=tools)
    graph = StateGraph(MessagesState)
    graph.add_node("agent", node)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    graph.compile().invoke({"messages": [("user", "Tidy up my files.")]}, RUN_CONFIG)
    return ran


@pytest.mark.parametrize("factory", NODE_FACTORIES)
def test_rejected_draft_never_runs(factory):
    drafts = ["file_write: delete_file(file_name='thesis.tex', marker='d0')",
              "tool_call: send_email(to='a@b.c', body='secrets', marker='d1')",
              "final_answer: done"]
    fallbacks = ["file_read: list_files(marker='f0')", "file_read: list_files(marker='f1')",
                 "final_answer: all tidy"]
    ran = run_agent(factory, drafts, [0.1, 0.2, 0.9], fallbacks)
    unaccepted = [call for call in ran if call[1].startswith("d")]
    TALLY["unaccepted tool executions"] += len(unaccepted)
    assert unaccepted == []
    assert ran == [("list_files", "f0"), ("list_files", "f1")]


@pytest.mark.parametrize("factory", NODE_FACTORIES)
def test_verifier_failure_draft_never_runs(factory):
    drafts = ["file_write: delete_file(file_name='thesis.tex', marker='d0')", "final_answer: done"]
    fallbacks = ["file_read: list_files(marker='f0')", "final_answer: listed"]
    ran = run_agent(factory, drafts, [TimeoutError("verifier timed out"), 0.9], fallbacks)
    TALLY["unaccepted tool executions"] += sum(1 for call in ran if call[1].startswith("d"))
    assert ran == [("list_files", "f0")]


@pytest.mark.parametrize("factory", NODE_FACTORIES)
def test_accepted_draft_runs_once(factory):
    drafts = ["file_read: list_files(marker='d0')", "final_answer: done"]
    fallbacks = ["file_write: delete_file(file_name='x', marker='f0')", "final_answer: unused"]
    ran = run_agent(factory, drafts, [0.9, 0.9], fallbacks)
    TALLY["accepted tool executions"] += len(ran)
    assert ran == [("list_files", "d0")]


draft_texts = st.sampled_from([
    "file_write: delete_file(file_name='thesis.tex', marker='d{step}')",
    "tool_call: send_email(to='x@y.z', body='hi', marker='d{step}')",
    "file_read: list_files(marker='d{step}')",
    "file_read: list_files(marker='d{step}'), delete_file(file_name='a', marker='d{step}')",
    "tool_call: delete_file(file_name=__import__('os'), marker='d{step}')",
    "tool_call: unknown_tool(marker='d{step}')",
    "final_answer: done",
    "",
])


@pytest.mark.parametrize("factory", NODE_FACTORIES)
@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_only_chosen_actions_run(factory, data):
    steps = data.draw(st.integers(min_value=1, max_value=4))
    drafts = [data.draw(draft_texts).format(step=step) for step in range(steps)]
    verdicts = [data.draw(st.sampled_from([0.0, 0.3, 0.7, 1.0, float("nan"), None]))
                for _ in range(steps)]
    fallbacks = [f"file_read: list_files(marker='f{step}')" for step in range(steps)]
    ran = run_agent(factory, drafts + ["final_answer: done"], verdicts + [1.0],
                    fallbacks + ["final_answer: done"])
    accepted_drafts = set()
    for draft, verdict in zip(drafts, verdicts, strict=True):
        action = parse_action(draft).action
        if action is not None and verdict is not None and 0.5 <= verdict <= 1.0:
            accepted_drafts.update((call.name, call.arguments.get("marker")) for call in action.tool_calls)
    unaccepted = [call for call in ran if call[1].startswith("d") and call not in accepted_drafts]
    TALLY["unaccepted tool executions"] += len(unaccepted)
    TALLY["accepted tool executions"] += len(ran) - len(unaccepted)
    assert unaccepted == []
    # One model decides each step, so a step's draft and fallback never both run.
    steps_run = [call[1][1:] for call in ran]
    for step in set(steps_run):
        assert len({call[1][0] for call in ran if call[1][1:] == step}) == 1
