"""Test settings: offline hub access, one torch thread, and where the real assets live.

Set `SPEC_AGENT_REQUIRE_ASSETS=1` (CI does) to turn a skipped `slow` test into a failure, so a
missing asset can never pass unnoticed.
"""

from __future__ import annotations

import os

import pytest

for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(variable, "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _point_at_fetched_bfcl() -> None:
    # The BFCL tests read SPEC_AGENT_BFCL_ROOT; default it to the fetched asset when there is one.
    if os.environ.get("SPEC_AGENT_BFCL_ROOT"):
        return
    from spec_agent import assets

    if assets.is_fetched("bfcl-eval"):
        os.environ["SPEC_AGENT_BFCL_ROOT"] = str(assets.asset_path("bfcl-eval"))


_point_at_fetched_bfcl()


def pytest_configure(config):
    """Pin torch to one thread, because two threads slow down sharply when anything else runs."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail skipped `slow` tests when the run requires every real asset."""
    outcome = yield
    report = outcome.get_result()
    required = os.environ.get("SPEC_AGENT_REQUIRE_ASSETS") == "1"
    if required and report.skipped and item.get_closest_marker("slow") is not None:
        report.outcome = "failed"
        report.longrepr = f"slow test skipped although SPEC_AGENT_REQUIRE_ASSETS=1: {report.longrepr}"
