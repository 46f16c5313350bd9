"""The trained proposer adapters and verifier that ship inside the package.

`spec-agent train all --recipe cpu-default` produces them, and the files in `spec_agent/trained/`
are copies of its output: a LoRA adapter per embedded proposer and the classifier verifier, each
with the `training-manifest.json` that records its data, recipe, steps and validation metrics.
`spec-agent bench` uses them unless `--untrained` is given, and `spec-agent train package` copies
a training run's output here.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spec_agent.errors import ConfigError

logger = logging.getLogger(__name__)

TRAINED_DIR = Path(__file__).with_name("trained")
"""Folder of the shipped adapters and verifier."""


def shipped_adapter(model: str) -> Path | None:
    """Return the shipped LoRA adapter folder of an embedded model name, or None when there is none."""
    folder = TRAINED_DIR / f"proposer-{model}"
    return folder if (folder / "adapter_config.json").is_file() else None


def shipped_verifier() -> Path | None:
    """Return the shipped trained verifier folder, or None when the package has none."""
    folder = TRAINED_DIR / "verifier"
    return folder if (folder / "verifier.json").is_file() else None


@dataclass(frozen=True, kw_only=True)
class BenchModels:
    """The adapters and verifier a benchmark run uses."""

    cheap_adapter: str | None
    """LoRA adapter folder of the cheap proposer; None runs the base model."""
    strong_adapter: str | None
    """LoRA adapter folder of the strong model; None runs the base model."""
    verifier: str
    """`confidence`, `kind` or a trained verifier folder."""


def bench_models(
    *,
    cheap_model: str,
    strong_model: str,
    verifier: str | None,
    cheap_adapter: str | None,
    strong_adapter: str | None,
    untrained: bool,
    opening_heads: bool = True,
) -> BenchModels:
    """Resolve what a benchmark run uses: explicit choices first, then the shipped defaults.

    With `untrained`, a model without an explicit adapter runs as is and the default verifier is
    the cheap model's confidence. Otherwise a model that has a shipped adapter gets it. The default
    verifier is then the cheap proposer's kind probability when its opening head is used and has a
    calibrated `kind_threshold`, else the shipped trained verifier, else the confidence verifier.
    """
    if untrained:
        return BenchModels(cheap_adapter=cheap_adapter, strong_adapter=strong_adapter,
                           verifier=verifier or "confidence")
    cheap = cheap_adapter or _as_text(shipped_adapter(cheap_model))
    shipped = shipped_verifier()
    if verifier is None and opening_heads and kind_threshold(cheap) is not None:
        verifier = "kind"
    if verifier is None and shipped is None:
        logger.warning("No trained verifier ships with this package; D and E use the confidence verifier.")
    return BenchModels(
        cheap_adapter=cheap,
        strong_adapter=strong_adapter or _as_text(shipped_adapter(strong_model)),
        verifier=verifier or _as_text(shipped) or "confidence",
    )


def kind_threshold(adapter: str | Path | None) -> float | None:
    """Return the kind-probability threshold calibrated with the adapter's opening head, if any.

    `spec-agent train head` chooses it on held-out train-split scenarios (Youden's J of the head's
    probability of its chosen kind against that kind being right).
    """
    value = (_head_metrics(adapter) or {}).get("kind_threshold")
    return None if value is None else float(value)


def kind_thresholds(adapter: str | Path | None, strong_model: str) -> dict[str, Any] | None:
    """Return D's kind-probability thresholds stored with the adapter's opening head, if any.

    The result is `{"verifier": t, "by_kind": {kind: t}}`. When `spec-agent train head` calibrated
    thresholds against `strong_model` (the `escalation` entry of the head's metrics), it returns
    those. Otherwise it returns the head's own `kind_threshold` with no per-kind ones, because
    per-kind thresholds depend on what the strong model gets right.
    """
    # NOTE: only the strong model's name is compared; a different adapter on it keeps the thresholds.
    metrics = _head_metrics(adapter)
    if metrics is None:
        return None
    escalation = metrics.get("escalation") or {}
    if escalation.get("strong_model") == strong_model:
        return {"verifier": float(escalation["threshold"]),
                "by_kind": {kind: float(value) for kind, value in escalation.get("by_kind", {}).items()}}
    if metrics.get("kind_threshold") is None:
        return None
    return {"verifier": float(metrics["kind_threshold"]), "by_kind": {}}


def _head_metrics(adapter: str | Path | None) -> dict[str, Any] | None:
    """Return the metrics of the opening head saved beside the adapter, or None without a head."""
    from spec_agent.opening_head import find_opening_head, opening_head_metrics

    path = find_opening_head(adapter)
    return None if path is None else opening_head_metrics(path)


def _as_text(path: Path | None) -> str | None:
    return None if path is None else str(path)


SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "training-manifest.json", "verifier.json",
                 "opening-head.safetensors")
"""Files copied into the package per artifact; tokenizers and checkpoints stay behind."""


def package_trained(output: Path, *, target: Path | None = None) -> list[Path]:
    """Copy the LoRA adapters and the LoRA verifier of a `spec-agent train all` run into the package.

    Each proposer adapter lands in `proposer-<base model name>/` and the verifier in `verifier/`,
    replacing what was there. Returns the folders written.

    Raises:
        ConfigError: The run has no finished adapter, or its verifier is a full fine-tune, whose
            weights are too large to ship.
    """
    target = target or TRAINED_DIR
    sources = {role: Path(output) / role / "adapter" for role in ("proposer-cheap", "proposer-strong", "verifier")}
    missing = [str(folder) for folder in sources.values() if not (folder / "adapter_config.json").is_file()]
    if missing:
        raise ConfigError(
            f"No finished LoRA adapter in {', '.join(missing)}; run `spec-agent train all --output "
            f"{output}` to the end (a verifier needs \"method\": \"lora\" in its recipe)."
        )
    written = []
    for role, source in sources.items():
        if role == "verifier":
            name = "verifier"
        else:
            manifest = json.loads((source / "training-manifest.json").read_text(encoding="utf-8"))
            name = f"proposer-{manifest['base_model']['name']}"
        folder = target / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file_name in SHIPPED_FILES:
            if (source / file_name).is_file():
                shutil.copy2(source / file_name, folder / file_name)
        logger.info("Packaged %s as %s", source, folder)
        written.append(folder)
    return written
