"""Masking of secrets in text, chat messages and stored records.

Agent contexts carry whatever users and tools put in them, API keys included, and a model may copy
a key from its context into an action. Anything that writes such text outside the process (the
trace store, logs, reports) passes it through a `Redactor` first. `redact_secrets` is the default:
it masks the common key formats by pattern, so it catches known shapes only and is no substitute
for keeping keys out of prompts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

REDACTED = "[REDACTED]"
"""Text that replaces a masked secret."""

STRUCTURAL_KEYS = frozenset({"role", "type", "id", "tool_call_id", "name"})
"""Message keys whose values name roles, tools and call ids, so `redact_messages` keeps them."""

# Whole-token formats: the full match is the secret.
_TOKEN_PATTERNS = (
    # OpenAI and Anthropic keys: sk-..., sk-proj-..., sk-ant-...
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    # Hugging Face, GitHub and Slack tokens.
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
)
# An HTTP authorization scheme followed by its credential. Only the credential is masked.
_BEARER = re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE)
# `name=value`, `name: value` and `"name": "value"` with a secret-like name. Only the value is masked.
_ASSIGNMENT = re.compile(
    r"""(?ix)
    (\b[\w\-]{0,40}?(?:api[_\-]?key|apikey|secret|password|passwd|access[_\-]?key|auth[_\-]?token
              |access[_\-]?token|private[_\-]?key)[\w\-]{0,40})
    (["']?\s*[:=]\s*["']?)
    ([^\s"',;&}]{4,})
    """
)


class Redactor(Protocol):
    """Function that masks the secrets it recognises in one string."""

    def __call__(self, text: str) -> str:
        """Return `text` with every secret it recognises replaced."""
        ...


def redact_secrets(text: str) -> str:
    """Mask API-key-like strings in `text` with `REDACTED`.

    Covered: `sk-` keys (OpenAI, Anthropic), `Bearer`/`Basic`/`Token` credentials, AWS access key
    ids, Hugging Face, GitHub and Slack tokens, and the value of any `name=value` or `"name": "value"`
    pair whose name contains api_key, secret, password, access_key, access_token, auth_token or
    private_key.

    >>> redact_secrets("curl -H 'Authorization: Bearer abc.def.ghi123' -d api_key=12345678")
    "curl -H 'Authorization: Bearer [REDACTED]' -d api_key=[REDACTED]"
    """
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = _BEARER.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    return _ASSIGNMENT.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)


def redact_value(value: Any, redactor: Redactor = redact_secrets) -> Any:
    """Return a copy of a JSON-like value with `redactor` applied to every string in it.

    Dict keys are kept as they are; tuples come back as lists, as JSON would store them.
    """
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item, redactor) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [redact_value(item, redactor) for item in value]
    return value


def redact_messages(
    messages: Sequence[Mapping[str, Any]], redactor: Redactor = redact_secrets
) -> list[dict[str, Any]]:
    """Return copies of OpenAI-layout messages with secrets masked in their content.

    Every string is redacted (`content`, text parts, tool-call arguments, JSON-encoded arguments
    included) except the values of `STRUCTURAL_KEYS`, which name roles, tools and call ids. The
    input messages are not changed.

    Args:
        messages: Chat messages as dicts, e.g. `{"role": "user", "content": "..."}`.
        redactor: Masks secrets in one string; defaults to `redact_secrets`.
    """
    return [_redact_message(message, redactor) for message in messages]


def _redact_message(message: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    redacted: dict[str, Any] = {}
    for key, value in message.items():
        if key in STRUCTURAL_KEYS and isinstance(value, str):
            redacted[key] = value
        elif isinstance(value, Mapping):
            redacted[key] = _redact_message(value, redactor)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
            redacted[key] = [_redact_item(item, redactor) for item in value]
        else:
            redacted[key] = redact_value(value, redactor)
    return redacted


def _redact_item(item: Any, redactor: Redactor) -> Any:
    # Items of `tool_calls` and of content-part lists are dicts with their own structural keys.
    if isinstance(item, Mapping):
        return _redact_message(item, redactor)
    return redact_value(item, redactor)
