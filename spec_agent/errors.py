"""Exception roots: one for misconfiguration and bad input, one for failures at run time."""

from __future__ import annotations


class SpecAgentError(Exception):
    """Base class of every error raised by spec-agent."""


class ConfigError(SpecAgentError, ValueError):
    """Invalid configuration, argument or input data; the message names the value and the fix."""


class AssetError(ConfigError):
    """A pinned model or dataset asset is missing or does not match its recorded hash."""


class DatasetError(ConfigError):
    """A dataset row is malformed; the message names the file, the row id and the field."""


class SpecAgentRuntimeError(SpecAgentError, RuntimeError):
    """A failure while running a model, a verifier or the trace store."""


class BudgetExceededError(SpecAgentRuntimeError):
    """The cost budget of a run or a thread is spent; the message names the limit and the thread."""
