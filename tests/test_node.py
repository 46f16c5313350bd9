"""speculative_node inside ordinary LangGraph agents, with scripted chat models."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import RetryPolicy

from spec_agent.budget import SpeculationBudget
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import BudgetExceededError, ConfigError, SpecAgentRuntimeError
from spec_agent.escalation import EscalationTarget
from spec_agent.node import DECISION_EVENT, flush_traces, speculative_node, to_openai_messages
from tests.chat_fakes import ScriptedVerifier, TagRecorder, scripted, tool_reply

EXECUTED: list[dict] = []


@tool
def ls(a: bool = False) -> str:
    """List the files of the current folder."""
    EXECUTED.append({"a": a})
    return "notes.txt"


@pytest.fixture(autouse=True)
def _clear_executed():
    EXECUTED.clear()


def agent(node, *, checkpointer=None, retry=None):
    graph = StateGraph(MessagesState)
    graph.add_node("agent", node, retry_policy=retry)
    graph.add_node("tools", ToolNode([ls]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


def ask(app, config=None):
    return app.invoke({"messages": [HumanMessage("List the files.")]}, config)


def test_accepted_tool_call_runs_once():
    cheap = scripted(tool_reply("ls", a=True), AIMessage("final_answer: notes.txt is here."))
    strong = scripted()
    app = agent(speculative_node(cheap, ScriptedVerifier(0.9, 0.9), strong, tools=[ls]))
    messages = ask(app)["messages"]
    assert [type(message).__name__ for message in messages] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage"
    ]
    assert messages[1].response_metadata["spec_agent"]["decision"] == "accept"
    assert messages[1].response_metadata["action_kind"] == "tool_call"
    assert messages[3].content == "notes.txt is here."
    assert messages[3].response_metadata["action_kind"] == "final_answer"
    assert EXECUTED == [{"a": True}]
    assert strong.prompts == []


def test_rejected_draft_absent_and_not_executed():
    cheap = scripted(tool_reply("ls", a=False), AIMessage("draft answer"))
    strong = scripted(tool_reply("ls", a=True), AIMessage("Done."))
    app = agent(speculative_node(cheap, ScriptedVerifier(0.1, 0.1), strong, tools=[ls]))
    messages = ask(app)["messages"]
    assert EXECUTED == [{"a": True}]
    assert all("draft" not in str(message.content) for message in messages)
    assert messages[1].tool_calls[0]["args"] == {"a": True}
    metadata = messages[1].response_metadata["spec_agent"]
    assert metadata["decision"] == "escalate"
    assert metadata["verdicts"] == ["REJECT"]
    assert metadata["role"] == "strong"
    assert metadata["cost"] == "1.15"


def test_metadata_is_json_serialisable():
    import json

    cheap = scripted(AIMessage("final_answer: nothing to do"))
    app = agent(speculative_node(cheap, ScriptedVerifier(0.8), scripted(), tools=[ls]))
    message = ask(app)["messages"][-1]
    encoded = json.dumps(message.response_metadata)
    assert '"decision": "accept"' in encoded


@pytest.mark.parametrize(
    ("draft", "reason"),
    [
        (tool_reply("rm", folder="x"), "unknown tool"),
        (tool_reply("ls", a="yes"), "wrong type"),
        (tool_reply("ls", b=True), "unknown argument"),
        (AIMessage("", invalid_tool_calls=[{"name": "ls", "args": "{a:", "id": "1", "error": "bad json",
                                            "type": "invalid_tool_call"}]), "malformed"),
    ],
)
def test_bad_tool_call_escalates(draft, reason):
    verifier = ScriptedVerifier(0.99)
    strong = scripted(AIMessage("final_answer: The folder holds notes.txt."))
    app = agent(speculative_node(scripted(draft), verifier, strong, tools=[ls]))
    message = ask(app)["messages"][-1]
    metadata = message.response_metadata["spec_agent"]
    assert metadata["decision"] == "escalate", reason
    assert metadata["verdicts"] == ["REJECT"], reason
    assert verifier.seen == [], reason
    assert EXECUTED == [], reason


def test_kind_threshold_overrides_default():
    cheap = scripted(AIMessage("final_answer: all done"))
    strong = scripted(AIMessage("final_answer: checked and done"))
    node = speculative_node(cheap, ScriptedVerifier(0.7), strong, tools=[ls],
                            thresholds_by_kind={"final_answer": 0.9})
    message = ask(agent(node))["messages"][-1]
    assert message.content == "checked and done"
    assert message.response_metadata["spec_agent"]["decision"] == "escalate"


def test_escalation_target_moves_the_threshold():
    # Rate 1 after a one-step warm-up: the second proposal escalates although it scores 0.9.
    cheap = scripted(tool_reply("ls", a=True), AIMessage("final_answer: notes.txt is here."))
    strong = scripted(AIMessage("final_answer: checked: notes.txt."))
    target = EscalationTarget(rate=1.0, warmup=1)
    app = agent(speculative_node(cheap, ScriptedVerifier(0.9, 0.9), strong, tools=[ls], escalation_target=target))
    messages = ask(app)["messages"]
    assert [message.response_metadata["spec_agent"]["decision"] for message in (messages[1], messages[3])] == [
        "accept", "escalate"
    ]
    assert messages[3].content == "checked: notes.txt."
    assert target.steps == 2
    assert target.escalated == 1


def test_fallback_failure_names_thread_and_step():
    class Broken:
        name = "broken"

        def propose(self, *args, **kwargs):
            raise ConnectionError("server down")

    node = speculative_node(scripted("nonsense"), ScriptedVerifier(), Broken(), tools=[ls])
    app = agent(node, checkpointer=InMemorySaver())
    with pytest.raises(SpecAgentRuntimeError, match="thread 'th-9' step 0"):
        ask(app, {"configurable": {"thread_id": "th-9"}})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tools": []}, "tools"),
        ({"tools": [ls], "threshold": 1.2}, "threshold"),
        ({"tools": [ls], "threshold": -0.1}, "threshold"),
        ({"tools": [ls], "n_proposals": 0}, "n_proposals"),
        ({"tools": [ls], "thresholds_by_kind": {"guess": 0.5}}, "thresholds_by_kind"),
    ],
)
def test_misconfiguration_names_argument(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        speculative_node(scripted(), ScriptedVerifier(), scripted(), **kwargs)


def test_stream_hides_drafts_and_emits_decision():
    cheap = scripted(AIMessage("final_answer: secret draft words"))
    strong = scripted(AIMessage("final_answer: public answer"))
    app = agent(speculative_node(cheap, ScriptedVerifier(0.1), strong, tools=[ls]))
    streamed, events = [], []
    for namespace, mode, chunk in app.stream(
        {"messages": [HumanMessage("hi")]}, stream_mode=["messages", "custom"], subgraphs=True
    ):
        (streamed if mode == "messages" else events).append(chunk)
    text = "".join(str(message.content) for message, _ in streamed)
    assert "secret" not in text
    assert "public" in text
    assert len(events) == 1
    assert events[0][DECISION_EVENT]["decision"] == "escalate"
    assert events[0][DECISION_EVENT]["node"] == "agent"


def test_callbacks_reach_inner_models():
    recorder = TagRecorder()
    cheap = scripted(AIMessage("final_answer: fine"))
    app = agent(speculative_node(cheap, ScriptedVerifier(0.9), scripted(), tools=[ls]))
    ask(app, {"callbacks": [recorder], "tags": ["outer"], "metadata": {"user": "u1"}})
    assert len(recorder.runs) == 1
    tags, metadata = recorder.runs[0]
    assert "outer" in tags
    assert "nostream" in tags
    assert metadata["user"] == "u1"


def test_async_matches_sync():
    cheap = scripted(tool_reply("ls", a=True), AIMessage("final_answer: notes.txt"))
    app = agent(speculative_node(cheap, ScriptedVerifier(0.9, 0.9), scripted(), tools=[ls]))
    result = asyncio.run(app.ainvoke({"messages": [HumanMessage("List the files.")]}))
    messages = result["messages"]
    assert EXECUTED == [{"a": True}]
    assert messages[-1].content == "notes.txt"
    assert messages[1].response_metadata["spec_agent"]["decision"] == "accept"


class SlowProposer:
    """Proposes after a delay on the async path; records how many ran at once."""

    name = "slow"

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    def propose(self, messages, tools, *, n=1, seed=0):
        raise AssertionError("the async path must not call propose")

    async def apropose(self, messages, tools, *, n=1, seed=0):
        from spec_agent.prompts import parse_action

        async def one(index):
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.05)
            self.running -= 1
            return parse_action(f"final_answer: option {index}", confidence=0.5 + index / 10)

        return list(await asyncio.gather(*(one(index) for index in range(n)))), []


class SlowVerifier:
    name = "slow-verifier"

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    def score(self, messages, tools, proposal):
        raise AssertionError("the async path must not call score")

    async def ascore(self, messages, tools, proposal):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.05)
        self.running -= 1
        return proposal.confidence, []


def test_async_runs_proposals_concurrently():
    proposer, verifier = SlowProposer(), SlowVerifier()
    node = speculative_node(proposer, verifier, scripted(), tools=[ls], n_proposals=3,
                            validate_schema=False)
    started = time.perf_counter()
    result = asyncio.run(agent(node).ainvoke({"messages": [HumanMessage("go")]}))
    elapsed = time.perf_counter() - started
    assert result["messages"][-1].content == "option 2"
    assert proposer.peak == 3
    assert verifier.peak == 3
    assert elapsed < 0.5


def test_checkpointer_thread_in_store(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    cheap = scripted(tool_reply("ls"), AIMessage("final_answer: one file"))
    node = speculative_node(cheap, ScriptedVerifier(0.9, 0.9), scripted(), tools=[ls], store=store)
    app = agent(node, checkpointer=InMemorySaver())
    ask(app, {"configurable": {"thread_id": "thread-7"}})
    assert flush_traces() == 0
    run = store.latest_run()
    rows = store.decisions(run.run_id)
    assert [row.thread_id for row in rows] == ["thread-7", "thread-7"]
    assert [row.step for row in rows] == [0, 1]
    assert [row.example_id for row in rows] == ["thread-7:0", "thread-7:1"]
    assert [row.config for row in rows] == ["live", "live"]
    assert rows[0].final_kind == "tool_call"


class FlakyStore(SqlTraceStore):
    """Fails its first decision write, as a store locked past its timeout would."""

    failures = 1

    def log_decisions(self, run_id, rows):
        if self.failures:
            self.failures -= 1
            raise SpecAgentRuntimeError("database is locked")
        return super().log_decisions(run_id, rows)


def test_failed_store_write_retried(tmp_path):
    store = FlakyStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    cheap = scripted(tool_reply("ls"), AIMessage("final_answer: one file"))
    node = speculative_node(cheap, ScriptedVerifier(0.9, 0.9), scripted(), tools=[ls], store=store)
    messages = ask(agent(node), {"configurable": {"thread_id": "flaky"}})["messages"]
    # The first attempt, by the background writer or by this flush, fails; the rows stay queued.
    pending = [flush_traces() for _ in range(2)]
    rows = store.decisions(store.latest_run().run_id)
    assert messages[-1].content == "one file"
    assert store.failures == 0
    assert pending[-1] == 0
    assert [row.example_id for row in rows] == ["flaky:0", "flaky:1"]


def test_retried_step_stored_once(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    cheap = scripted(AIMessage("final_answer: first"), AIMessage("final_answer: second"))
    inner = speculative_node(cheap, ScriptedVerifier(0.9, 0.9), scripted(), tools=[ls], store=store)
    attempts = []

    def flaky(state, config):
        update = inner.invoke(state, config)
        attempts.append(update)
        if len(attempts) == 1:
            raise ConnectionError("lost the connection after the decision")
        return update

    app = agent(flaky, checkpointer=InMemorySaver(), retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
    result = ask(app, {"configurable": {"thread_id": "t-retry"}})
    assert flush_traces() == 0
    rows = store.decisions(store.latest_run().run_id)
    assert len(attempts) == 2
    assert len(rows) == 1
    assert rows[0].example_id == "t-retry:0"
    assert result["messages"][-1].content == "second"


def test_budget_ends_run():
    cheap = scripted(tool_reply("ls"), AIMessage("final_answer: never"))
    strong = scripted(tool_reply("ls", a=True), AIMessage("final_answer: never"))
    budget = SpeculationBudget(max_cost_per_run=1.0)
    app = agent(speculative_node(cheap, ScriptedVerifier(0.1), strong, tools=[ls], budget=budget))
    messages = ask(app)["messages"]
    assert len(messages) == 4
    assert messages[-1].response_metadata["spec_agent"]["decision"] == "budget_exhausted"
    assert "run cost budget of 1.0 is spent (1.15 used)" in messages[-1].content
    assert messages[-1].tool_calls == []


def test_budget_raise_names_thread():
    cheap = scripted(tool_reply("ls"))
    strong = scripted(tool_reply("ls", a=True))
    budget = SpeculationBudget(max_cost_per_thread=0.5, on_exhausted="raise")
    node = speculative_node(cheap, ScriptedVerifier(0.1), strong, tools=[ls], budget=budget)
    app = agent(node, checkpointer=InMemorySaver())
    with pytest.raises(BudgetExceededError, match="thread 'b1' step 1: the thread cost budget"):
        ask(app, {"configurable": {"thread_id": "b1"}})


def test_budget_rejects_bad_mode():
    with pytest.raises(ConfigError, match="on_exhausted"):
        SpeculationBudget(on_exhausted="stop")


def test_messages_keep_kind_in_openai_layout():
    message = AIMessage("", tool_calls=[{"name": "ls", "args": {"a": True}, "id": "c1"}],
                        response_metadata={"action_kind": "file_read"})
    converted = to_openai_messages([HumanMessage("hi"), message])
    assert converted[0] == {"role": "user", "content": "hi"}
    assert converted[1]["action_kind"] == "file_read"
    assert converted[1]["tool_calls"][0]["function"]["name"] == "ls"
