"""Cost of the call grammar per generated token, against free decoding of the same payloads.

Both paths decode a `tool_call:` payload for the same eval examples with SmolLM2, one after the
other on a warm prefix cache, so each step costs the same forward pass and the difference is the
grammar's token checks. Constrained payloads differ in length from free ones, so the suite
compares seconds per generated token.
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


def decode_both(model: HFChatModel, examples: list) -> dict[str, list[float]]:
    """Return the seconds and generated tokens of each path, summed over the examples."""
    totals = {"free": [0.0, 0.0], "grammar": [0.0, 0.0]}
    for example in examples:
        chat = render_chat(list(example.messages), list(example.tools))
        # Fill the prefix cache, so neither timed call prefills the prompt.
        model.generate(chat, openings=OPENING)
        for path, tools in (("free", None), ("grammar", list(example.tools))):
            started = time.perf_counter()
            (generation,), _ = model.generate(chat, openings=OPENING, tools=tools)
            totals[path][0] += time.perf_counter() - started
            totals[path][1] += generation.completion_tokens
    return totals


@pytest.mark.skipif(not assets.is_fetched(MODEL), reason=f"run `spec-agent assets fetch {MODEL}`")
def test_grammar_cost_per_token(benchmark):
    import torch

    torch.set_num_threads(int(os.environ.get("SPEC_AGENT_BENCH_THREADS", "2")))
    model = HFChatModel(MODEL, role="cheap").load()
    examples = tool_examples()
    totals = benchmark.pedantic(decode_both, args=(model, examples), rounds=1, iterations=1)
    per_token = {path: seconds / max(tokens, 1) for path, (seconds, tokens) in totals.items()}
    ratio = per_token["grammar"] / per_token["free"]
    benchmark.extra_info.update(
        examples=len(examples),
        free_ms_per_token=1000 * per_token["free"],
        grammar_ms_per_token=1000 * per_token["grammar"],
        free_tokens=totals["free"][1],
        grammar_tokens=totals["grammar"][1],
        ratio=ratio,
    )
    print(f"\nfree {1000 * per_token['free']:.1f} ms/token ({totals['free'][1]:.0f} tokens), grammar "
          f"{1000 * per_token['grammar']:.1f} ms/token ({totals['grammar'][1]:.0f} tokens), ratio {ratio:.2f}x")
    assert ratio <= 1.15
