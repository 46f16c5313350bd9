"""Per-example reuse of identical model calls across configurations of one benchmark run.

Configurations A-E ask the same models the same questions (B, C, D and E share the cheap model's
greedy proposal; A and every fallback share the strong model's action). Each distinct call runs
once; repeats return the stored result with `cached=True` on their usage, and are still charged by
the cost model as the configuration would have paid for them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from spec_agent.cost import ModelCall


class CachedModel:
    """Wrap a model so that identical `generate` and `label_probability` calls run once.

    Args:
        model: The wrapped model (`HFChatModel` or anything with the same methods).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name
        self._results: dict[str, Any] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Forget stored results, e.g. after each example, so memory stays bounded."""
        self._results.clear()

    def generate(self, chat: list[dict[str, str]], **options: Any) -> tuple[list[Any], list[ModelCall]]:
        """Return the wrapped model's generations, computing them on the first request only."""
        return self._cached("generate", chat, options)

    def label_probability(self, chat: list[dict[str, str]], **options: Any) -> tuple[float, ModelCall]:
        """Return the wrapped model's label probability, computing it on the first request only."""
        return self._cached("label_probability", chat, options)

    def _cached(self, method: str, chat: list[dict[str, str]], options: dict[str, Any]) -> Any:
        key = json.dumps([method, chat, options], sort_keys=True)
        if key in self._results:
            self.hits += 1
            return _mark_cached(self._results[key])
        self.misses += 1
        result = getattr(self.model, method)(chat, **options)
        self._results[key] = result
        return result


def _mark_cached(result: tuple[Any, Any]) -> tuple[Any, Any]:
    value, usage = result
    if isinstance(usage, list):
        return value, [dataclasses.replace(call, cached=True) for call in usage]
    return value, dataclasses.replace(usage, cached=True)
