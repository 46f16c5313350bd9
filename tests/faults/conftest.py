"""Print the fault-injection counters after the run, so that a run's totals can be quoted."""

from __future__ import annotations

from tests.security.tally import FAULT_KEYS, TALLY, summary_line


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Write the injected, survived, lost and duplicated counts when any fault test ran."""
    if TALLY["faults injected"]:
        terminalreporter.write_line(summary_line("faults", FAULT_KEYS))
