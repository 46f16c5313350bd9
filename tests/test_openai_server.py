"""A real ChatOpenAI client against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from spec_agent.node import speculative_node
from spec_agent.verifiers import ChatModelJudge

EXECUTED: list[str] = []


@tool
def cat(file_name: str) -> str:
    """Print a file's content."""
    EXECUTED.append(file_name)
    return "hello"


def completion(model: str, *, content: str | None = None, calls: list | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{index}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}}
            for index, (name, arguments) in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }


class ScriptedServer:
    """Serves `/v1/chat/completions` with scripted replies per model name and records requests."""

    def __init__(self, replies: dict[str, list[dict]]) -> None:
        self.replies = replies
        self.requests: list[dict] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                reply = owner.replies[body["model"]].pop(0)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                return

        return Handler


@pytest.fixture
def server():
    EXECUTED.clear()
    replies = {
        "cheap": [completion("cheap", calls=[("cat", {"file_name": "notes.txt", "lines": 3})]),
                  completion("cheap", content="The file says hello.")],
        "strong": [completion("strong", calls=[("cat", {"file_name": "notes.txt"})])],
        "judge": [completion("judge", content="ACCEPT")],
    }
    scripted = ScriptedServer(replies)
    scripted.thread.start()
    yield scripted
    scripted.server.shutdown()


def client(server: ScriptedServer, model: str) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=server.url, api_key="test-key", max_retries=0, timeout=10)


def test_chat_openai_models_in_agent(server):
    node = speculative_node(
        client(server, "cheap"), ChatModelJudge(client(server, "judge")), client(server, "strong"),
        tools=[cat],
    )
    graph = StateGraph(MessagesState)
    graph.add_node("agent", node)
    graph.add_node("tools", ToolNode([cat]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    messages = graph.compile().invoke({"messages": [HumanMessage("Show notes.txt")]})["messages"]

    first = messages[1].response_metadata["spec_agent"]
    assert first["decision"] == "escalate"
    assert first["scores"] == [0.0]
    assert messages[1].tool_calls[0]["args"] == {"file_name": "notes.txt"}
    assert EXECUTED == ["notes.txt"]
    second = messages[-1].response_metadata["spec_agent"]
    assert second["decision"] == "accept"
    assert second["tokens"] == {"prompt": 40, "completion": 8}
    assert messages[-1].content == "The file says hello."
    assert [request["model"] for request in server.requests] == ["cheap", "strong", "cheap", "judge"]
    assert server.requests[0]["tools"][0]["function"]["name"] == "cat"
