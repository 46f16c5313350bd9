"""Models served behind an OpenAI-compatible endpoint (vLLM, SGLang, TGI, hosted APIs).

A model option of the form `openai:MODEL@BASE_URL` names such a model, for example
`openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1`. The key comes from `OPENAI_API_KEY`; servers
that need none get a placeholder. The key is handed to the client only, never logged or stored.
"""

from __future__ import annotations

import os
from typing import Any

from spec_agent.errors import ConfigError

PREFIX = "openai:"


def is_served(spec: str) -> bool:
    """Tell whether a model option names an OpenAI-compatible endpoint."""
    return spec.startswith(PREFIX)


def served_chat_model(spec: str, *, temperature: float = 0.0, timeout_s: float = 120.0) -> Any:
    """Build a `ChatOpenAI` client for an `openai:MODEL@BASE_URL` option.

    Raises:
        ConfigError: The option does not have the `openai:MODEL@BASE_URL` form.
    """
    body = spec[len(PREFIX):]
    model, separator, base_url = body.rpartition("@")
    if not is_served(spec) or not separator or not model or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"Invalid served model {spec!r}; use openai:MODEL@BASE_URL, "
            "e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1."
        )
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=temperature,
        timeout=timeout_s,
        max_retries=2,
    )
