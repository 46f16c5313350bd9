"""What the CLI commands do, kept apart from argument parsing so that tests can call it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from spec_agent.errors import ConfigError
from spec_agent.serving import is_served, served_chat_model

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "langgraph", "langchain-core", "sqlalchemy", "peft", "trl")


SPLITS: tuple[str, ...] = ("eval", "heldout", "train")
"""Built-in BFCL splits the benchmark can run on."""


def default_dataset_dir() -> Path:
    """Return the folder of the built-in BFCL dataset inside the asset cache."""
    from spec_agent.assets import cache_dir

    return cache_dir() / "datasets" / "bfcl"


def build_bfcl_dataset(out: Path | None, *, console: Console) -> Any:
    """Build the BFCL train and eval splits from the fetched `bfcl-eval` asset."""
    from spec_agent.assets import resolve_data
    from spec_agent.eval.dataset import build_dataset

    root = resolve_data("bfcl-eval")
    with _progress(console) as progress:
        task = progress.add_task("Converting BFCL", total=None)

        def advance(step: int, total: int | None, description: str) -> None:
            progress.update(task, advance=step, total=total, description=description)

        return build_dataset(root, out or default_dataset_dir(), progress=advance)


def load_eval_examples(
    dataset: Path | None, *, console: Console, split: str = "eval"
) -> tuple[list[Any], Path]:
    """Load examples from `dataset`, or a split of the built-in BFCL data (built if missing).

    `split` is `eval`, `train`, or `heldout`: the train-split scenarios that the `cpu-default`
    recipe, which trained the shipped models, keeps out of training.
    """
    from spec_agent.eval.schema import read_examples

    if dataset is not None:
        return read_examples(dataset), dataset
    if split not in SPLITS:
        raise ConfigError(f"Invalid split {split!r}; use 'eval', or 'heldout' (or 'train') for a calibration run.")
    folder = default_dataset_dir()
    path = folder / ("train.jsonl" if split == "heldout" else f"{split}.jsonl")
    if not path.exists():
        console.print(f"Building the BFCL dataset in {folder} (first run only)")
        build_bfcl_dataset(folder, console=console)
    examples = read_examples(path)
    if split == "heldout":
        from spec_agent.training.pipeline import heldout_examples
        from spec_agent.training.recipes import load_recipe

        examples = heldout_examples(examples, load_recipe("cpu-default"))
    return examples, path


def run_bench(
    config: Any,
    *,
    dataset: Path | None,
    out: Path,
    store_url: str | None,
    resume: str | None,
    threads: int,
    console: Console,
    workers: int = 1,
    split: str = "eval",
    ray_address: str | None = None,
) -> Path:
    """Run the benchmark, log every decision to the trace store and write the report.

    With `workers` > 1 the examples are sharded over that many processes, each loading its own
    models and writing to the same store; `threads` is then the torch thread count per process.
    With `ray_address` the `workers` shards run as Ray tasks of `threads` CPUs each instead, and
    every node of the cluster must reach `store_url`.
    """
    from spec_agent.db.store import SqlTraceStore
    from spec_agent.eval.bench import select_examples
    from spec_agent.eval.report import write_report

    started = time.perf_counter()
    examples, path = load_eval_examples(dataset, console=console, split=split)
    selected = select_examples(examples, limit=config.limit, seed=config.seed)
    console.print(
        f"Running configurations {''.join(config.configurations)} on {len(selected)} of "
        f"{len(examples)} examples from {path}"
        + (" (--limit 0 runs all)" if len(selected) < len(examples) else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite:///{(out / 'traces.sqlite').resolve()}"
    store = SqlTraceStore(store_url)
    metadata = _run_metadata(config, path, len(selected))
    if resume is None:
        run_id = store.start_run(name=config.name, config=metadata)
    else:
        run_id = resume
        _resume(store, run_id, metadata, config, selected)
    run_dir = out / run_id
    try:
        if workers > 1 or ray_address is not None:
            if ray_address is not None and store_url.startswith("sqlite"):
                logger.warning("Ray workers on other machines cannot reach the SQLite store %s; pass a "
                               "PostgreSQL URL with --store unless the cluster is this machine.", store_url)
            stats, cost_model = _run_sharded(config, selected, run_id, store_url, workers, threads, console,
                                             ray_address)
        else:
            runner, cost_model = _make_runner(config, store, threads, console)
            _run_with_progress(runner, selected, run_id, console)
            stats = runner.stats
    except BaseException:
        store.finish_run(run_id, "failed")
        console.print(f"[red]Run {run_id} failed; stored decisions are kept. Continue with --resume {run_id}.")
        raise
    store.finish_run(run_id, "finished")
    from spec_agent.eval.bench import throughput_lines

    for line in throughput_lines(stats):
        console.print(line)
    paths = write_report(store, run_id, run_dir, cost_model=cost_model)
    console.print(_summary_table(json.loads(paths.results.read_text(encoding="utf-8"))))
    console.print(f"Report: {paths.markdown} (wall time {time.perf_counter() - started:.0f}s)")
    return paths.markdown


def _summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="Configurations (full table in REPORT.md)")
    for column in ("config", "kind acc [95% CI]", "full acc", "cost (calls)", "FLOPs vs A",
                   "escalation", "latency p50 (s)"):
        table.add_column(column)
    for name, row in sorted(results["configs"].items()):
        low, high = row["kind_accuracy_ci"]
        table.add_row(
            name,
            f"{row['kind_accuracy']:.3f} [{low:.3f}, {high:.3f}]",
            f"{row['full_accuracy']:.3f}",
            f"{row['cost']:.3f}",
            f"{row['flops_vs_a']:.2f}x" if row.get("flops_vs_a") is not None else "-",
            "-" if row.get("escalation_rate") is None else f"{row['escalation_rate']:.3f}",
            f"{row['latency_p50']:.2f}",
        )
    return table


def _make_runner(config: Any, store: Any, threads: int, console: Console) -> tuple[Any, Any]:
    import torch

    from spec_agent.cost import CostModel
    from spec_agent.eval.bench import BenchRunner, Models
    torch.set_num_threads(threads)
    with console.status("Loading models"):
        cheap, cheap_parameters = _load_role(config.cheap_model, "cheap", config.seed, console,
                                             config.cheap_adapter, config.share, config.opening_heads,
                                             config.dtype)
        strong, strong_parameters = _load_role(config.strong_model, "strong", config.seed, console,
                                               config.strong_adapter, config.share, config.opening_heads,
                                               config.dtype)
    # NOTE: served models report no parameter count, so their calls add no token FLOPs.
    cost_model = CostModel(
        parameters={"cheap": cheap_parameters, "strong": strong_parameters, "judge": strong_parameters}
    )
    judge = None
    if is_served(config.strong_model):
        from spec_agent.verifiers import ChatModelJudge

        judge = ChatModelJudge(served_chat_model(config.strong_model), role="judge")
    models = Models(cheap=cheap, strong=strong, verifier=_verifier(config.verifier, config.kind_prior), judge=judge)
    runner = BenchRunner(config=config, models=models, store=store, cost_model=cost_model)
    return runner, cost_model


def _verifier(choice: str, kind_prior: bool = False) -> Any:
    """Return the verifier of D and E: the cheap model's confidence, its kind probability or a
    trained classifier. With `kind_prior`, the score is multiplied by the proposal's kind probability,
    except for `kind`, whose score already is that probability."""
    from spec_agent.verifiers import ConfidenceVerifier, KindVerifier, VerifierChain

    if choice == "confidence":
        verifier: Any = ConfidenceVerifier()
    elif choice == "kind":
        verifier = KindVerifier()
    else:
        from spec_agent.training.verifier import TrainedVerifier

        verifier = TrainedVerifier(choice)
    if not kind_prior or choice == "kind":
        return verifier
    # Every member passes on its own (reject_below 0); the run's threshold applies to the product.
    return VerifierChain(verifiers=[KindVerifier(), verifier], combine="product", reject_below=0.0)


def _load_role(
    spec: str, role: Any, seed: int, console: Console, adapter: str | None = None, share: bool = True,
    opening_head: bool = True, dtype: str = "float32",
) -> tuple[Any, float]:
    """Return the model for one role and its parameter count (0 when served).

    With `share`, a local model reuses its prefix KV cache and each distinct call runs once. With
    `opening_head`, the head saved in the adapter folder, if any, chooses the model's kind openings.
    """
    from spec_agent._memo import CachedModel
    from spec_agent.hf import HFChatModel
    from spec_agent.opening_head import find_opening_head
    from spec_agent.proposers import LangChainProposer

    if is_served(spec):
        if adapter is not None:
            raise ConfigError(f"Adapter {adapter!r} cannot be merged into served model {spec!r}; load the "
                              "adapter in the server (vLLM: --enable-lora) or drop --cheap-adapter/--strong-adapter.")
        return LangChainProposer(served_chat_model(spec), role=role), 0.0
    head = find_opening_head(adapter) if opening_head else None
    model = HFChatModel(spec, role=role, seed=seed, adapter=adapter, reuse_prefix=share, opening_head=head,
                        dtype=dtype)
    started = time.perf_counter()
    model.load()
    note = f" with adapter {adapter}" if adapter else ""
    note += " and its opening head" if head else ""
    console.print(f"Loaded {model.name}{note} ({model.dtype}) in {time.perf_counter() - started:.1f}s")
    return (CachedModel(model) if share else model), model.parameters


def _run_sharded(
    config: Any, examples: list[Any], run_id: str, store_url: str, workers: int, threads: int,
    console: Console, ray_address: str | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run shards of `examples` in worker processes or Ray tasks; show progress by polling the store."""
    from concurrent.futures import wait

    from spec_agent.db.store import SqlTraceStore

    shards = [examples[index::workers] for index in range(workers)]
    store = SqlTraceStore(store_url)
    where = f"Ray cluster {ray_address}" if ray_address else f"{workers} workers"
    with _shard_pool(workers, threads, ray_address) as submit, _progress(console) as progress:
        futures = [submit(_run_shard, config, shard, run_id, store_url, threads) for shard in shards if shard]
        task = progress.add_task(f"Run {run_id[:8]} on {where}", total=len(examples))
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=2.0)
            progress.update(task, completed=_finished_examples(store, run_id, config))
        results = [future.result() for future in futures]
    return _merge_stats([stats for stats, _ in results]), results[0][1]


@contextlib.contextmanager
def _shard_pool(workers: int, threads: int, ray_address: str | None) -> Iterator[Callable[..., Future]]:
    """Yield a `submit(function, *args) -> Future` that runs shards in processes or as Ray tasks."""
    if ray_address is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            yield pool.submit
        return
    try:
        import ray
    except ImportError as error:
        raise ConfigError(
            f"--ray-address {ray_address!r} needs Ray; install it with `pip install 'spec-agent[ray]'`."
        ) from error
    started = not ray.is_initialized()
    if started:
        # Ray's own address values pass through: 'local' starts a cluster on this machine.
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    logger.info("Sharding over Ray at %s: %s", ray_address, ray.cluster_resources())

    def submit(function: Callable[..., Any], *args: Any) -> Future:
        return ray.remote(num_cpus=threads)(function).remote(*args).future()

    try:
        yield submit
    finally:
        if started:
            ray.shutdown()


def _run_shard(config: Any, shard: list[Any], run_id: str, store_url: str, threads: int) -> tuple[dict[str, Any], Any]:
    from spec_agent.db.store import SqlTraceStore

    runner, cost_model = _make_runner(config, SqlTraceStore(store_url), threads, Console(quiet=True))
    runner.run(shard, run_id=run_id)
    return runner.stats, cost_model


def _finished_examples(store: Any, run_id: str, config: Any) -> int:
    return min(len(store.done_example_ids(run_id, letter)) for letter in config.configurations)


def _merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    from spec_agent.eval.bench import PassStats

    merged: dict[str, PassStats] = {}
    for stats in parts:
        for role, item in stats.items():
            total = merged.setdefault(role, PassStats())
            total.calls += item.calls
            total.tokens += item.tokens
            total.seconds += item.seconds
            total.examples |= item.examples
    return merged


def _run_with_progress(runner: Any, examples: list[Any], run_id: str, console: Console) -> None:
    with _progress(console) as progress:
        task = progress.add_task(f"Run {run_id[:8]}", total=len(examples))
        runner.run(examples, run_id=run_id, on_example=lambda _example: progress.advance(task))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _run_metadata(config: Any, dataset: Path, count: int) -> dict[str, Any]:
    settings = config.to_dict()
    return {
        "settings": settings,
        "config_hash": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16],
        "dataset": str(dataset),
        "dataset_sha256": _sha256(dataset),
        "examples": count,
        "trained": _trained_metadata(config),
        "git_commit": _git_commit(),
        "package_versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


RESUME_MAY_CHANGE = ("limit",)
"""Settings a resumed run may change. A larger `limit` extends the run when the seed's larger
sample contains every stored example, which `_resume` checks."""


def _resume(store: Any, run_id: str, metadata: dict[str, Any], config: Any, selected: list[Any]) -> None:
    """Set a stored run running again under `metadata`, after checking that its rows fit the new run.

    Raises:
        ConfigError: The settings changed, or the new sample leaves out examples the run contains.
    """
    stored = store.run(run_id).config
    resumed = _resumed_metadata(stored, metadata, run_id)
    done = set().union(*(store.done_example_ids(run_id, letter) for letter in config.configurations))
    outside = done - {example.id for example in selected}
    if outside:
        raise ConfigError(
            f"Run {run_id} contains {len(outside)} examples that --limit {config.limit} with seed {config.seed} "
            f"does not select (e.g. {sorted(outside)[0]!r}); resume with the run's own --limit "
            f"({(stored.get('settings') or {}).get('limit')})."
        )
    store.resume_run(run_id, config=resumed)


def _resumed_metadata(stored: dict[str, Any], metadata: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Return the metadata of a resumed run, or raise when its rows would come from other settings.

    Raises:
        ConfigError: A setting other than `limit`, or the dataset, differs from the stored run's.
    """
    from spec_agent.eval.bench import BenchConfig

    defaults = BenchConfig().to_dict()
    before = stored.get("settings") or {}
    # Settings added after the run was stored count as their default value.
    changed = [
        f"{key} (stored {before.get(key, defaults.get(key))!r}, now {value!r})"
        for key, value in json.loads(json.dumps(metadata["settings"])).items()
        if key not in RESUME_MAY_CHANGE and before.get(key, defaults.get(key)) != value
    ]
    if stored.get("dataset_sha256") not in (None, metadata["dataset_sha256"]):
        changed.append(f"dataset (stored sha256 {stored['dataset_sha256'][:12]}, now {metadata['dataset_sha256'][:12]})")
    if changed:
        raise ConfigError(
            f"Run {run_id} was stored with other settings: {'; '.join(changed)}. Resume it with the "
            "options it started with, or drop --resume to start a new run."
        )
    history = [*stored.get("resumed", []), {key: metadata[key] for key in ("date", "git_commit", "examples")}]
    return {**stored, "settings": metadata["settings"], "config_hash": metadata["config_hash"],
            "examples": metadata["examples"], "resumed": history}


def _trained_metadata(config: Any) -> dict[str, Any]:
    """Return the training manifest summary of each adapter and trained verifier a run uses."""
    from spec_agent.training.manifest import read_manifest

    folders = {"cheap": config.cheap_adapter, "strong": config.strong_adapter,
               "verifier": None if config.verifier in ("confidence", "kind") else config.verifier}
    found: dict[str, Any] = {}
    for role, folder in folders.items():
        if folder is None:
            continue
        manifest = read_manifest(folder)
        found[role] = {"folder": str(folder), "steps": manifest.get("steps"),
                       "validation": manifest.get("validation"), "git_commit": manifest.get("git_commit")}
        if role != "verifier" and config.opening_heads and "opening_head" in manifest:
            found[role]["opening_head"] = manifest["opening_head"].get("validation")
    if folders["verifier"] is None:
        from spec_agent.defaults import shipped_verifier

        # The report names the trained classifier's held-out quality even when D verifies by another
        # score, so that every run shows how well the shipped verifier separates its pairs.
        shipped = shipped_verifier()
        manifest = read_manifest(shipped) if shipped is not None else {}
        if manifest:
            found["shipped_verifier"] = {"folder": str(shipped), "validation": manifest.get("validation")}
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def rebuild_report(store_url: str, run_id: str | None, out: Path) -> Path:
    """Write the report of a stored run (the latest one when `run_id` is None)."""
    from spec_agent.db.store import SqlTraceStore
    from spec_agent.eval.report import write_report

    store = SqlTraceStore(store_url)
    if run_id is None:
        latest = store.latest_run()
        if latest is None:
            raise ConfigError(f"The trace store {store_url!r} has no runs; run `spec-agent bench` first.")
        run_id = latest.run_id
    write_report(store, run_id, out / run_id)
    return out / run_id / "REPORT.md"
