"""A linear head that chooses a generation's opening from a local model's state after the prompt.

Constrained decoding (`HFChatModel.generate(openings=...)`) picks the most likely of the nine
`kind:` openings. A small model fine-tuned on a few dozen rows ranks those openings poorly: its
kind choice is about as good as always naming the most common kind. The model's last hidden state
after the prompt still contains what it read. A linear classifier over that state and the
openings' log-likelihoods learns the choice from hundreds of examples in seconds, where LoRA
fine-tuning on as many rows takes hours on a CPU.

The head is part of a trained proposer, like its LoRA adapter: `spec-agent train head` fits one per
proposer with the same settings and saves it beside the adapter as `opening-head.safetensors`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spec_agent.errors import ConfigError

logger = logging.getLogger(__name__)

HEAD_FILE = "opening-head.safetensors"
"""File name of a saved head inside an adapter folder."""


@dataclass(frozen=True, kw_only=True)
class OpeningHead:
    """Multinomial logistic regression over [hidden state, opening log-likelihoods].

    Features are standardised with the training mean and scale before the linear layer, so the
    L2 penalty treats every feature alike.
    """

    openings: tuple[str, ...]
    """The openings it chooses between, in the order of its outputs."""
    weight: Any
    """Tensor of shape (openings, features)."""
    bias: Any
    """Tensor of shape (openings,)."""
    mean: Any
    """Feature means of the training rows, shape (features,)."""
    scale: Any
    """Feature standard deviations of the training rows, shape (features,)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """What fitting measured: example counts, the chosen L2 and held-out accuracies."""

    @property
    def hidden_size(self) -> int:
        """Width of the hidden state the head reads."""
        return int(self.weight.shape[1]) - len(self.openings)

    def logits(self, hidden: Any, loglik: Any) -> Any:
        """Return the head's logits for hidden states (n, d) and opening log-likelihoods (n, k)."""
        import torch

        features = torch.cat([hidden.float(), loglik.float()], dim=-1)
        return ((features - self.mean) / self.scale) @ self.weight.T + self.bias

    def save(self, folder: str | Path) -> Path:
        """Write the head to `folder/opening-head.safetensors` and return the path."""
        from safetensors.torch import save_file

        path = Path(folder) / HEAD_FILE
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        metadata = {"openings": json.dumps(list(self.openings)), "metrics": json.dumps(self.metrics)}
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path), metadata=metadata)
        return path


def load_opening_head(path: str | Path) -> OpeningHead:
    """Load a head from its file or from the folder that contains `opening-head.safetensors`.

    Raises:
        ConfigError: No head file is there, or it is not one this package wrote.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        path = path / HEAD_FILE
    if not path.is_file():
        raise ConfigError(f"No opening head at {str(path)!r}; fit one with `spec-agent train head`.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in ("weight", "bias", "mean", "scale")}
        openings = tuple(json.loads(metadata["openings"]))
        metrics = json.loads(metadata.get("metrics", "{}"))
    except (KeyError, ValueError, OSError, SafetensorError) as error:
        raise ConfigError(f"{str(path)!r} is not an opening head written by spec-agent: {error}") from error
    return OpeningHead(openings=openings, metrics=metrics, **tensors)


def opening_head_metrics(path: str | Path) -> dict[str, Any]:
    """Return the validation metrics stored in a head file's header, without loading its tensors.

    Raises:
        ConfigError: The file is not an opening head this package wrote.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get("metrics", "{}"))
    except (ValueError, OSError, SafetensorError) as error:
        raise ConfigError(f"{str(path)!r} is not an opening head written by spec-agent: {error}") from error


def find_opening_head(adapter: str | Path | None) -> Path | None:
    """Return the head file saved beside an adapter, or None when the adapter has none."""
    if adapter is None:
        return None
    path = Path(adapter) / HEAD_FILE
    return path if path.is_file() else None


def fit_opening_head(
    hidden: Any,
    loglik: Any,
    gold: Any,
    openings: Sequence[str],
    *,
    l2: float,
    max_iter: int = 200,
) -> OpeningHead:
    """Fit a head by L-BFGS on the mean cross-entropy plus `l2` times the squared weights.

    Args:
        hidden: Hidden states after each prompt, shape (n, d).
        loglik: Log-likelihood of each opening after each prompt, shape (n, k).
        gold: Index of the right opening per row, shape (n,).
        openings: The k openings.
        l2: Weight of the L2 penalty on the (standardised) weights.
        max_iter: L-BFGS iterations.
    """
    import torch

    if hidden.shape[0] != loglik.shape[0] or hidden.shape[0] != gold.shape[0] or hidden.shape[0] == 0:
        raise ConfigError(f"fit_opening_head needs the same non-zero number of rows in hidden "
                          f"({hidden.shape[0]}), loglik ({loglik.shape[0]}) and gold ({gold.shape[0]}).")
    if loglik.shape[1] != len(openings):
        raise ConfigError(f"Invalid loglik: {loglik.shape[1]} columns for {len(openings)} openings; pass one "
                          "log-likelihood column per opening.")
    features = torch.cat([hidden.float(), loglik.float()], dim=-1)
    mean = features.mean(dim=0)
    # A constant feature would divide by zero; it carries nothing, so any scale will do.
    scale = features.std(dim=0).clamp_min(1e-6)
    standard = (features - mean) / scale
    weight = torch.zeros(len(openings), features.shape[1], requires_grad=True)
    bias = torch.zeros(len(openings), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(standard @ weight.T + bias, gold) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return OpeningHead(openings=tuple(openings), weight=weight.detach(), bias=bias.detach(), mean=mean,
                       scale=scale)
