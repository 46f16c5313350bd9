"""An example tool-using agent over BFCL's executable backends, and whole-task episodes with it.

The agent is built the ordinary LangGraph way: a `MessagesState` graph with a model node, a
`ToolNode` and `tools_condition`. Speculation is one changed line, the model node:

    graph.add_node("agent", call_model(model, tools))                            # ordinary
    graph.add_node("agent", speculative_node(cheap, verifier, model, tools=tools))  # speculative

The tools are BFCL's backend classes (`GorillaFileSystem`, `MessageAPI`, `TwitterAPI`, `MathAPI`
and the others in `spec_agent.eval.bfcl.BACKENDS`), loaded from their source files by
`BackendLoader`. A tool call runs as a parsed `ToolCall` dispatched to the backend method by name;
nothing is evaluated.

An episode is one whole `multi_turn_base` task: every user turn runs through the agent with real
tool execution, and the task succeeds when, after each turn, every backend instance has the same
public state as a copy that executed the ground-truth calls (BFCL's state-based check, rebuilt
here from its idea: equal public attribute values per class).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from spec_agent.actions import ToolCall
from spec_agent.budget import spent_cost
from spec_agent.eval.bfcl import (
    BACKENDS,
    BackendLoader,
    Environment,
    parse_call,
    read_jsonl,
    read_jsonl_docs,
    to_json_schema,
)

logger = logging.getLogger(__name__)

EXAMPLE_CLASSES: tuple[str, ...] = ("GorillaFileSystem", "MessageAPI", "TwitterAPI", "MathAPI")
"""Backends of the example graph that `langgraph dev` serves."""
DEFAULT_MAX_STEPS_PER_TURN = 4
"""Model steps the agent may take on one user turn before the turn is cut off."""

_DATA_DIR = Path("bfcl_eval/data")


# --- The agent ----------------------------------------------------------------------------------


def bfcl_tools(environment: Environment, schemas: Sequence[dict[str, Any]]) -> list[Any]:
    """Make one LangChain tool per schema that runs the call on `environment`'s backends."""
    from langchain_core.tools import StructuredTool

    tools = []
    for schema in schemas:
        name = schema["name"]

        def run(_name: str = name, **arguments: Any) -> str:
            output, _ = environment.execute(ToolCall(name=_name, arguments=arguments))
            return output

        tools.append(
            StructuredTool.from_function(
                func=run, name=name, description=schema.get("description") or name,
                args_schema=schema.get("parameters") or {"type": "object", "properties": {}},
            )
        )
    return tools


def call_model(model: Any, tools: Sequence[Any]) -> Callable[[Any], dict[str, Any]]:
    """Return the ordinary model node, which invokes the tool-bound chat model on the messages."""
    bound = model.bind_tools(list(tools))

    def agent(state: Any) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    return agent


def build_agent(model_node: Any, tools: Sequence[Any], *, checkpointer: Any = None) -> Any:
    """Compile the agent: model node -> (tool calls?) -> ToolNode -> model node, else END.

    Args:
        model_node: `call_model(...)`, or `speculative_node(...)` to speculate.
        tools: The LangChain tools the `ToolNode` runs.
        checkpointer: A LangGraph checkpointer, needed for multi-turn threads.
    """
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    graph = StateGraph(MessagesState)
    graph.add_node("agent", model_node)
    graph.add_node("tools", ToolNode(list(tools)))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer, name="bfcl_agent")


def tool_docs(bfcl_root: Path, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Read the JSON schemas of the functions of `classes` from BFCL's function docs."""
    schemas = []
    for class_name in classes:
        doc_file = bfcl_root / _DATA_DIR / "multi_turn_func_doc" / BACKENDS[class_name][1]
        for doc in read_jsonl_docs(doc_file):
            parameters = doc.get("parameters") or {"type": "dict", "properties": {}}
            schemas.append({
                "name": doc["name"],
                "description": str(doc.get("description") or ""),
                "parameters": to_json_schema(parameters, origin=str(doc_file)),
            })
    return schemas


def make_graph(config: Any = None) -> Any:
    """Build the example agent for `langgraph dev`, speculating with the embedded models.

    The backends start empty (no scenario loaded). `configurable` keys `cheap_model` and
    `strong_model` choose other models (asset names, local directories or hub ids).
    """
    from spec_agent.assets import resolve_data
    from spec_agent.node import speculative_node
    from spec_agent.verifiers import ConfidenceVerifier

    configurable = (config or {}).get("configurable") or {}
    root = resolve_data("bfcl-eval")
    loader = BackendLoader(bfcl_root=root)
    environment = Environment.create(loader, classes=EXAMPLE_CLASSES, initial_config={}, long_context=False)
    tools = bfcl_tools(environment, tool_docs(root, EXAMPLE_CLASSES))
    cheap = configurable.get("cheap_model", "smollm2-135m-instruct")
    strong = configurable.get("strong_model", "qwen2.5-coder-0.5b-instruct")
    node = speculative_node(cheap, ConfidenceVerifier(), strong, tools=tools)
    return build_agent(node, tools)


# --- Episodes -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One multi-turn BFCL task: its backends, user turns and ground-truth calls."""

    entry_id: str
    classes: tuple[str, ...]
    initial_config: dict[str, Any]
    turns: list[list[dict[str, Any]]]
    """User messages per turn."""
    ground_truth: list[list[str]]
    """Ground-truth call strings per turn."""
    tools: list[dict[str, Any]]
    """Function schemas on offer (the entry's excluded functions removed)."""


@dataclass(kw_only=True)
class EpisodeResult:
    """Outcome of one episode under one configuration."""

    entry_id: str
    config: str
    success: bool = False
    turns_passed: int = 0
    turns: int = 0
    steps: int = 0
    """Model steps (AI messages) over all turns."""
    cut_turns: int = 0
    """Turns cut off at the step limit."""
    cost: Decimal = Decimal(0)
    latency_s: float = 0.0
    decisions: dict[str, int] = field(default_factory=dict)
    """Count of each decision kind (accept, escalate, direct, unverified)."""
    error: str | None = None


def load_episodes(bfcl_root: Path, *, split: str = "eval", limit: int = 2) -> list[Episode]:
    """Read `multi_turn_base` tasks of one split (by the dataset's scenario hash), in id order.

    Args:
        bfcl_root: Folder that contains `bfcl_eval/`.
        split: `eval` or `train`.
        limit: Number of tasks; 0 reads all of the split.
    """
    from spec_agent.eval.dataset import DEFAULT_EVAL_FRACTION, scenario_position

    data = bfcl_root / _DATA_DIR
    entries = read_jsonl(data / "BFCL_v4_multi_turn_base.json")
    answers = {row["id"]: row for row in read_jsonl(data / "possible_answer" / "BFCL_v4_multi_turn_base.json")}
    chosen = []
    for entry in sorted(entries, key=lambda row: int(row["id"].rsplit("_", 1)[1])):
        in_eval = scenario_position(f"multi_turn:{entry['id'].rsplit('_', 1)[1]}") < DEFAULT_EVAL_FRACTION
        if in_eval == (split == "eval"):
            chosen.append(_episode(bfcl_root, entry, answers[entry["id"]]))
        if limit and len(chosen) >= limit:
            break
    return chosen


def _episode(bfcl_root: Path, entry: dict[str, Any], answer: dict[str, Any]) -> Episode:
    excluded = set(entry.get("excluded_function") or [])
    classes = tuple(entry["involved_classes"])
    return Episode(
        entry_id=entry["id"],
        classes=classes,
        initial_config=entry.get("initial_config") or {},
        turns=entry["question"],
        ground_truth=answer["ground_truth"],
        tools=[tool for tool in tool_docs(bfcl_root, classes) if tool["name"] not in excluded],
    )


def run_episode(
    episode: Episode,
    make_node: Callable[[list[Any]], Any],
    *,
    loader: BackendLoader,
    config_name: str,
    max_steps_per_turn: int = DEFAULT_MAX_STEPS_PER_TURN,
) -> EpisodeResult:
    """Run every turn of a task through the agent and check the backend state after each turn.

    Args:
        episode: The task.
        make_node: Builds the agent's model node from the LangChain tools.
        loader: Loads the backend classes.
        config_name: Configuration label of the result.
        max_steps_per_turn: Model steps allowed per turn.
    """
    live, gold = (_environment(loader, episode) for _ in range(2))
    tools = bfcl_tools(live, episode.tools)
    from langgraph.checkpoint.memory import InMemorySaver

    agent = build_agent(make_node(tools), tools, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": f"{config_name}:{episode.entry_id}"},
              "recursion_limit": 2 * max_steps_per_turn}
    result = EpisodeResult(entry_id=episode.entry_id, config=config_name, turns=len(episode.turns))
    started = time.perf_counter()
    passed_all = True
    for question, calls in zip(episode.turns, episode.ground_truth):
        result.cut_turns += _run_turn(agent, config, question)
        _execute_ground_truth(gold, calls)
        same = same_state(live, gold)
        result.turns_passed += int(same)
        passed_all = passed_all and same
    result.latency_s = time.perf_counter() - started
    _summarise(result, agent.get_state(config).values["messages"])
    result.success = passed_all
    return result


def _environment(loader: BackendLoader, episode: Episode) -> Environment:
    return Environment.create(loader, classes=episode.classes, initial_config=episode.initial_config,
                              long_context=False)


def _run_turn(agent: Any, config: dict[str, Any], question: list[dict[str, Any]]) -> int:
    """Run one user turn; return 1 when it was cut off at the step limit."""
    from langgraph.errors import GraphRecursionError

    try:
        agent.invoke({"messages": question}, config)
    except GraphRecursionError:
        _close_pending_calls(agent, config)
        return 1
    return 0


def _close_pending_calls(agent: Any, config: dict[str, Any]) -> None:
    # A turn cut off after the model requested tools leaves calls without results. The next turn's
    # prompt cannot show such calls, so each gets a tool message saying it did not run.
    from langchain_core.messages import ToolMessage

    last = agent.get_state(config).values["messages"][-1]
    pending = getattr(last, "tool_calls", None) or []
    if pending:
        replies = [ToolMessage(content="Not run: the step limit of this turn was reached.",
                               tool_call_id=call["id"], name=call["name"]) for call in pending]
        agent.update_state(config, {"messages": replies}, as_node="tools")


def _execute_ground_truth(environment: Environment, calls: list[str]) -> None:
    for text in calls:
        def names(function: str) -> list[str]:
            method = environment.method(function)
            return list(_parameters(method)) if method else []

        environment.execute(parse_call(text, parameter_names=names))


def _parameters(method: Any) -> list[str]:
    import inspect

    return list(inspect.signature(method).parameters)


def _summarise(result: EpisodeResult, messages: list[Any]) -> None:
    ai_messages = [message for message in messages if getattr(message, "type", None) == "ai"]
    result.steps = len(ai_messages)
    result.cost = spent_cost(messages)
    for message in ai_messages:
        decision = ((message.response_metadata or {}).get("spec_agent") or {}).get("decision")
        if decision:
            result.decisions[decision] = result.decisions.get(decision, 0) + 1


# --- State comparison ---------------------------------------------------------------------------


def same_state(live: Environment, gold: Environment) -> bool:
    """Return True when every backend instance has the same public state in both environments."""
    if set(live.instances) != set(gold.instances):
        return False
    return all(
        public_state(live.instances[name]) == public_state(gold.instances[name])
        for name in gold.instances
    )


def public_state(value: Any, _path: frozenset[int] = frozenset()) -> Any:
    """Return a comparable snapshot of an object's public attributes, recursively.

    Attributes whose names start with `_` are left out, as BFCL's checker does. A reference back
    to an object on the current path (a directory's `parent`) becomes the marker `"<cycle>"`.
    """
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if id(value) in _path:
        return "<cycle>"
    path = _path | {id(value)}
    if isinstance(value, dict):
        return {str(key): public_state(item, path) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [public_state(item, path) for item in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    attributes = getattr(value, "__dict__", None)
    if attributes is None:
        return repr(value)
    public = {name: item for name, item in attributes.items() if not name.startswith("_")}
    return {"__class__": type(value).__name__, **{name: public_state(item, path) for name, item in public.items()}}
