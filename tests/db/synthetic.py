"""Synthetic benchmark runs for the store, replay and calibration tests and the speed benchmarks.

`example_rows` builds the A, B, C and D rows of one example the way the benchmark runner stores
them: B uses the cheap proposal unverified, C and D score the same proposal and escalate to the
strong model (A's action) below their threshold. Prices are `CostModel()` defaults.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from spec_agent.db.store import DecisionRow

PRICES = {"cheap": Decimal("0.15"), "verifier": Decimal("0.05"), "judge": Decimal("1.00"),
          "strong": Decimal("1.00")}
KINDS = ("file_read", "file_write", "retrieval", "tool_call", "final_answer")
TOKENS = 100
"""Prompt tokens of every synthetic call; completions are 10 tokens."""


def _action(kind: str | None) -> dict[str, Any] | None:
    if kind is None:
        return None
    return {"kind": kind, "tool_calls": [], "content": None}


def _calls(*roles: str) -> list[dict[str, Any]]:
    return [
        {"role": role, "model": role, "prompt_tokens": TOKENS, "completion_tokens": 10,
         "latency_s": 0.01, "reused_tokens": 0, "cached": False}
        for role in roles
    ]


def _row(run_id: str, config: str, example_id: str, gold_kind: str, **fields: Any) -> DecisionRow:
    calls = fields.pop("calls")
    by_role: dict[str, dict[str, int]] = {}
    for call in calls:
        counts = by_role.setdefault(call["role"], {"prompt": 0, "completion": 0})
        counts["prompt"] += TOKENS
        counts["completion"] += 10
    return DecisionRow(
        run_id=run_id,
        config=config,
        example_id=example_id,
        source="synthetic",
        scenario=example_id,
        gold_kind=gold_kind,
        gold=_action(gold_kind),  # type: ignore[arg-type]
        calls=calls,
        tokens_by_role=by_role,
        prompt_tokens=TOKENS * len(calls),
        completion_tokens=10 * len(calls),
        cost=sum((PRICES[call["role"]] for call in calls), Decimal(0)),
        thread_id=f"thread-{example_id}",
        step=0,
        node="speculate",
        **fields,
    )


def example_rows(
    run_id: str,
    example_id: str,
    *,
    gold_kind: str,
    proposal_kind: str | None,
    proposal_full: bool,
    strong_kind: str,
    strong_full: bool,
    verifier_score: float | None,
    judge_score: float | None,
    confidence: float | None = None,
    threshold: float = 0.5,
) -> list[DecisionRow]:
    """Return the A, B, C and D rows of one example.

    Args:
        proposal_kind: Kind of the cheap proposal; None makes it invalid (unparsed).
        proposal_full: Whether the proposal matches the gold action in full.
        strong_kind: Kind of the strong model's action.
        strong_full: Whether the strong model's action matches in full.
        verifier_score: D's stored score; judge_score: C's. Invalid proposals get None.
        threshold: Threshold both C and D ran with.
    """
    proposal = {"text": "draft", "action": _action(proposal_kind), "error": None,
                "confidence": confidence}
    strong = {"text": "strong", "action": _action(strong_kind), "error": None, "confidence": None}
    proposal_right = {"kind_correct": proposal_kind == gold_kind, "full_correct": proposal_full}
    strong_right = {"kind_correct": strong_kind == gold_kind, "full_correct": strong_full}
    rows = [
        _row(run_id, "A", example_id, gold_kind, decision="direct", fallback=strong,
             final_action=strong["action"], final_kind=strong_kind, calls=_calls("strong"),
             **strong_right),
        _row(run_id, "B", example_id, gold_kind, decision="unverified", proposals=[proposal],
             chosen=0, final_action=proposal["action"], final_kind=proposal_kind,
             calls=_calls("cheap"), **proposal_right),
    ]
    for config, role, score in (("C", "judge", judge_score), ("D", "verifier", verifier_score)):
        accepted = proposal_kind is not None and score is not None and score >= threshold
        verdict = "ACCEPT" if accepted else "REJECT"
        calls = _calls("cheap", role) if proposal_kind is not None else _calls("cheap")
        fields: dict[str, Any] = {
            "proposals": [proposal], "scores": [score], "verdicts": [verdict], "threshold": threshold,
        }
        if accepted:
            fields.update(decision="accept", chosen=0, final_action=proposal["action"],
                          final_kind=proposal_kind, calls=calls, **proposal_right)
        else:
            fields.update(decision="escalate", fallback=strong, final_action=strong["action"],
                          final_kind=strong_kind, calls=calls + _calls("strong"), **strong_right)
        rows.append(_row(run_id, config, example_id, gold_kind, **fields))
    return rows


HAND_CHECKED = (
    # example, gold, proposal kind, proposal full, strong kind, strong full, verifier, judge
    ("ex1", "file_read", "file_read", True, "file_read", True, 0.9, 0.8),
    ("ex2", "tool_call", "final_answer", False, "tool_call", True, 0.6, 0.2),
    ("ex3", "retrieval", None, False, "retrieval", False, None, None),
    ("ex4", "file_write", "file_write", False, "final_answer", False, 0.3, 0.9),
)
"""Four examples whose replay numbers the tests work out by hand."""


def hand_checked_rows(run_id: str) -> list[DecisionRow]:
    """Return the A-D rows of the four `HAND_CHECKED` examples."""
    rows = []
    for example_id, gold, kind, full, strong, strong_full, verifier, judge in HAND_CHECKED:
        rows += example_rows(
            run_id, example_id, gold_kind=gold, proposal_kind=kind, proposal_full=full,
            strong_kind=strong, strong_full=strong_full, verifier_score=verifier,
            judge_score=judge, confidence=verifier,
        )
    return rows


def random_rows(run_id: str, examples: int, *, seed: int = 0) -> list[DecisionRow]:
    """Return A-D rows of `examples` random examples whose scores predict correctness."""
    rng = random.Random(seed)
    rows = []
    for index in range(examples):
        gold = rng.choice(KINDS)
        valid = rng.random() > 0.1
        right = valid and rng.random() < 0.6
        kind = gold if right else (rng.choice(KINDS) if valid else None)
        score = min(1.0, max(0.0, rng.gauss(0.7 if right else 0.35, 0.15))) if valid else None
        judge = min(1.0, max(0.0, rng.gauss(0.75 if right else 0.3, 0.1))) if valid else None
        strong = gold if rng.random() < 0.8 else "final_answer"
        rows += example_rows(
            run_id, f"ex-{index:06d}", gold_kind=gold, proposal_kind=kind,
            proposal_full=right and rng.random() < 0.8, strong_kind=strong,
            strong_full=strong == gold and rng.random() < 0.75, verifier_score=score,
            judge_score=judge, confidence=score,
        )
    return rows
