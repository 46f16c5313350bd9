"""The `spec-agent` command line: assets, data, the benchmark and its report."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from spec_agent._cli_assets import assets_app
from spec_agent._cli_episodes import episodes
from spec_agent._cli_traces import register as register_trace_commands
from spec_agent._cli_train import train_app
from spec_agent.eval.bench import DEFAULT_LIMIT, DEFAULT_MAX_COST
from spec_agent.errors import ConfigError, SpecAgentError

app = typer.Typer(
    name="spec-agent",
    help="Speculative agent actions: a cheap model proposes, a verifier checks, the strong model acts on reject.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(assets_app, name="assets")
data_app = typer.Typer(help="Build and inspect next-action datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.command("episodes")(episodes)
register_trace_commands(app)
app.add_typer(train_app, name="train")
console = Console(stderr=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False,
) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(error: SpecAgentError) -> None:
    # Soft wrap: hard line breaks inside a path or a command would stop a user from copying it.
    console.print(f"[red]error:[/red] {error}", soft_wrap=True)
    raise typer.Exit(code=2)


@data_app.command("build")
def data_build(
    out: Annotated[Path | None, typer.Option(help="Output folder; default: the cache's datasets/bfcl.")] = None,
) -> None:
    """Convert the embedded BFCL data into train and eval next-action splits with a card."""
    from spec_agent import _commands

    try:
        card = _commands.build_bfcl_dataset(out, console=console)
    except SpecAgentError as error:
        _fail(error)
    console.print(card.summary() if hasattr(card, "summary") else card)


@app.command()
def bench(
    limit: Annotated[int, typer.Option(help="Examples to run, sampled from the eval split; 0 runs all.")] = DEFAULT_LIMIT,
    configs: Annotated[str, typer.Option(help="Configuration letters to run, e.g. ABCDE or AD.")] = "ABCDE",
    dataset: Annotated[Path | None, typer.Option(help="Eval set (.jsonl or .parquet); default: the BFCL eval split.")] = None,
    split: Annotated[str, typer.Option(help="Built-in BFCL split: eval; heldout for a calibration run (train-split scenarios the shipped models were not trained on); or train.")] = "eval",
    out: Annotated[Path, typer.Option(help="Folder for the run's report files.")] = Path("runs"),
    store: Annotated[str | None, typer.Option(help="Trace store URL; default: sqlite:///<out>/traces.sqlite.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run id to continue; stored examples are skipped.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the example sample and of sampled proposals.")] = 0,
    cheap_model: Annotated[str, typer.Option(help="Cheap proposer: asset name, local directory, hub id or openai:MODEL@BASE_URL.")] = "smollm2-135m-instruct",
    strong_model: Annotated[str, typer.Option(help="Strong model: asset name, local directory, hub id or openai:MODEL@BASE_URL.")] = "qwen2.5-coder-0.5b-instruct",
    judge_threshold: Annotated[float, typer.Option(help="P(ACCEPT) from the strong judge needed to accept (C).")] = 0.5,
    verifier: Annotated[str | None, typer.Option(help="Verifier of D and E: 'confidence' (the cheap model's own), 'kind' (its probability of the chosen kind) or a folder from `spec-agent train verifier`; default: 'kind' when the cheap adapter's opening head has a calibrated threshold, else the shipped trained verifier.")] = None,
    kind_prior: Annotated[bool, typer.Option("--kind-prior/--no-kind-prior", help="Multiply the verifier's score by the cheap proposal's kind probability. The threshold stays the verifier's own, so calibrate one with --thresholds or --verifier-threshold.")] = False,
    cheap_adapter: Annotated[str | None, typer.Option(help="LoRA adapter folder of the cheap proposer; default: the shipped one for an embedded model.")] = None,
    strong_adapter: Annotated[str | None, typer.Option(help="LoRA adapter folder of the strong model; default: the shipped one for an embedded model.")] = None,
    untrained: Annotated[bool, typer.Option("--untrained", help="Run the base models and the confidence verifier instead of the shipped trained defaults.")] = False,
    no_share: Annotated[bool, typer.Option("--no-share", help="Compute every model call of every configuration from scratch, without the prefix cache (to measure what sharing saves).")] = False,
    free_decoding: Annotated[bool, typer.Option("--free-decoding", help="Let local models write any text instead of opening each action with the most likely 'kind:' prefix.")] = False,
    free_calls: Annotated[bool, typer.Option("--free-calls", help="Let local models write a tool payload freely instead of within the grammar of the example's tool schemas.")] = False,
    no_opening_head: Annotated[bool, typer.Option("--no-opening-head", help="Choose each 'kind:' prefix by its likelihood even when the adapter has an opening head.")] = False,
    verifier_threshold: Annotated[float | None, typer.Option(help="Verifier score needed to accept (D, E); default: the calibrated threshold of the opening head (kind) or trained verifier, else 0.5.")] = None,
    thresholds: Annotated[Path | None, typer.Option(help="thresholds.json from `spec-agent calibrate`; overrides both thresholds.")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads per process; 0 shares every core among the workers.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes to shard examples over, each loading its own models.")] = 1,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to run the --workers shards on (ray://HOST:10001, 'auto', or 'local' to start one here); needs the ray extra.")] = None,
    dtype: Annotated[str, typer.Option(help="Weight precision of local models: float32 (the precision the shipped thresholds were calibrated in), bfloat16, or auto (bfloat16 on CPUs with AMX, whose prefill it makes about 4 times faster; float32 elsewhere).")] = "float32",
    max_cost: Annotated[float, typer.Option(help="Mean cost per step to hold D and E to, relative to one strong call: their thresholds move by one shared offset so that the share of escalated steps fits it, reading no label. 0 keeps the thresholds fixed.")] = DEFAULT_MAX_COST,
) -> None:
    """Run configurations A-E over the eval set and write REPORT.md, results.json and frontier.png."""
    from spec_agent import _commands
    from spec_agent.eval.bench import BenchConfig

    try:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}.")
        from spec_agent.defaults import bench_models
        from spec_agent.hf import compute_dtype

        trained = bench_models(cheap_model=cheap_model, strong_model=strong_model, verifier=verifier,
                               cheap_adapter=cheap_adapter, strong_adapter=strong_adapter, untrained=untrained,
                               opening_heads=not no_opening_head)
        verifier = trained.verifier
        chosen = {"judge": judge_threshold, **_verifier_thresholds(verifier, verifier_threshold, trained.cheap_adapter,
                                                                   strong_model, not no_opening_head)}
        if thresholds is not None:
            from spec_agent.eval.calibration import load_thresholds

            chosen = load_thresholds(thresholds)
        config = BenchConfig(
            configurations=tuple(configs.upper()),
            limit=limit,
            seed=seed,
            thresholds={"judge": chosen["judge"], "verifier": chosen["verifier"]},
            thresholds_by_kind=dict(chosen["by_kind"]),
            verifier=verifier,
            kind_prior=kind_prior,
            cheap_model=cheap_model,
            strong_model=strong_model,
            cheap_adapter=trained.cheap_adapter,
            strong_adapter=trained.strong_adapter,
            share=not no_share,
            free_decoding=free_decoding,
            opening_heads=not no_opening_head,
            free_calls=free_calls,
            dtype=compute_dtype(dtype),
            max_cost=max_cost or None,
        )
        _commands.run_bench(
            config,
            dataset=dataset,
            out=out,
            store_url=store,
            resume=resume,
            threads=threads or max(1, (os.cpu_count() or 1) // max(workers, 1)),
            console=console,
            workers=workers,
            split=split,
            ray_address=ray_address,
        )
    except SpecAgentError as error:
        _fail(error)


def _verifier_thresholds(verifier: str, threshold: float | None, cheap_adapter: str | None, strong_model: str,
                         opening_heads: bool) -> dict[str, Any]:
    """Return the verifier's threshold and per-kind thresholds: the given one, else the calibrated ones."""
    if threshold is not None:
        return {"verifier": threshold, "by_kind": {}}
    if verifier == "kind" and opening_heads:
        from spec_agent.defaults import kind_thresholds

        calibrated = kind_thresholds(cheap_adapter, strong_model)
        if calibrated is not None:
            return calibrated
    if verifier in ("confidence", "kind"):
        return {"verifier": 0.5, "by_kind": {}}
    from spec_agent.training.verifier import TrainedVerifier

    return {"verifier": TrainedVerifier(verifier).threshold, "by_kind": {}}


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="Run id; default: the latest run in the store.")] = None,
    store: Annotated[str, typer.Option(help="Trace store URL.")] = "sqlite:///runs/traces.sqlite",
    out: Annotated[Path, typer.Option(help="Folder for REPORT.md, results.json and frontier.png.")] = Path("runs"),
) -> None:
    """Rebuild a run's report from the trace store, without calling any model."""
    from spec_agent import _commands

    try:
        paths = _commands.rebuild_report(store, run_id, out)
    except SpecAgentError as error:
        _fail(error)
    console.print(f"Report written to {paths}")


if __name__ == "__main__":
    app()
