"""The benchmark with every role served by an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from spec_agent.cli import app
from spec_agent.db.store import SqlTraceStore
from spec_agent.errors import ConfigError
from spec_agent.eval.schema import write_examples
from spec_agent.serving import served_chat_model
from tests.bench_helpers import make_examples

REPLIES = {"cheap": "file_read: ls()", "strong": "file_read: ls(a=True)"}


class Handler(BaseHTTPRequestHandler):
    """Answers judge questions with ACCEPT and other prompts with the model's scripted action."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.requests.append(body)
        last = body["messages"][-1]["content"]
        content = "ACCEPT" if "ACCEPT or REJECT" in last else REPLIES[body["model"]]
        reply = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        return


@pytest.fixture
def base_url():
    Handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_bench_runs_on_served_models(base_url, tmp_path):
    dataset = write_examples(make_examples(2), tmp_path / "eval.jsonl")
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "bench", "--dataset", str(dataset), "--limit", "0", "--out", str(out), "--threads", "1",
        "--cheap-model", f"openai:cheap@{base_url}", "--strong-model", f"openai:strong@{base_url}",
        "--configs", "ABC",
    ])
    assert result.exit_code == 0, result.output
    store = SqlTraceStore(f"sqlite:///{out / 'traces.sqlite'}")
    rows = {(row.config, row.example_id): row for row in store.decisions(store.latest_run().run_id)}
    assert rows[("A", "ex0")].final_action["tool_calls"][0]["arguments"] == {"a": True}
    assert rows[("B", "ex0")].final_action["tool_calls"][0]["arguments"] == {}
    assert rows[("C", "ex0")].decision == "accept"
    assert rows[("B", "ex0")].full_correct is True
    assert rows[("A", "ex0")].prompt_tokens == 50
    assert {request["model"] for request in Handler.requests} == {"cheap", "strong"}


@pytest.mark.parametrize("spec", ["openai:model", "openai:@http://x", "openai:m@ftp://host"])
def test_invalid_served_spec_shows_format(spec):
    with pytest.raises(ConfigError, match="openai:MODEL@BASE_URL"):
        served_chat_model(spec)
