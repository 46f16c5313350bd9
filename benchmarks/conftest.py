"""Benchmark-suite settings: offline hubs and a fixed thread count, so ratios compare like with like."""

from __future__ import annotations

import os

for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(variable, "1")
