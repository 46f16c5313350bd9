"""Build the BFCL next-action dataset: a deterministic split by scenario, JSONL files and a card.

`build_dataset` writes `train.jsonl`, `eval.jsonl`, `card.json` and `CARD.md` into one folder. The
split hashes each example's `scenario` with a salt, so every row of a scenario lands in the same
split on every run and machine. The four multi-turn categories share scenario keys, so a scenario
and its variants never cross train and eval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spec_agent.actions import ACTION_KINDS
from spec_agent.errors import DatasetError
from spec_agent.eval.bfcl import (
    DEFAULT_CATEGORIES,
    MAX_TOOL_OUTPUT_CHARS,
    REPAIR_EVERY,
    ProgressCallback,
    build_examples,
    kind_rules,
)
from spec_agent.eval.schema import Example, read_examples, write_examples

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "eval")
BFCL_LICENSE = "Apache-2.0"
DEFAULT_SALT = "spec-agent-v1"
DEFAULT_EVAL_FRACTION = 0.35

BLOCKED_RATIONALE = (
    "Turns that no offered tool can serve (the turn of multi_turn_miss_func whose function is "
    "held out, and the irrelevance categories) have the gold kind BLOCKED, not final_answer. "
    "final_answer reports work that the calls finished; BLOCKED says the request cannot be done "
    "with the tools on offer. Keeping them apart lets a verifier reject a proposal that claims "
    "success where nothing could be done, and BFCL scores these turns as correct only when the "
    "model makes no call."
)


@dataclass(frozen=True, kw_only=True)
class DatasetCard:
    """Description of a built dataset: provenance, split rule, support per kind and source."""

    bfcl_version: str
    """Version of the `bfcl-eval` wheel the data comes from."""
    license: str = BFCL_LICENSE
    """Licence of the BFCL data."""
    salt: str = DEFAULT_SALT
    """Salt of the scenario hash that decides the split."""
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    """Target share of scenarios in the eval split (the row share differs by scenario size)."""
    support: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Split -> action kind -> number of examples; every kind is listed, 0 when absent."""
    source_support: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Split -> source (e.g. `bfcl/multi_turn_base`) -> number of examples."""
    sha256: Mapping[str, str] = field(default_factory=dict)
    """Split -> sha256 of its JSONL file."""
    kind_rules: Sequence[tuple[str, str]] = ()
    """Function names -> action kind, as `kind_of_call` applies them."""
    skipped: Sequence[str] = ()
    """Ids of source entries left out because their gold fails its own checker."""
    max_tool_output_chars: int = MAX_TOOL_OUTPUT_CHARS
    """Maximum tool message length in characters; longer outputs are cut with a marker."""
    build_seconds: float = 0.0
    """Wall time of the build, in seconds."""

    def to_dict(self) -> dict[str, Any]:
        """Return the card as a JSON-compatible dict."""
        data = asdict(self)
        data["kind_rules"] = [list(rule) for rule in self.kind_rules]
        data["skipped"] = list(self.skipped)
        data["blocked_rationale"] = BLOCKED_RATIONALE
        return data

    def to_markdown(self) -> str:
        """Render the card as Markdown (the `CARD.md` file)."""
        return "\n".join(_card_lines(self)) + "\n"


def split_examples(
    examples: Sequence[Example],
    *,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    salt: str = DEFAULT_SALT,
) -> dict[str, list[Example]]:
    """Split examples into `train` and `eval` by a salted sha256 hash of their `scenario`.

    Args:
        examples: Examples to split; their order is kept within each split.
        eval_fraction: Share of scenarios that go to eval, in (0, 1).
        salt: Changes which scenarios land in eval without changing the share.

    Raises:
        DatasetError: `eval_fraction` is outside (0, 1).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DatasetError(f"Invalid eval_fraction {eval_fraction!r}; use a value between 0 and 1.")
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example in examples:
        name = "eval" if scenario_position(example.scenario, salt) < eval_fraction else "train"
        splits[name].append(example)
    return splits


def scenario_position(scenario: str, salt: str = DEFAULT_SALT) -> float:
    """Map a scenario key to a stable number in [0, 1) from the sha256 of `salt:scenario`."""
    digest = hashlib.sha256(f"{salt}:{scenario}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_dataset(
    bfcl_root: Path,
    out_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
) -> DatasetCard:
    """Convert BFCL, split it and write `train.jsonl`, `eval.jsonl`, `card.json` and `CARD.md`.

    Args:
        bfcl_root: Extracted `bfcl-eval` wheel, the folder that contains `bfcl_eval/`.
        out_dir: Folder to write into; created if missing, existing files are replaced.
        progress: Progress hook passed to `build_examples`.
        categories: BFCL categories to convert; all supported ones by default.

    Raises:
        DatasetError: The BFCL data is missing or malformed.
    """
    started = time.perf_counter()
    skipped: list[str] = []
    examples = build_examples(
        Path(bfcl_root), categories=categories, progress=progress, skipped=skipped
    )
    splits = split_examples(examples)
    out_dir = Path(out_dir)
    hashes = {name: _write_split(rows, out_dir / f"{name}.jsonl") for name, rows in splits.items()}
    card = DatasetCard(
        bfcl_version=bfcl_version(Path(bfcl_root)),
        support={name: _kind_support(rows) for name, rows in splits.items()},
        source_support={name: _source_support(rows) for name, rows in splits.items()},
        sha256=hashes,
        kind_rules=tuple(kind_rules()),
        skipped=tuple(skipped),
        build_seconds=round(time.perf_counter() - started, 2),
    )
    (out_dir / "card.json").write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    (out_dir / "CARD.md").write_text(card.to_markdown(), encoding="utf-8")
    logger.info("Wrote the BFCL dataset to %s: %s", out_dir, {k: len(v) for k, v in splits.items()})
    return card


def load_split(out_dir: Path, split: str) -> list[Example]:
    """Read one split written by `build_dataset`.

    Raises:
        DatasetError: `split` is not `train` or `eval`, or its file is missing or malformed.
    """
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    return read_examples(Path(out_dir) / f"{split}.jsonl")


def bfcl_version(bfcl_root: Path) -> str:
    """Read the `bfcl-eval` version from the wheel's `METADATA`; `unknown` when it is absent."""
    for metadata in sorted(Path(bfcl_root).glob("bfcl_eval-*.dist-info/METADATA")):
        for line in metadata.read_text(encoding="utf-8").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    logger.warning("No bfcl_eval-*.dist-info/METADATA under %s; version recorded as unknown", bfcl_root)
    return "unknown"


def _write_split(rows: Sequence[Example], path: Path) -> str:
    write_examples(rows, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kind_support(rows: Sequence[Example]) -> dict[str, int]:
    counts = Counter(row.action.kind for row in rows)
    return {kind: counts.get(kind, 0) for kind in ACTION_KINDS}


def _source_support(rows: Sequence[Example]) -> dict[str, int]:
    return dict(sorted(Counter(row.source for row in rows).items()))


def _card_lines(card: DatasetCard) -> list[str]:
    lines = [
        "# BFCL next-action dataset",
        "",
        f"Source: Berkeley Function Calling Leaderboard, `bfcl-eval=={card.bfcl_version}`, "
        f"licence {card.license}.",
        f"Split: sha256 of `{card.salt}:<scenario>`; scenarios below {card.eval_fraction} go to "
        "eval. The four multi-turn categories share the key `multi_turn:<index>`.",
        f"Build time: {card.build_seconds} s.",
        "",
    ]
    lines += _table("Support per kind", ["kind", *SPLITS], card.support, ACTION_KINDS)
    sources = sorted({source for counts in card.source_support.values() for source in counts})
    lines += _table("Support per source", ["source", *SPLITS], card.source_support, sources)
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {name}.jsonl | `{digest}` |" for name, digest in card.sha256.items()]
    lines += ["", "## Action kinds", "", "| function names | kind |", "|---|---|"]
    lines += [f"| {names} | {kind} |" for names, kind in card.kind_rules]
    lines += ["", *_kind_notes(card)]
    return lines


def _table(
    title: str, header: list[str], counts: Mapping[str, Mapping[str, int]], keys: Sequence[str]
) -> list[str]:
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for key in keys:
        cells = [str(counts.get(split, {}).get(key, 0)) for split in SPLITS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    totals = [str(sum(counts.get(split, {}).values())) for split in SPLITS]
    lines += ["| total | " + " | ".join(totals) + " |", ""]
    return lines


def _kind_notes(card: DatasetCard) -> list[str]:
    skipped = ", ".join(card.skipped) or "none"
    return [
        "- `verifier`: a file read (not `cd`) or look-up that directly follows, in the same turn, "
        "a write or other state-changing call of the same backend class.",
        "- `repair`: among the calls of an entry whose one-argument typo makes the real backend "
        f"return an error, one in every {REPAIR_EVERY}, starting with the first, also yields an "
        "example that holds the typo call and its error in the history, with the correct call as "
        "gold.",
        "- `final_answer`: the end of each multi-turn turn, and the other turns whose ground truth "
        "has no call (e.g. an invoice asked for after its booking was cancelled).",
        "- `ask_clarification`: the first multi_turn_miss_param turn whose ground truth has no call.",
        f"- `BLOCKED`: {BLOCKED_RATIONALE}",
        f"- Tool messages longer than {card.max_tool_output_chars} characters are cut with a marker.",
        f"- Skipped entries (gold fails its own checker): {skipped}.",
    ]
