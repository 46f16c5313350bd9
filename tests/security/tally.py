"""Counters shared by the fault and security tests, printed in pytest's terminal summary.

Keys: `outputs fuzzed`, `crashes`, `invalid proposals`, `faults injected`, `faults survived`,
`decisions lost`, `decisions duplicated`, `unaccepted tool executions`.
"""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()
"""Counts by key; a test adds to it as it goes, so a failing test still leaves its counts."""

SECURITY_KEYS = ("outputs fuzzed", "invalid proposals", "crashes", "accepted tool executions",
                 "unaccepted tool executions")
FAULT_KEYS = ("faults injected", "faults survived", "decisions lost", "decisions duplicated")


def summary_line(title: str, keys: tuple[str, ...]) -> str:
    """Return one line such as `security: outputs fuzzed=1200, crashes=0`."""
    return f"{title}: " + ", ".join(f"{key}={TALLY[key]}" for key in keys)
