"""The built wheel installs the subsystem folders as subpackages and no top-level `eval` or `db`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("spec_agent-*.whl"))


def test_wheel_maps_subsystems_under_spec_agent(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names if not name.startswith("spec_agent-")}
    assert top_levels == {"spec_agent"}
    for module in ("graphs/speculation.py", "eval/bench.py", "db/store.py", "training/__init__.py"):
        assert f"spec_agent/{module}" in names


def test_wheel_ships_trained_defaults(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("proposer-smollm2-135m-instruct", "proposer-qwen2.5-coder-0.5b-instruct", "verifier"):
        assert f"spec_agent/trained/{folder}/adapter_model.safetensors" in names
        assert f"spec_agent/trained/{folder}/training-manifest.json" in names
    assert "spec_agent/trained/verifier/verifier.json" in names


def test_wheel_imports_outside_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import spec_agent.graphs.speculation as g, spec_agent.eval.bench as b, spec_agent.db.store as s;"
        "print(g.__file__); print(b.__file__); print(s.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    files = result.stdout.split()
    assert len(files) == 3
    assert all(file.startswith(str(target)) for file in files)
