"""Test settings: offline hub access and one torch thread, set before any model library loads."""

from __future__ import annotations

import os

for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(variable, "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """Pin torch to one thread, because two threads slow down sharply when anything else runs."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
