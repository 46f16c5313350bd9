"""Training recipes: JSON files validated into frozen dataclasses.

One recipe trains both proposers and the verifier. The cheap and the strong proposer share the one
`ProposerConfig`, so they always get the same LoRA settings, data, chat-template rendering and step
policy. Two recipes ship with the package: `cpu-default` (the embedded SmolLM2, Qwen2.5-Coder and
MiniLM models, sized for a laptop CPU) and `gpu-qwen3` (the Qwen3 models of the original study,
loaded from the hub or a local directory).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from spec_agent.errors import ConfigError

VerifierKind = Literal["classifier", "causal-lm"]
TuningMethod = Literal["lora", "full"]
ThresholdPolicy = Literal["youden", "precision"]


@dataclass(frozen=True, kw_only=True)
class ProposerConfig:
    """Supervised fine-tuning of the proposers; the cheap and the strong one use it alike."""

    cheap_model: str = "smollm2-135m-instruct"
    """Cheap proposer: embedded asset name, local directory or hub id."""
    strong_model: str = "qwen2.5-coder-0.5b-instruct"
    """Strong (fallback) model, trained with the same settings as the cheap one."""
    train_examples: int = 300
    """Training rows sampled from the train split; 0 uses every row that fits `max_length`."""
    validation_examples: int = 40
    """Rows from held-out train-split scenarios for the validation loss."""
    head_examples: int = 300
    """Train-split rows on which each proposer's opening head is fitted; 0 fits no head."""
    head_validation_examples: int = 100
    """Rows from held-out train-split scenarios on which the head's kind accuracy is measured."""
    max_accuracy_drop: float = 0.02
    """Kind accuracy that D may lose against the strong proposer on those rows; it sets the floor at
    which `train head` calibrates D's kind-probability thresholds."""
    max_length: int = 768
    """Maximum tokens of prompt plus target; older messages are dropped to fit, as at inference."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names that get LoRA adapters."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the training rows; `max_steps` overrides it when set."""
    max_steps: int | None = None
    """Optimizer steps to run; None trains for `epochs`."""
    batch_size: int = 1
    """Rows per device batch."""
    gradient_accumulation_steps: int = 4
    """Batches accumulated per optimizer step."""
    save_steps: int = 25
    """Optimizer steps between checkpoints."""
    logging_steps: int = 5
    """Optimizer steps between loss logs."""
    bf16: bool = False
    """Train in bfloat16; used only when a CUDA device is present."""


@dataclass(frozen=True, kw_only=True)
class VerifierConfig:
    """Training of the ACCEPT/REJECT verifier on balanced pairs from the train split."""

    model: str = "all-minilm-l6-v2"
    """Backbone: embedded asset name, local directory or hub id."""
    kind: VerifierKind = "classifier"
    """`classifier`: a two-label sequence classifier over (context, action) text pairs;
    `causal-lm`: a chat model fine-tuned to reply ACCEPT or REJECT."""
    method: TuningMethod = "full"
    """`full` fine-tunes every weight, `lora` trains adapters (always `lora` for `causal-lm`)."""
    max_length: int = 256
    """Maximum input tokens; the context is cut from the left so the latest messages stay."""
    positives: int = 3000
    """Gold-action pairs to build (as many negatives are added); 0 uses every train row."""
    hard_negative_generations: int = 300
    """Train rows on which the cheap proposer generates; its wrong proposals become negatives."""
    proposal_model: str | None = None
    """Model that generates hard negatives; None uses the recipe's cheap proposer."""
    calibration_fraction: float = 0.1
    """Share of train-split scenarios kept for choosing the threshold."""
    heldout_fraction: float = 0.15
    """Share of train-split scenarios kept for the held-out ROC AUC."""
    threshold_policy: ThresholdPolicy = "youden"
    """`youden` maximises TPR - FPR on the calibration pairs; `precision` takes the lowest
    threshold whose precision reaches `target_precision`."""
    target_precision: float = 0.9
    """Precision the `precision` policy aims for."""
    learning_rate: float = 5e-5
    """Peak learning rate."""
    epochs: float = 2.0
    """Passes over the training pairs; `max_steps` overrides it when set."""
    max_steps: int | None = None
    """Optimizer steps to run; None trains for `epochs`."""
    batch_size: int = 16
    """Pairs per device batch."""
    gradient_accumulation_steps: int = 1
    """Batches accumulated per optimizer step."""
    lora_r: int = 16
    """LoRA rank when `method` is `lora`."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    """Module names that get LoRA adapters."""
    save_steps: int = 50
    """Optimizer steps between checkpoints."""
    logging_steps: int = 10
    """Optimizer steps between loss logs."""
    bf16: bool = False
    """Train in bfloat16; used only when a CUDA device is present."""


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A complete training recipe: data, both proposers and the verifier."""

    name: str
    """Recipe name, recorded in every manifest."""
    seed: int = 0
    """Seed of sampling, splits, perturbations and training."""
    dataset: str | None = None
    """Folder with `train.jsonl` (eval-v3 rows); None uses the built-in BFCL dataset."""
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    """Proposer fine-tuning, shared by the cheap and the strong model."""
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    """Verifier training."""

    def __post_init__(self) -> None:
        _check_proposer(self.proposer)
        _check_verifier(self.verifier)

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as a JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def with_max_steps(self, max_steps: int | None) -> Recipe:
        """Return a copy whose proposer and verifier stop after `max_steps` optimizer steps."""
        if max_steps is None:
            return self
        return dataclasses.replace(
            self,
            proposer=dataclasses.replace(self.proposer, max_steps=max_steps),
            verifier=dataclasses.replace(self.verifier, max_steps=max_steps),
        )


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid recipe value {key}={value!r}: {rule}.")


def _check_common(config: ProposerConfig | VerifierConfig, prefix: str) -> None:
    for name in ("max_length", "lora_r", "lora_alpha", "batch_size", "gradient_accumulation_steps",
                 "save_steps", "logging_steps"):
        value = getattr(config, name)
        _require(value >= 1, f"{prefix}.{name}", value, "use an integer >= 1")
    _require(0.0 <= config.lora_dropout < 1.0, f"{prefix}.lora_dropout", config.lora_dropout,
             "use a value in [0, 1)")
    _require(config.learning_rate > 0, f"{prefix}.learning_rate", config.learning_rate, "use a value > 0")
    _require(config.epochs > 0, f"{prefix}.epochs", config.epochs, "use a value > 0")
    _require(config.max_steps is None or config.max_steps >= 1, f"{prefix}.max_steps",
             config.max_steps, "use null or an integer >= 1")
    _require(bool(config.target_modules), f"{prefix}.target_modules", config.target_modules,
             "list at least one module name")


def _check_proposer(config: ProposerConfig) -> None:
    _check_common(config, "proposer")
    _require(config.max_length >= 32, "proposer.max_length", config.max_length, "use at least 32 tokens")
    _require(config.train_examples >= 0, "proposer.train_examples", config.train_examples,
             "use 0 (all rows) or a positive count")
    _require(config.validation_examples >= 1, "proposer.validation_examples",
             config.validation_examples, "use a positive count")
    _require(config.head_examples == 0 or config.head_examples >= 10, "proposer.head_examples",
             config.head_examples, "use 0 (no opening head) or at least 10 rows for cross-validation")
    _require(config.head_validation_examples >= 1, "proposer.head_validation_examples",
             config.head_validation_examples, "use a positive count")
    _require(0.0 <= config.max_accuracy_drop <= 1.0, "proposer.max_accuracy_drop", config.max_accuracy_drop,
             "use a share of accuracy in [0, 1], e.g. 0.02")


def _check_verifier(config: VerifierConfig) -> None:
    _check_common(config, "verifier")
    _require(config.max_length >= 32, "verifier.max_length", config.max_length, "use at least 32 tokens")
    _require(config.positives >= 0, "verifier.positives", config.positives,
             "use 0 (all rows) or a positive count")
    _require(config.hard_negative_generations >= 0, "verifier.hard_negative_generations",
             config.hard_negative_generations, "use 0 (perturbations only) or a positive count")
    for name in ("calibration_fraction", "heldout_fraction"):
        value = getattr(config, name)
        _require(0.0 < value < 0.5, f"verifier.{name}", value, "use a share in (0, 0.5)")
    total = config.calibration_fraction + config.heldout_fraction
    _require(total < 0.8, "verifier.heldout_fraction", config.heldout_fraction,
             f"calibration and held-out shares add up to {total:.2f}; keep the sum below 0.8")
    _require(0.0 < config.target_precision < 1.0, "verifier.target_precision",
             config.target_precision, "use a value in (0, 1)")


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a recipe mapping and build a `Recipe`.

    Raises:
        ConfigError: A key is unknown or missing, or a value has the wrong type or is impossible;
            the message names the key.
    """
    return _build(Recipe, data, "")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe section {prefix or '<root>'!r} must be a JSON object, got {data!r:.80}.")
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"Unknown recipe key {key!r}; valid keys here: {', '.join(sorted(fields))}."
        )
    values = {name: _convert(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    missing = [name for name, item in fields.items()
               if name not in values and item.default is dataclasses.MISSING
               and item.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"Recipe key {prefix}{missing[0]!r} is missing; add it to the recipe.")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        return _convert(next(option for option in options if option is not type(None)), value, key)
    if origin is Literal:
        _require(value in get_args(hint), key, value, f"use one of {', '.join(map(str, get_args(hint)))}")
        return value
    if origin is tuple:
        _require(isinstance(value, list) and all(isinstance(item, str) for item in value), key, value,
                 "use a list of strings")
        return tuple(value)
    return _convert_scalar(hint, value, key)


def _convert_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        _require(isinstance(value, bool), key, value, "use true or false")
    elif hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, value, "use an integer")
    elif hint is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, "use a number")
        return float(value)
    elif hint is str:
        _require(isinstance(value, str), key, value, "use a string")
    return value


def builtin_recipes() -> list[str]:
    """Return the names of the recipes shipped with the package."""
    folder = resources.files("spec_agent.training") / "recipes"
    return sorted(item.name.removesuffix(".json") for item in folder.iterdir() if item.name.endswith(".json"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a recipe from a JSON file, or a built-in one by name (`cpu-default`, `gpu-qwen3`).

    Raises:
        ConfigError: The file does not exist, is not valid JSON or fails validation.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        builtin = resources.files("spec_agent.training") / "recipes" / f"{name_or_path}.json"
        if not builtin.is_file():
            raise ConfigError(
                f"Recipe {str(name_or_path)!r} is neither a JSON file nor a built-in recipe "
                f"({', '.join(builtin_recipes())})."
            )
        text, origin = builtin.read_text(encoding="utf-8"), f"built-in recipe {name_or_path}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{origin} is not valid JSON: {error}") from error
    try:
        return recipe_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from error
