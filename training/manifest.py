"""Loading of base models with actionable errors, and the manifest written beside each adapter.

The manifest records what a trained artifact was made from (base model and its sha256, data hashes,
the recipe), how long it trained and how well it validated, so a result can be traced to its inputs.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from spec_agent.errors import ConfigError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "training-manifest.json"
_CONFIG_FIELDS = ("num_labels",)


def resolve_base(name: str) -> str:
    """Resolve a model argument like `resolve_model`, turning every failure into a ConfigError."""
    from spec_agent.assets import resolve_model

    try:
        return resolve_model(name)
    except ConfigError as error:
        raise ConfigError(f"Base model {name!r} is not available: {error}") from error


def load_pretrained(loader: Any, name: str, **options: Any) -> Any:
    """Call `loader.from_pretrained` on a resolved model argument.

    Raises:
        ConfigError: The model does not load; the message names the id or path tried and how to
            fetch an embedded model.
    """
    path = resolve_base(name)
    try:
        if not _is_tokenizer_loader(loader):
            # Config fields such as `num_labels` cannot go to `from_pretrained` next to `config`.
            fields = {key: options.pop(key) for key in _CONFIG_FIELDS if key in options}
            options.setdefault("config", _training_config(path, **fields))
        return loader.from_pretrained(path, **options)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"Could not load base model {name!r} (tried {path!r}): {error}. For an embedded model run "
            f"`spec-agent assets fetch {name}`; otherwise pass a local model directory or a hub id "
            "that is reachable (or already in the Hugging Face cache)."
        ) from error


def _is_tokenizer_loader(loader: Any) -> bool:
    return "Tokenizer" in getattr(loader, "__name__", "")


def _training_config(path: str, **fields: Any) -> Any:
    """Load a model config without the GGUF quantization marker of converted embedded models.

    The embedded models are dequantised to fp32 safetensors, but their `config.json` still names
    the GGUF source in `quantization_config`, and transformers 5.25 then refuses to fine-tune them.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **fields)
    marker = getattr(config, "quantization_config", None)
    method = marker.get("quant_method") if isinstance(marker, dict) else getattr(marker, "quant_method", None)
    if str(method).lower().endswith("gguf"):
        del config.quantization_config
    return config


def base_model_record(name: str) -> dict[str, Any]:
    """Describe a base model: its argument, resolved path and weight sha256 when known.

    Embedded assets take the hashes from their asset manifest; other local directories hash their
    `model.safetensors`; hub ids record no hash.
    """
    path = resolve_base(name)
    record: dict[str, Any] = {"name": name, "path": path, "sha256": None, "source_sha256": None}
    asset_manifest = Path(path) / "manifest.json"
    if asset_manifest.is_file():
        data = json.loads(asset_manifest.read_text(encoding="utf-8"))
        record["sha256"] = (data.get("files") or {}).get("model.safetensors")
        record["source_sha256"] = data.get("file_sha256")
    elif (Path(path) / "model.safetensors").is_file():
        from spec_agent.training.datasets import file_sha256

        record["sha256"] = file_sha256(Path(path) / "model.safetensors")
    return record


def git_commit() -> str | None:
    """Return the commit of the checkout that contains this package, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Return the training manifest in `folder`, or an empty dict when the folder has none."""
    path = Path(folder) / MANIFEST_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_manifest(folder: Path, record: dict[str, Any]) -> Path:
    """Write `record` plus the git commit as sorted JSON into `folder/training-manifest.json`."""
    path = Path(folder) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**record, "git_commit": git_commit()}
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    logger.info("Wrote %s", path)
    return path
