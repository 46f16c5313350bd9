"""Recipe-driven training runs: data, training, manifest, for the proposers and the verifier.

Layout of an output folder:

    proposals/<model>.jsonl      cached greedy proposals of the cheap proposer (hard negatives)
    proposer-cheap/              data/ (SFT rows), checkpoints/, adapter/ (+ training-manifest.json),
                                 head-features.jsonl and adapter/opening-head.safetensors
    proposer-strong/             the same for the strong model, trained with the same settings
    verifier/                    data/ (pairs), checkpoints/, adapter/ or the causal-LM folder

`spec-agent train all` trains the proposers, then their opening heads, then the verifier, whose
hard negatives are the trained cheap proposer's own mistakes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spec_agent.errors import ConfigError
from spec_agent.eval.schema import Example
from spec_agent.training.datasets import (
    PairSplits,
    assign_split,
    build_sft_rows,
    build_verifier_pairs,
    cached_proposals,
    dataset_card,
    file_sha256,
    generate_proposals,
    hard_negatives,
    load_training_examples,
    proposal_sample,
    save_dataset,
)
from spec_agent.training.manifest import MANIFEST_NAME, base_model_record, read_manifest, write_manifest
from spec_agent.training.recipes import Recipe
from spec_agent.training.sft import TrainingResult, load_tokenizer, train_sft

logger = logging.getLogger(__name__)

ProposerRole = str
PROPOSER_ROLES: tuple[str, ...] = ("cheap", "strong")
Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """One trained artifact: where it is and the manifest written beside it."""

    name: str
    """`proposer-cheap`, `proposer-strong` or `verifier`."""
    folder: Path | None
    """Folder to load (adapter or verifier folder); None when interrupted."""
    checkpoint_dir: Path
    """Folder of resumable checkpoints."""
    interrupted: bool
    """True when Ctrl-C stopped the run."""
    manifest: dict[str, Any]
    """The manifest record (also written as `training-manifest.json` unless interrupted)."""


def dataset_folder(recipe: Recipe) -> Path:
    """Return the dataset folder of a recipe: its `dataset`, or the built-in BFCL dataset."""
    if recipe.dataset:
        return Path(recipe.dataset).expanduser()
    from spec_agent._commands import default_dataset_dir

    return default_dataset_dir()


def heldout_examples(examples: Sequence[Example], recipe: Recipe) -> list[Example]:
    """Return the train-split examples of the scenarios that the recipe keeps out of training.

    No proposer, opening head or verifier trained with the recipe was fitted on them, so a
    calibration run on them is not flattered by training rows.
    """
    return [example for example in examples if _split_of(example, recipe) == "heldout"]


def _split_of(example: Example, recipe: Recipe) -> str:
    verifier = recipe.verifier
    return assign_split(example.scenario, calibration=verifier.calibration_fraction,
                        heldout=verifier.heldout_fraction, seed=recipe.seed)


def train_proposer(recipe: Recipe, output: Path, role: ProposerRole) -> RunReport:
    """Fine-tune the cheap or the strong proposer with the recipe's shared proposer settings."""
    settings = recipe.proposer
    model_name = _proposer_model(recipe, role)
    folder = Path(output) / f"proposer-{role}"
    examples, _ = load_training_examples(dataset_folder(recipe))
    tokenizer = load_tokenizer(model_name)
    train = [example for example in examples if _split_of(example, recipe) != "heldout"]
    validation = heldout_examples(examples, recipe)
    rows = {
        "train": build_sft_rows(train, tokenizer, count=settings.train_examples,
                                max_length=settings.max_length, seed=recipe.seed)[0],
        "validation": build_sft_rows(validation, tokenizer, count=settings.validation_examples,
                                     max_length=settings.max_length, seed=recipe.seed)[0],
    }
    source = file_sha256(dataset_folder(recipe) / "train.jsonl")
    card = dataset_card(rows, source_sha256=source)
    save_dataset(rows, folder / "data", card)
    result = train_sft(model_name, rows, settings, folder, seed=recipe.seed)
    return _report(f"proposer-{role}", result, recipe, model_name, card, result.metrics)


def _proposer_model(recipe: Recipe, role: ProposerRole) -> str:
    return recipe.proposer.cheap_model if role == "cheap" else recipe.proposer.strong_model


def proposer_adapter(output: Path, role: ProposerRole) -> Path:
    """Return the adapter folder of a proposer trained into `output`."""
    return Path(output) / f"proposer-{role}" / "adapter"


def train_head(recipe: Recipe, output: Path, role: ProposerRole, *, progress: Progress | None = None) -> RunReport:
    """Fit the opening head of a trained proposer and save it beside its adapter.

    The head's result also goes into the adapter's manifest under `opening_head`.

    Raises:
        ConfigError: The proposer has no finished adapter in `output`, or the recipe fits no head.
    """
    from spec_agent.hf import HFChatModel
    from spec_agent.training.head import collect_features, fit_head

    settings = recipe.proposer
    if settings.head_examples == 0:
        raise ConfigError(f"Recipe {recipe.name!r} sets proposer.head_examples to 0, so it fits no opening "
                          "head; set a count of at least 10 to fit one.")
    model_name = _proposer_model(recipe, role)
    adapter = proposer_adapter(output, role)
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"No trained {role} proposer in {str(adapter)!r}; run `spec-agent train proposer "
                          f"--role {role} --output {output}` first.")
    examples, _ = load_training_examples(dataset_folder(recipe))
    train, validation = _head_samples(recipe, examples)
    rows = {name: [{"id": item.id, "kind": item.action.kind, "source": item.source, "scenario": item.scenario}
                   for item in split] for name, split in (("train", train), ("validation", validation))}
    card = dataset_card(rows, source_sha256=file_sha256(dataset_folder(recipe) / "train.jsonl"))
    model = HFChatModel(model_name, role=role, adapter=adapter)
    cache = adapter.parent / "head-features.jsonl"
    started = time.perf_counter()
    total = len(train) + len(validation)

    def advance(done: int, _: int, offset: int = 0) -> None:
        if progress is not None:
            progress(offset + done, total)

    try:
        train_features = collect_features(model, train, cache, progress=advance)
        validation_features = collect_features(model, validation, cache,
                                               progress=lambda done, _: advance(done, _, len(train)))
    except KeyboardInterrupt:
        logger.warning("Interrupted; the features computed so far are kept in %s", cache)
        train_features = validation_features = None
    seconds = time.perf_counter() - started
    computed = None if train_features is None else train_features.computed + validation_features.computed
    manifest = {
        "artifact": f"opening-head-{role}",
        "base_model": base_model_record(model_name),
        "data": _data_record(card),
        "steps": None,
        "wall_seconds": seconds,
        # Rows read from the cache cost nothing, so the rate counts the computed ones only.
        "computed_rows": computed,
        "examples_per_second": computed / seconds if computed else None,
        "validation": {},
    }
    if computed is None:
        return RunReport(name=manifest["artifact"], folder=None, checkpoint_dir=cache, interrupted=True,
                         manifest=manifest)
    head = fit_head(train_features, validation_features, seed=recipe.seed)
    head.save(adapter)
    manifest["validation"] = head.metrics
    _record_head(adapter, manifest)
    return RunReport(name=manifest["artifact"], folder=adapter, checkpoint_dir=cache, interrupted=False,
                     manifest=manifest)


def _head_samples(recipe: Recipe, examples: Sequence[Example]) -> tuple[list[Example], list[Example]]:
    """Return the opening heads' training and held-out validation examples, the same for both proposers."""
    from spec_agent.training.head import head_sample

    settings = recipe.proposer
    train = head_sample([example for example in examples if _split_of(example, recipe) == "train"],
                        settings.head_examples, seed=recipe.seed, salt="train")
    validation = head_sample(heldout_examples(examples, recipe), settings.head_validation_examples,
                             seed=recipe.seed, salt="validation")
    return train, validation


def calibrate_kind_thresholds(recipe: Recipe, output: Path) -> dict[str, Any]:
    """Choose D's kind-probability thresholds on both opening heads' held-out rows and store them.

    The thresholds are the cheapest whose replay on those rows keeps D's kind accuracy within the
    recipe's `proposer.max_accuracy_drop` of the strong head's (`training.head.calibrate_escalation`).
    They go into the cheap head's metrics, and its adapter's manifest, under `escalation`, with the
    strong model they were chosen against. Both heads' features are read from their caches.

    Raises:
        ConfigError: A proposer has no opening head in `output`; run `spec-agent train head` first.
    """
    from spec_agent.hf import HFChatModel
    from spec_agent.opening_head import find_opening_head, load_opening_head
    from spec_agent.training.head import calibrate_escalation, collect_features, escalation_frame

    examples, _ = load_training_examples(dataset_folder(recipe))
    _, validation = _head_samples(recipe, examples)
    heads, features = {}, {}
    for role in ("cheap", "strong"):
        adapter = proposer_adapter(output, role)
        path = find_opening_head(adapter)
        if path is None:
            raise ConfigError(f"No opening head for the {role} proposer in {str(adapter)!r}; run `spec-agent train "
                              f"head --role both --output {output}` first.")
        heads[role] = load_opening_head(path)
        # The model loads only for rows missing from the cache, which `train head` has filled.
        model = HFChatModel(_proposer_model(recipe, role), role=role, adapter=adapter)
        features[role] = collect_features(model, validation, adapter.parent / "head-features.jsonl")
    frame = escalation_frame(heads["cheap"], features["cheap"], heads["strong"], features["strong"])
    drop = recipe.proposer.max_accuracy_drop
    result = calibrate_escalation(frame, max_accuracy_drop=drop)
    summary = result.combined or next(choice for choice in result.choices if choice.score == "verifier")
    escalation = {
        "strong_model": recipe.proposer.strong_model,
        "rows": frame.n,
        "max_accuracy_drop": drop,
        "strong_accuracy": round(float(frame.strong_kind_correct.mean()), 4),
        "cheap_accuracy": round(float(frame.proposal_kind_correct.mean()), 4),
        "threshold": result.thresholds["verifier"],
        "by_kind": result.thresholds["by_kind"],
        "accuracy": round(summary.accuracy, 4),
        "cost": round(summary.cost, 4),
        "escalation_rate": round(summary.escalation_rate, 4),
        "met": summary.met,
    }
    cheap = proposer_adapter(output, "cheap")
    head = heads["cheap"]
    dataclasses.replace(head, metrics={**head.metrics, "escalation": escalation}).save(cheap)
    record = read_manifest(cheap)
    record.setdefault("opening_head", {}).setdefault("validation", {})["escalation"] = escalation
    _write_manifest(cheap, record)
    logger.info("D's kind thresholds on %d held-out rows: %s, per kind %s; kind accuracy %.3f (strong %.3f) "
                "at cost %.3f", frame.n, escalation["threshold"], escalation["by_kind"], escalation["accuracy"],
                escalation["strong_accuracy"], escalation["cost"])
    return escalation


def _record_head(adapter: Path, manifest: dict[str, Any]) -> None:
    record = read_manifest(adapter)
    keys = ("data", "wall_seconds", "computed_rows", "examples_per_second", "validation")
    record["opening_head"] = {key: manifest[key] for key in keys}
    _write_manifest(adapter, record)


def _write_manifest(adapter: Path, record: dict[str, Any]) -> None:
    (adapter / MANIFEST_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train_verifier_run(recipe: Recipe, output: Path, *, progress: Progress | None = None) -> RunReport:
    """Build verifier pairs (generating hard negatives), train, calibrate and evaluate."""
    from spec_agent.training.verifier import train_verifier

    settings = recipe.verifier
    folder = Path(output) / "verifier"
    examples, eval_scenarios = load_training_examples(dataset_folder(recipe))
    negatives = _hard_negatives(recipe, examples, Path(output), progress)
    splits = PairSplits(positives=settings.positives, calibration=settings.calibration_fraction,
                        heldout=settings.heldout_fraction, seed=recipe.seed)
    rows = build_verifier_pairs(examples, splits, negatives=negatives, eval_scenarios=eval_scenarios)
    by_split = {name: [row for row in rows if row["split"] == name] for name in ("train", "calibration", "heldout")}
    card = dataset_card(by_split, source_sha256=file_sha256(dataset_folder(recipe) / "train.jsonl"))
    card["hard_negative_generations"] = settings.hard_negative_generations
    card["hard_negatives"] = len(negatives)
    save_dataset(by_split, folder / "data", card)
    result = train_verifier(settings, by_split, {example.id: example for example in examples}, folder,
                            seed=recipe.seed)
    metrics = {**result.training.metrics, **result.metrics, "threshold": result.threshold}
    report = _report("verifier", result.training, recipe, settings.model, card, metrics,
                     folder_override=result.folder)
    return report


def _hard_negatives(recipe: Recipe, examples: Sequence[Example], output: Path, progress: Progress | None) -> dict:
    count = recipe.verifier.hard_negative_generations
    if count == 0:
        return {}
    from spec_agent.hf import HFChatModel
    from spec_agent.opening_head import find_opening_head
    from spec_agent.proposers import LocalProposer

    model_name = recipe.verifier.proposal_model or recipe.proposer.cheap_model
    sample = proposal_sample(examples, count, seed=recipe.seed)
    adapter = proposer_adapter(output, "cheap")
    if recipe.verifier.proposal_model is None and (adapter / "adapter_config.json").is_file():
        # The verifier judges the trained cheap proposer, so its mistakes are the negatives to learn.
        head = find_opening_head(adapter)
        cheap = HFChatModel(model_name, role="cheap", adapter=adapter, opening_head=head)
        weights = [adapter / "adapter_model.safetensors", *([head] if head else [])]
        # Proposals are cached per set of weights, so a retrained adapter or head starts afresh.
        model_name = f"{model_name}-trained-{_digest(weights)}"
    else:
        cheap = HFChatModel(model_name, role="cheap")
    # The bench decodes tool payloads within the call grammar, so the negatives come from that
    # decoding too. Its own cache keeps proposals of free decoding from passing for them.
    cache = output / "proposals" / f"{_slug(model_name)}-call-grammar.jsonl"
    proposer = LocalProposer(cheap)
    proposals = generate_proposals(sample, proposer, cache, progress=progress)
    # Proposals cached by earlier runs for other train examples are as good as new ones.
    proposals = {**cached_proposals(examples, cache, proposer.name), **proposals}
    wrong = hard_negatives(examples, proposals)
    logger.info("Hard negatives: %s wrong parsed proposals out of %s generations (the recipe's sample is %s)",
                len(wrong), len(proposals), len(sample))
    return wrong


def _digest(paths: Sequence[Path]) -> str:
    return "-".join(file_sha256(path)[:8] for path in paths)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _data_record(card: dict[str, Any]) -> dict[str, Any]:
    """Return the manifest's summary of a dataset card: the source hash and each split's rows and hash."""
    return {"source_sha256": card["source_sha256"],
            "splits": {split: {"rows": info["rows"], "sha256": info["sha256"]}
                       for split, info in card["splits"].items()}}


def _report(
    name: str, result: TrainingResult, recipe: Recipe, model_name: str, card: dict[str, Any],
    metrics: dict[str, Any], *, folder_override: Path | None = None,
) -> RunReport:
    outcome = result.outcome
    folder = folder_override or result.adapter_dir
    manifest = {
        "artifact": name,
        "base_model": base_model_record(model_name),
        "data": _data_record(card),
        "recipe": recipe.to_dict(),
        "steps": outcome.global_step,
        "resumed_from": outcome.resumed_from,
        "wall_seconds": outcome.wall_seconds,
        "examples_per_second": outcome.examples_per_second,
        "validation": metrics,
    }
    if folder is not None and not outcome.interrupted:
        write_manifest(folder, manifest)
    return RunReport(name=name, folder=folder, checkpoint_dir=result.checkpoint_dir,
                     interrupted=outcome.interrupted, manifest=manifest)
