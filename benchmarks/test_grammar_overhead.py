"""Cost of the call grammar: the share of decoding time spent in its token checks.

SmolLM2 decodes a `tool_call:` payload within the grammar for eval examples, on a warm prefix
cache. The suite times the `GrammarConstraint` calls inside the same decoding, so both numbers come
from one run. Seconds per token against free decoding would mislead. A free payload from the base
model ends after a few tokens, while a constrained one runs to its closing parenthesis, so the two
paths would not decode the same tokens.
"""

from __future__ import annotations

import os
import time

import pytest

from spec_agent import assets
from spec_agent.actions import TOOL_KINDS
from spec_agent.hf import HFChatModel
from spec_agent.prompts import render_chat

MODEL = os.environ.get("SPEC_AGENT_BENCH_MODEL", "smollm2-135m-instruct")
EXAMPLES = int(os.environ.get("SPEC_AGENT_BENCH_EXAMPLES", "8"))
OPENING = ("tool_call:",)


def tool_examples() -> list:
    from spec_agent._commands import default_dataset_dir
    from spec_agent.eval.bench import select_examples
    from spec_agent.eval.dataset import load_split

    folder = default_dataset_dir()
    if not (folder / "eval.jsonl").exists():
        pytest.skip(f"no BFCL eval split in {folder}: run `spec-agent data build` first")
    examples = select_examples(load_split(folder, "eval"), limit=0, seed=0)
    return [example for example in examples if example.action.kind in TOOL_KINDS][:EXAMPLES]


def decode_constrained(model: HFChatModel, examples: list) -> tuple[float, int]:
    """Return the seconds of constrained decoding and the tokens generated, summed over the examples."""
    seconds, tokens = 0.0, 0
    for example in examples:
        chat = render_chat(list(example.messages), list(example.tools))
        # Fill the prefix cache, so the timed call does not prefill the prompt.
        model.generate(chat, openings=OPENING)
        started = time.perf_counter()
        (generation,), _ = model.generate(chat, openings=OPENING, tools=list(example.tools))
        seconds += time.perf_counter() - started
        tokens += generation.completion_tokens
    return seconds, tokens


@pytest.mark.skipif(not assets.is_fetched(MODEL), reason=f"run `spec-agent assets fetch {MODEL}`")
def test_grammar_share_of_decoding(benchmark, monkeypatch):
    import torch

    from spec_agent.constrained import GrammarConstraint

    torch.set_num_threads(int(os.environ.get("SPEC_AGENT_BENCH_THREADS", "2")))
    checks = {"seconds": 0.0, "steps": 0, "full_scans": 0}
    check = GrammarConstraint.__call__

    def timed(self, input_ids, scores):
        started, scans = time.perf_counter(), self.full_scans
        masked = check(self, input_ids, scores)
        checks["seconds"] += time.perf_counter() - started
        checks["steps"] += 1
        checks["full_scans"] += self.full_scans - scans
        return masked

    monkeypatch.setattr(GrammarConstraint, "__call__", timed)
    model = HFChatModel(MODEL, role="cheap").load()
    examples = tool_examples()
    seconds, tokens = benchmark.pedantic(decode_constrained, args=(model, examples), rounds=1, iterations=1)
    share = checks["seconds"] / seconds
    benchmark.extra_info.update(
        examples=len(examples),
        tokens=tokens,
        ms_per_token=1000 * seconds / tokens,
        grammar_ms_per_step=1000 * checks["seconds"] / checks["steps"],
        full_scans=checks["full_scans"],
        grammar_share=share,
    )
    print(f"\n{tokens} tokens in {seconds:.1f} s ({1000 * seconds / tokens:.1f} ms/token); grammar checks "
          f"{1000 * checks['seconds'] / checks['steps']:.2f} ms/step over {checks['steps']} steps, "
          f"{checks['full_scans']} full scans: {100 * share:.1f}% of decoding")
    assert share <= 0.05
