"""Print the security counters after the run, so that a run's totals can be quoted."""

from __future__ import annotations

from tests.security.tally import SECURITY_KEYS, TALLY, summary_line


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Write the fuzzing and tool-execution counts when any security test ran."""
    if any(TALLY[key] for key in SECURITY_KEYS):
        terminalreporter.write_line(summary_line("security", SECURITY_KEYS))
