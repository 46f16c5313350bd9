"""Secrets and privacy: key masking, no planted key in logs, no remote code in model loading."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from spec_agent.graphs.speculation import build_speculation_graph
from spec_agent.proposers import LangChainProposer
from spec_agent.redaction import REDACTED, redact_messages, redact_secrets, redact_value

PLANTED_KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("spec_agent", "graphs", "training", "eval", "db")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"use {PLANTED_KEY} please", PLANTED_KEY),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123", "sk-proj-abcdefghijklmnopqrstuvwxyz0123"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "eyJhbGciOiJIUzI1NiJ9.e30.abc"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ("api_key=abcd1234efgh", "abcd1234efgh"),
        ('{"OPENAI_API_KEY": "hunter2hunter2"}', "hunter2hunter2"),
        ("x-api-key: 0123456789", "0123456789"),
        ("password: correct-horse", "correct-horse"),
        ("token hf_" + "a" * 34, "hf_" + "a" * 34),
        ("ghp_" + "b" * 36, "ghp_" + "b" * 36),
    ],
    ids=["sk-test", "sk-proj", "bearer", "aws-id", "aws-secret", "api_key", "json-key",
         "header", "password", "huggingface", "github"],
)
def test_redact_masks_secret(text, secret):
    redacted = redact_secrets(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    ["List the files in sk-learn docs.", "file_read: cat(file_name='api.md')", "tokens: 42",
     "The password field is empty.", "Bearer of bad news"],
)
def test_redact_keeps_plain_text(text):
    assert redact_secrets(text) == text


def test_redact_is_idempotent():
    once = redact_secrets(f"api_key={PLANTED_KEY} and Bearer abcdefghijkl")
    assert redact_secrets(once) == once


def test_redact_messages_masks_content_and_arguments():
    messages = [
        {"role": "user", "content": f"My key is {PLANTED_KEY}."},
        {"role": "user", "content": [{"type": "text", "text": f"again {PLANTED_KEY}"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "login", "arguments": f'{{"token": "{PLANTED_KEY}"}}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "login", "content": f"ok {PLANTED_KEY}"},
    ]
    redacted = redact_messages(messages)
    assert PLANTED_KEY not in repr(redacted)
    assert redacted[2]["tool_calls"][0]["function"]["name"] == "login"
    assert redacted[2]["tool_calls"][0]["id"] == "call_1"
    assert redacted[3]["tool_call_id"] == "call_1"
    assert redacted[1]["content"][0]["type"] == "text"
    assert PLANTED_KEY in messages[0]["content"]


def test_redact_messages_accepts_custom_redactor():
    redacted = redact_messages([{"role": "user", "content": "secret plan"}],
                               lambda text: text.replace("plan", "[x]"))
    assert redacted == [{"role": "user", "content": "secret [x]"}]


def test_redact_value_walks_nested_records():
    record = {"proposals": [{"text": f"tool_call: login(key='{PLANTED_KEY}')", "confidence": 0.5}],
              "chosen": 0, "scores": (0.9,)}
    redacted = redact_value(record)
    assert PLANTED_KEY not in repr(redacted)
    assert redacted["chosen"] == 0
    assert redacted["scores"] == [0.9]


def fake(*texts: str, role: str = "cheap") -> LangChainProposer:
    model = GenericFakeChatModel(messages=iter([AIMessage(content=text) for text in texts]))
    return LangChainProposer(model, role=role)


class KeyScoringVerifier:
    """Rejects every proposal."""

    name = "rejecting"

    def score(self, messages, tools, proposal):
        return 0.0, []


class TimingOutVerifier:
    """Times out, so that the graph logs a warning: proof that the run's logs were captured."""

    name = "timing-out"

    def score(self, messages, tools, proposal):
        raise TimeoutError("verifier timed out")


def logged_text(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_graph_run_logs_no_key(caplog):
    messages = [{"role": "user", "content": f"Log in with api_key={PLANTED_KEY}"}]
    tools = [{"name": "login", "description": "Log in.",
              "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}}]
    graph = build_speculation_graph(
        proposer=fake(f"tool_call: login(key='{PLANTED_KEY}')"), verifier=TimingOutVerifier(),
        fallback=fake(f"tool_call: login(key='{PLANTED_KEY}')", role="strong"),
    )
    with caplog.at_level(logging.DEBUG):
        result = graph.invoke({"messages": messages, "tools": tools, "seed": 0, "step_id": "s1"})
    assert result["decision"].decision == "escalate"
    assert "verifier timed out" in logged_text(caplog)
    assert PLANTED_KEY not in logged_text(caplog)


class LeakyProposer:
    """A proposer whose error message quotes the request, as some provider clients do."""

    name = "leaky"

    def propose(self, messages, tools, *, n=1, seed=0):
        raise ValueError(f"invalid request: {messages}")


def test_proposer_error_text_logs_no_key(caplog):
    messages = [{"role": "user", "content": f"Log in with api_key={PLANTED_KEY}"}]
    graph = build_speculation_graph(proposer=LeakyProposer(), verifier=KeyScoringVerifier(),
                                    fallback=fake("final_answer: done", role="strong"))
    with caplog.at_level(logging.DEBUG):
        graph.invoke({"messages": messages, "tools": [], "seed": 0, "step_id": "s1"})
    assert PLANTED_KEY not in logged_text(caplog)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from tests.tiny_models import build_causal_lm

    cheap = build_causal_lm(tmp_path_factory.mktemp("cheap"), seed=1)
    strong = build_causal_lm(tmp_path_factory.mktemp("strong"), seed=2)
    return str(cheap), str(strong)


def test_bench_run_logs_no_key(tiny_dirs, tmp_path, caplog):
    from spec_agent._memo import CachedModel
    from spec_agent.actions import Action, ToolCall
    from spec_agent.cost import CostModel
    from spec_agent.db.store import SqlTraceStore
    from spec_agent.eval.bench import BenchConfig, BenchRunner, Models
    from spec_agent.eval.schema import Example
    from spec_agent.hf import GenerationConfig, HFChatModel
    from spec_agent.verifiers import ConfidenceVerifier

    generation = GenerationConfig(max_new_tokens=4)
    models = Models(
        cheap=CachedModel(HFChatModel(tiny_dirs[0], role="cheap", generation=generation)),
        strong=CachedModel(HFChatModel(tiny_dirs[1], role="strong", generation=generation)),
        verifier=ConfidenceVerifier(),
    )
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    runner = BenchRunner(config=BenchConfig(limit=0), models=models, store=store,
                         cost_model=CostModel())
    example = Example(
        id="secret-1", source="test/secrets", scenario="s1",
        messages=[{"role": "user", "content": f"Authorization: Bearer {PLANTED_KEY}"},
                  {"role": "tool", "name": "env", "content": f"OPENAI_API_KEY={PLANTED_KEY}" * 40}],
        tools=[{"name": "login", "parameters": {"type": "object", "properties": {}}}],
        action=Action(kind="tool_call", tool_calls=(ToolCall(name="login", arguments={}),)),
    )
    with caplog.at_level(logging.DEBUG):
        run_id = store.start_run(name="secrets", config={})
        runner.run([example], run_id=run_id)
    assert len(store.decisions(run_id)) == 5
    assert caplog.records
    assert PLANTED_KEY not in logged_text(caplog)


def package_sources() -> list[Path]:
    return sorted(
        path for folder in PACKAGE_FOLDERS for path in (REPOSITORY / folder).rglob("*.py")
    )


def remote_code_settings(tree: ast.AST) -> list[tuple[int, str]]:
    """Return `(line, source)` of every `trust_remote_code` keyword or dict key not set to False."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "trust_remote_code" and not is_false(keyword.value):
                    found.append((node.lineno, ast.unparse(keyword)))
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" \
                        and not is_false(value):
                    found.append((node.lineno, ast.unparse(node)))
    return found


def is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def test_package_never_trusts_remote_code():
    sources = package_sources()
    assert len(sources) > 20
    offenders = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.relative_to(REPOSITORY)}:{line}: {text}"
                      for line, text in remote_code_settings(tree)]
    assert offenders == []


def test_remote_code_check_finds_true():
    tree = ast.parse("AutoModel.from_pretrained(p, trust_remote_code=True)\n"
                     "options = {'trust_remote_code': flag}\n"
                     "AutoTokenizer.from_pretrained(p, trust_remote_code=False)\n")
    assert [line for line, _ in remote_code_settings(tree)] == [1, 2]
