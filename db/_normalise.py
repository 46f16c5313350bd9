"""Split one decision's proposals and model calls into rows of the `proposals` and `model_calls` tables.

The store calls this on every write and the schema-2 migration calls it to backfill older rows, so
both fill the child tables the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def proposal_values(
    key: dict[str, str],
    *,
    proposals: Sequence[dict[str, Any]],
    scores: Sequence[float | None],
    verdicts: Sequence[str],
    chosen: int | None,
    fallback: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Return one `proposals` row per proposal, then one for the fallback model's action.

    Args:
        key: The decision's `run_id`, `config` and `example_id`.
        proposals: Proposals as `Proposal.to_dict()` output, in sampling order.
        scores: Verifier score per proposal; shorter than `proposals` when none were scored.
        verdicts: Verdict per proposal, same length rule as `scores`.
        chosen: Index of the proposal the agent used, if any.
        fallback: The fallback model's proposal, when it ran.
    """
    rows = []
    for position, proposal in enumerate(proposals):
        score = scores[position] if position < len(scores) else None
        verdict = verdicts[position] if position < len(verdicts) else None
        is_chosen = chosen == position and fallback is None
        rows.append(_proposal_row(key, "proposal", position, proposal, score, verdict, is_chosen))
    if fallback is not None:
        rows.append(_proposal_row(key, "fallback", 0, fallback, None, None, True))
    return rows


def _proposal_row(
    key: dict[str, str],
    source: str,
    position: int,
    proposal: dict[str, Any],
    score: float | None,
    verdict: str | None,
    chosen: bool,
) -> dict[str, Any]:
    action = proposal.get("action")
    return {
        **key,
        "source": source,
        "position": position,
        "valid": action is not None,
        "kind": action.get("kind") if action else None,
        "score": score,
        "verdict": verdict,
        "chosen": chosen,
        "confidence": proposal.get("confidence"),
        "kind_probability": proposal.get("kind_probability"),
        "error": proposal.get("error"),
    }


def call_values(key: dict[str, str], calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one `model_calls` row per call, given calls as `ModelCall.to_dict()` output."""
    return [
        {
            **key,
            "position": position,
            "role": call["role"],
            "model": call.get("model", ""),
            "prompt_tokens": call.get("prompt_tokens"),
            "completion_tokens": call.get("completion_tokens"),
            "reused_tokens": int(call.get("reused_tokens") or 0),
            "latency_s": float(call.get("latency_s") or 0.0),
            "cached": bool(call.get("cached", False)),
        }
        for position, call in enumerate(calls)
    ]
