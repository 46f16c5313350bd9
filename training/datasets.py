"""Training data: proposer SFT rows and balanced verifier pairs, built from the train split only.

Prompts are rendered by `render_prompt`, the same `render_chat` + chat-template path that
`HFChatModel` uses at inference, with the same rule for prompts that are too long (drop the oldest
conversation messages, keep the system message and the last message). The SFT target is the gold
action line followed by a newline, because generation stops at the first newline.

Verifier pairs are balanced 50/50. Each sampled example gives its gold action as a positive and one
negative. The negative is a wrong proposal of the cheap proposer on that example (a hard negative) or a
perturbed gold action (wrong kind, wrong tool, wrong argument value, missing argument). Rows are
split by scenario into `train`, `calibration` and `heldout`, and a row whose scenario is in the eval
split raises `DatasetError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spec_agent.actions import ACTION_KINDS, TOOL_KINDS, Action, ToolCall
from spec_agent.decision import Proposal
from spec_agent.errors import DatasetError
from spec_agent.eval.dataset import load_split, scenario_position
from spec_agent.eval.matching import action_matches
from spec_agent.eval.schema import Example
from spec_agent.prompts import render_action, render_chat, render_tools
from spec_agent.verifiers import SchemaVerifier

logger = logging.getLogger(__name__)

SPLIT_SALT = "spec-agent-training"
"""Salt of the scenario hash that splits the train split into training, calibration and held-out."""
TEXT_KINDS: tuple[str, ...] = tuple(kind for kind in ACTION_KINDS if kind not in TOOL_KINDS)
PERTURBATIONS: tuple[str, ...] = ("wrong_kind", "wrong_tool", "wrong_argument", "missing_argument")
HARD_NEGATIVE = "proposer"
GOLD = "gold"
MAX_CANDIDATE_CHARS_PER_TOKEN = 2
"""Characters of candidate text kept per token of half the verifier's limit, so the action side
never uses more than about half of the input."""
_CHECKS_SHOWN = 3
"""Schema problems and unfound values listed per check line; the count covers the rest."""
_TEXT_CONTENT = {
    "final_answer": "The request is complete.",
    "ask_clarification": "Could you give me the missing details?",
    "BLOCKED": "None of the available tools can do this.",
}

ProgressCallback = Callable[[int, int], None]
"""Callable that receives (done, total) while proposals are generated."""


# --- Loading and splitting -------------------------------------------------------------------


def load_training_examples(folder: Path) -> tuple[list[Example], frozenset[str]]:
    """Load the train split and the set of eval scenarios of a dataset folder.

    Raises:
        DatasetError: A train row's scenario also occurs in the eval split.
    """
    train = load_split(folder, "train")
    eval_path = Path(folder) / "eval.jsonl"
    eval_scenarios = frozenset(_scenarios(eval_path)) if eval_path.exists() else frozenset()
    check_no_eval(train, eval_scenarios)
    return train, eval_scenarios


def _scenarios(path: Path) -> Iterable[str]:
    # Only the split key is needed, so the rows are not validated as full examples.
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield str(json.loads(line)["scenario"])


def check_no_eval(examples: Iterable[Example], eval_scenarios: frozenset[str]) -> None:
    """Raise DatasetError when an example belongs to an eval scenario."""
    for example in examples:
        if example.scenario in eval_scenarios:
            raise DatasetError(
                f"Example {example.id!r} has scenario {example.scenario!r}, which is in the eval "
                "split; train only on the train split."
            )


def assign_split(scenario: str, *, calibration: float, heldout: float, seed: int) -> str:
    """Return `train`, `calibration` or `heldout` for a train-split scenario, stable per seed."""
    position = scenario_position(scenario, f"{SPLIT_SALT}-{seed}")
    if position < heldout:
        return "heldout"
    if position < heldout + calibration:
        return "calibration"
    return "train"


# --- Shared prompt rendering -----------------------------------------------------------------


def fit_chat(tokenizer: Any, chat: list[dict[str, str]], max_tokens: int) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest conversation messages until the prompt fits `max_tokens`.

    This is the rule of `HFChatModel.encode`: the system message and the last message are always
    kept. Returns the chat and its token count, which can still exceed `max_tokens`.
    """
    chat = list(chat)
    while True:
        count = len(_prompt_ids(tokenizer, chat))
        if count <= max_tokens or len(chat) <= 2:
            return chat, count
        del chat[1]


def _prompt_ids(tokenizer: Any, chat: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def render_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, max_tokens: int | None = None
) -> str:
    """Render a context as the prompt string that inference feeds the model.

    Args:
        tokenizer: The model's tokenizer; its own chat template renders the prompt.
        messages: The context in eval-v3 layout.
        tools: Tool schemas on offer.
        max_tokens: Token limit of the prompt; None keeps every message.
    """
    chat = render_chat(messages, tools)
    if max_tokens is not None:
        chat, _ = fit_chat(tokenizer, chat, max_tokens)
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


def render_target(action: Action) -> str:
    """Render the SFT target: the action line and the newline at which generation stops."""
    return render_action(action) + "\n"


class _ChatRecorder:
    """A stand-in judge model that records the chat `JudgeVerifier` would send."""

    name = "recorder"

    def __init__(self) -> None:
        self.chat: list[dict[str, str]] = []

    def label_probability(self, chat: list[dict[str, str]]) -> tuple[float, None]:
        self.chat = chat
        return 0.0, None


def judge_chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]], action: Action) -> list[dict[str, str]]:
    """Return the chat that `JudgeVerifier` sends about `action`, for causal-LM verifier training.

    The chat comes from `JudgeVerifier.score` itself, so training and scoring cannot drift apart.
    """
    from spec_agent.verifiers import JudgeVerifier

    recorder = _ChatRecorder()
    JudgeVerifier(recorder).score(messages, tools, Proposal(text=render_action(action), action=action))
    return recorder.chat


# --- Proposer SFT rows -----------------------------------------------------------------------


def build_sft_rows(
    examples: Sequence[Example], tokenizer: Any, *, count: int, max_length: int, seed: int
) -> tuple[list[dict[str, Any]], int]:
    """Sample up to `count` examples (0: all), balanced over action kinds, and render those that fit.

    Kinds take turns: every round takes the next example of each kind that has one left, so the
    rows hold as many of a rare kind as of a common one until the rare kind runs out. Uniform
    sampling would leave kinds with a few percent of the support almost unseen.

    Each row contains `prompt` (the inference prompt string), `completion` (the target line) and
    provenance columns. Returns the rows and the number of examples skipped because even the
    system message and the last message exceed `max_length` tokens.
    """
    rng = random.Random(seed)
    queues: list[list[Example]] = []
    for kind in ACTION_KINDS:
        of_kind = [example for example in examples if example.action.kind == kind]
        rng.shuffle(of_kind)
        if of_kind:
            # Reversed, so that `pop()` takes the examples in their shuffled order.
            queues.append(of_kind[::-1])
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    while queues and not (count and len(rows) >= count):
        for queue in queues:
            if count and len(rows) >= count:
                break
            example = queue.pop()
            row = _sft_row(example, tokenizer, max_length)
            if row is None:
                skipped[example.action.kind] += 1
            else:
                rows.append(row)
        queues = [queue for queue in queues if queue]
    if skipped:
        logger.warning("Skipped %s examples whose shortest prompt exceeds %s tokens (by kind: %s)",
                       sum(skipped.values()), max_length, dict(skipped))
    return rows, sum(skipped.values())


def _sft_row(example: Example, tokenizer: Any, max_length: int) -> dict[str, Any] | None:
    """Render one example as a row of at most `max_length` tokens, or None when it cannot fit."""
    completion = render_target(example.action)
    eos_tokens = 1  # TRL appends the EOS token to every completion.
    budget = max_length - len(tokenizer(completion, add_special_tokens=False)["input_ids"]) - eos_tokens
    chat, tokens = fit_chat(tokenizer, render_chat(example.messages, example.tools), budget)
    if tokens > budget:
        return None
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return {"prompt": prompt, "completion": completion, **_provenance(example)}


def _provenance(example: Example) -> dict[str, str]:
    return {"id": example.id, "scenario": example.scenario, "kind": example.action.kind,
            "source": example.source}


# --- Perturbed negatives ---------------------------------------------------------------------


def perturb(example: Example, rng: random.Random) -> tuple[str, Action] | None:
    """Return a perturbation name and a wrong action derived from the gold action.

    The perturbations are tried in random order, and one whose result still matches the gold
    action under the benchmark's rules is discarded. Returns None when none applies.
    """
    names = list(PERTURBATIONS)
    rng.shuffle(names)
    for name in names:
        action = _PERTURBERS[name](example, rng)
        if action is not None and not action_matches(action, example):
            return name, action
    return None


def _wrong_kind(example: Example, rng: random.Random) -> Action | None:
    gold = example.action
    if gold.kind in TOOL_KINDS:
        kind = rng.choice([kind for kind in ACTION_KINDS if kind != gold.kind])
        if kind in TOOL_KINDS:
            return Action(kind=kind, tool_calls=gold.tool_calls)
        return Action(kind=kind, content=_TEXT_CONTENT[kind])
    others = [kind for kind in TEXT_KINDS if kind != gold.kind]
    if example.tools and rng.random() < 0.5:
        tool = rng.choice(example.tools)
        return Action(kind="tool_call", tool_calls=(ToolCall(name=tool["name"], arguments=_placeholder_arguments(tool)),))
    return Action(kind=rng.choice(others), content=gold.content or _TEXT_CONTENT[gold.kind])


def _placeholder_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    parameters = tool.get("parameters") or {}
    properties = parameters.get("properties") or {}
    placeholders = {"string": "value", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    return {name: placeholders.get((properties.get(name) or {}).get("type"), "value")
            for name in parameters.get("required") or ()}


def _wrong_tool(example: Example, rng: random.Random) -> Action | None:
    gold = example.action
    names = [tool["name"] for tool in example.tools if tool["name"] not in {c.name for c in gold.tool_calls}]
    if gold.kind not in TOOL_KINDS or not names:
        return None
    index = rng.randrange(len(gold.tool_calls))
    call = gold.tool_calls[index]
    swapped = ToolCall(name=rng.choice(names), arguments=dict(call.arguments))
    return _with_call(gold, index, swapped)


def _wrong_argument(example: Example, rng: random.Random) -> Action | None:
    gold = example.action
    candidates = [(index, key) for index, call in enumerate(gold.tool_calls) for key in call.arguments]
    if gold.kind not in TOOL_KINDS or not candidates:
        return None
    index, key = rng.choice(candidates)
    call = gold.tool_calls[index]
    value = _changed_value(call.arguments[key], rng)
    return _with_call(gold, index, ToolCall(name=call.name, arguments={**call.arguments, key: value}))


def _changed_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + rng.choice([1, 2, 10]) if value == 0 else value * rng.choice([2, -1, 10])
    if isinstance(value, str):
        return value[::-1] + "x" if value else "unknown"
    if isinstance(value, list):
        return value[:-1] if value else ["unknown"]
    if isinstance(value, dict):
        return {key: item for key, item in list(value.items())[1:]} if value else {"unknown": 1}
    return "unknown"


def _missing_argument(example: Example, rng: random.Random) -> Action | None:
    gold = example.action
    candidates = [(index, key) for index, call in enumerate(gold.tool_calls) for key in call.arguments]
    if gold.kind not in TOOL_KINDS or not candidates:
        return None
    index, key = rng.choice(candidates)
    call = gold.tool_calls[index]
    arguments = {name: value for name, value in call.arguments.items() if name != key}
    return _with_call(gold, index, ToolCall(name=call.name, arguments=arguments))


def _with_call(action: Action, index: int, call: ToolCall) -> Action:
    calls = list(action.tool_calls)
    calls[index] = call
    return replace(action, tool_calls=tuple(calls))


_PERTURBERS: dict[str, Callable[[Example, random.Random], Action | None]] = {
    "wrong_kind": _wrong_kind,
    "wrong_tool": _wrong_tool,
    "wrong_argument": _wrong_argument,
    "missing_argument": _missing_argument,
}


# --- Hard negatives from the cheap proposer --------------------------------------------------


def prompt_digest(example: Example) -> str:
    """Return the sha256 of an example's rendered chat, the key of cached proposals."""
    chat = render_chat(example.messages, example.tools)
    return hashlib.sha256(json.dumps(chat, sort_keys=True).encode()).hexdigest()


def generate_proposals(
    examples: Sequence[Example],
    proposer: Any,
    cache_path: Path,
    *,
    progress: ProgressCallback | None = None,
) -> dict[str, Proposal]:
    """Return the greedy proposal of `proposer` for each example, generating only uncached ones.

    Each new proposal is appended to the JSONL cache at once, so an interrupted run keeps its
    work. Cached proposals count only when the model name and the rendered prompt are unchanged.

    Args:
        examples: Train-split examples to propose for.
        proposer: A `Proposer` (e.g. `LocalProposer(HFChatModel(...))`).
        cache_path: JSONL file of cached proposals; created when missing.
        progress: Called with (done, total) after each example.
    """
    cached = _read_proposal_cache(cache_path, proposer.name)
    results: dict[str, Proposal] = {}
    with open_jsonl_cache(cache_path) as handle:
        for done, example in enumerate(examples, start=1):
            digest = prompt_digest(example)
            proposal = cached.get((example.id, digest))
            if proposal is None:
                proposals, _ = proposer.propose(example.messages, example.tools)
                proposal = proposals[0]
                record = {"example_id": example.id, "model": proposer.name, "prompt_sha256": digest,
                          "proposal": proposal.to_dict()}
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
            results[example.id] = proposal
            if progress is not None:
                progress(done, len(examples))
    return results


def cached_proposals(examples: Sequence[Example], cache_path: Path, model: str) -> dict[str, Proposal]:
    """Return the cached proposals of `model` for those examples whose prompt has not changed since."""
    cached = _read_proposal_cache(cache_path, model)
    found = {}
    for example in examples:
        proposal = cached.get((example.id, prompt_digest(example)))
        if proposal is not None:
            found[example.id] = proposal
    return found


def _read_proposal_cache(path: Path, model: str) -> dict[tuple[str, str], Proposal]:
    cached = {}
    for record in read_jsonl_cache(path):
        if record.get("model") == model:
            cached[(record["example_id"], record["prompt_sha256"])] = Proposal.from_dict(record["proposal"])
    return cached


def read_jsonl_cache(path: Path) -> list[dict[str, Any]]:
    """Return the records of an append-only JSONL cache, skipping a torn line.

    A run killed mid-write leaves a partial line behind; its example is simply computed again.
    """
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if line.strip():
                logger.warning("Skipped a partial line in %s", path)
    return records


def open_jsonl_cache(path: Path) -> Any:
    """Open an append-only JSONL cache for appending, so that new records start on a line of their own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as existing:
            existing.seek(-1, 2)
            torn = existing.read(1) != b"\n"
    handle = path.open("a", encoding="utf-8")
    if torn:
        handle.write("\n")
    return handle


def proposal_sample(examples: Sequence[Example], count: int, *, seed: int) -> list[Example]:
    """Return a seeded sample of `count` examples, ordered by id.

    Id order keeps the steps of one trajectory together, so the model's prefix cache reuses most
    of each prompt.
    """
    chosen = random.Random(f"proposals:{seed}").sample(list(examples), min(count, len(examples)))
    return sorted(chosen, key=lambda example: example.id)


def hard_negatives(examples: Sequence[Example], proposals: dict[str, Proposal]) -> dict[str, Action]:
    """Return the parsed proposals that do not match their example's gold action, by example id."""
    wrong = {}
    for example in examples:
        proposal = proposals.get(example.id)
        if proposal is not None and proposal.action is not None and not action_matches(proposal.action, example):
            wrong[example.id] = proposal.action
    return wrong


# --- Verifier pairs --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PairSplits:
    """Sample size and scenario split shares of verifier pairs."""

    positives: int
    """Examples to draw a positive and a negative from; 0 uses all."""
    calibration: float
    """Share of scenarios for threshold calibration."""
    heldout: float
    """Share of scenarios for the held-out ROC AUC."""
    seed: int
    """Seed of the sample, the split and the perturbations."""


def build_verifier_pairs(
    examples: Sequence[Example],
    splits: PairSplits,
    *,
    negatives: dict[str, Action],
    eval_scenarios: frozenset[str],
) -> list[dict[str, Any]]:
    """Build balanced pair rows: a positive and a negative per sampled example.

    Examples with a hard negative are sampled first; the others get a perturbed negative.

    Args:
        examples: Train-split examples.
        splits: Sample size, split shares and seed.
        negatives: Wrong proposals of the cheap proposer, by example id.
        eval_scenarios: Scenarios of the eval split; an example from one raises DatasetError.
    """
    check_no_eval(examples, eval_scenarios)
    rng = random.Random(splits.seed)
    order = list(examples)
    rng.shuffle(order)
    order.sort(key=lambda example: example.id not in negatives)
    rows: list[dict[str, Any]] = []
    for example in order:
        if splits.positives and len(rows) >= 2 * splits.positives:
            break
        negative = _negative_for(example, negatives, random.Random(f"{splits.seed}:{example.id}"))
        if negative is None:
            continue
        split = assign_split(example.scenario, calibration=splits.calibration, heldout=splits.heldout,
                             seed=splits.seed)
        rows.append(_pair_row(example, example.action, GOLD, 1, split))
        rows.append(_pair_row(example, negative[1], negative[0], 0, split))
    return rows


def _negative_for(example: Example, negatives: dict[str, Action], rng: random.Random) -> tuple[str, Action] | None:
    if example.id in negatives:
        return HARD_NEGATIVE, negatives[example.id]
    return perturb(example, rng)


def _pair_row(example: Example, action: Action, source: str, label: int, split: str) -> dict[str, Any]:
    return {
        "id": example.id,
        "scenario": example.scenario,
        "split": split,
        "kind": example.action.kind,
        "source": source,
        "label": label,
        "action": json.dumps(action.to_dict(), sort_keys=True),
    }


# --- Verifier input text ---------------------------------------------------------------------


def verifier_texts(messages: list[dict[str, Any]], tools: list[dict[str, Any]], action: Action) -> tuple[str, str]:
    """Render the (context, candidate) text pair that the classifier verifier reads.

    The context is the conversation as rendered for the proposer, without the fixed instructions,
    followed by the names of the tools on offer, and the classifier cuts it from the left. The
    candidate is the action line, the result of the free checks (`action_checks`) and the declared
    signature of each tool it calls. The checks come before the signatures so that a long signature
    never truncates them.
    """
    lines = [f"{turn['role']}: {turn['content']}" for turn in render_chat(messages, tools)[1:]]
    lines.append("Tools: " + (", ".join(tool["name"] for tool in tools) or "(none)"))
    by_name = {tool["name"]: tool for tool in tools}
    candidate = [render_action(action), *action_checks(messages, tools, action)]
    for call in action.tool_calls:
        tool = by_name.get(call.name)
        candidate.append(render_tools([tool]) if tool else f"- {call.name}: not among the available tools")
    return "\n".join(lines), "\n".join(candidate)


def action_checks(messages: list[dict[str, Any]], tools: list[dict[str, Any]], action: Action) -> list[str]:
    """Return the lines of free evidence about an action that the classifier reads beside it.

    Two checks that cost no model call: the schema check of every tool call, and which argument
    values occur in the conversation. A small classifier cannot learn JSON-schema rules or exact
    string look-ups from a few thousand pairs (without these lines, MiniLM trained on 1,360 pairs
    stayed near chance: held-out ROC AUC 0.58), but it can learn to weigh their outcome.
    """
    problems = SchemaVerifier().problems(tools, Proposal(text="", action=action))
    lines = ["Schema: " + ("; ".join(problems[:_CHECKS_SHOWN]) if problems else "ok")]
    values = [value for call in action.tool_calls for value in call.arguments.values()
              if isinstance(value, (str, int, float)) and not isinstance(value, bool)]
    if values:
        seen = _conversation_text(messages)
        unseen = [value for value in values if str(value).strip().lower() not in seen]
        lines.append(f"Values found in the conversation: {len(values) - len(unseen)} of {len(values)}"
                     + ("; not found: " + ", ".join(repr(value) for value in unseen[:_CHECKS_SHOWN]) if unseen else ""))
    return lines


def _conversation_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        parts.append(str(message.get("content") or ""))
        parts.extend(json.dumps(call, sort_keys=True) for call in message.get("tool_calls") or ())
    return "\n".join(parts).lower()


# --- Dataset cards ---------------------------------------------------------------------------


def dataset_card(rows_by_split: dict[str, list[dict[str, Any]]], *, source_sha256: str) -> dict[str, Any]:
    """Describe rows per split: counts per kind, per source and per label, and row hashes.

    A kind with no rows in a split is listed with 0 and logged as a warning with the counts.
    """
    card: dict[str, Any] = {"source_sha256": source_sha256, "splits": {}, "warnings": []}
    for split, rows in rows_by_split.items():
        kinds = Counter(row["kind"] for row in rows)
        card["splits"][split] = {
            "rows": len(rows),
            "kinds": {kind: kinds.get(kind, 0) for kind in ACTION_KINDS},
            "sources": dict(sorted(Counter(row["source"] for row in rows).items())),
            "labels": dict(sorted(Counter(str(row["label"]) for row in rows if "label" in row).items())),
            "scenarios": len({row["scenario"] for row in rows}),
            "sha256": rows_digest(rows),
        }
        empty = [kind for kind in ACTION_KINDS if not kinds.get(kind)]
        if empty:
            message = f"split {split!r} has no examples of kind(s) {', '.join(empty)} (counts: {dict(kinds)})"
            logger.warning("Training data: %s", message)
            card["warnings"].append(message)
    return card


def rows_digest(rows: Iterable[dict[str, Any]]) -> str:
    """Return a sha256 over the rows' identities, independent of their order."""
    keys = sorted(f"{row['id']}|{row.get('source', '')}|{row.get('label', '')}" for row in rows)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def save_dataset(rows_by_split: dict[str, list[dict[str, Any]]], folder: Path, card: dict[str, Any]) -> Path:
    """Save rows as a `datasets.DatasetDict` with `save_to_disk`, and the card as `card.json`."""
    from datasets import Dataset, DatasetDict

    folder = Path(folder)
    parts = {split: Dataset.from_list(rows) for split, rows in rows_by_split.items() if rows}
    DatasetDict(parts).save_to_disk(str(folder))
    (folder / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
