"""The `spec-agent episodes` command: whole BFCL tasks through the example agent, per configuration.

Unlike `bench`, which scores single next actions against gold, an episode runs every user turn of
a `multi_turn_base` task with real tool execution, and counts the task as solved only when the
backends end each turn in the ground truth's state. The cost and latency are per task.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from spec_agent.errors import ConfigError, SpecAgentError

logger = logging.getLogger(__name__)
console = Console(stderr=True)

DEFAULT_EPISODES = 1
"""Tasks per configuration in the default run. One 4-turn task took 80-120 s per configuration with
the embedded models and one torch thread on a shared 2-core CPU; the time grows with the steps the
models take."""


def episodes(
    count: Annotated[int, typer.Option("--episodes", help="Tasks per configuration, taken in id order from the split; 0 runs all.")] = DEFAULT_EPISODES,
    configs: Annotated[str, typer.Option(help="Configuration letters to run, e.g. ABCDE or AD.")] = "ABCDE",
    max_steps: Annotated[int, typer.Option(help="Model steps allowed per user turn before the turn is cut off.")] = 4,
    split: Annotated[str, typer.Option(help="Scenario split of multi_turn_base: eval or train.")] = "eval",
    cheap_model: Annotated[str, typer.Option(help="Cheap proposer: asset name, local directory or hub id.")] = "smollm2-135m-instruct",
    strong_model: Annotated[str, typer.Option(help="Strong model: asset name, local directory or hub id.")] = "qwen2.5-coder-0.5b-instruct",
    threshold: Annotated[float, typer.Option(help="Verifier score needed to accept a proposal (C, D, E).")] = 0.5,
    store: Annotated[str | None, typer.Option(help="Trace store URL for every decision; default: none.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write per-task results as JSON to this file.")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 uses every core.")] = 0,
) -> None:
    """Run whole multi-turn BFCL tasks per configuration A-E and report task success, cost and latency."""
    try:
        _check(count, configs, max_steps, split, threshold)
        results = run_episodes(
            count=count, configs=configs.upper(), max_steps=max_steps, split=split,
            cheap_model=cheap_model, strong_model=strong_model, threshold=threshold,
            store_url=store, threads=threads or os.cpu_count() or 1,
        )
    except SpecAgentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from error
    console.print(summary_table(results))
    if out is not None:
        out.write_text(json.dumps([_result_dict(result) for result in results], indent=2, sort_keys=True))
        console.print(f"Results written to {out}")


def _check(count: int, configs: str, max_steps: int, split: str, threshold: float) -> None:
    from spec_agent.graphs.configurations import get_configuration

    if count < 0:
        raise ConfigError(f"--episodes must be >= 0 (0 runs all), got {count}.")
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps}.")
    if split not in ("eval", "train"):
        raise ConfigError(f"Invalid --split {split!r}; use 'eval' or 'train'.")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"Invalid --threshold {threshold!r}; expected a value in [0, 1].")
    for letter in configs:
        get_configuration(letter)


def run_episodes(
    *, count: int, configs: str, max_steps: int, split: str, cheap_model: str, strong_model: str,
    threshold: float, store_url: str | None, threads: int,
) -> list[Any]:
    """Load the models once and run every task under every configuration, with a progress bar."""
    import torch

    from spec_agent.assets import resolve_data
    from spec_agent.eval.bfcl import BackendLoader
    from spec_agent.graphs.agents import load_episodes, run_episode
    from spec_agent.hf import HFChatModel

    torch.set_num_threads(threads)
    root = resolve_data("bfcl-eval")
    tasks = load_episodes(root, split=split, limit=count)
    cheap = HFChatModel(cheap_model, role="cheap").load()
    strong = HFChatModel(strong_model, role="strong").load()
    trace_store = _open_store(store_url)
    run_id = trace_store.start_run(name="episodes", config={"configs": configs, "tasks": len(tasks)}) if trace_store else None
    loader = BackendLoader(bfcl_root=root)
    results = []
    with _progress() as progress:
        task = progress.add_task("Episodes", total=len(tasks) * len(configs))
        for letter in configs:
            make_node = node_factory(letter, cheap=cheap, strong=strong, threshold=threshold,
                                     store=trace_store, run_id=run_id)
            for episode in tasks:
                progress.update(task, description=f"{letter} {episode.entry_id}")
                results.append(run_episode(episode, make_node, loader=loader, config_name=letter,
                                           max_steps_per_turn=max_steps))
                progress.advance(task)
    if trace_store is not None and run_id is not None:
        trace_store.finish_run(run_id, "finished")
    return results


def node_factory(
    letter: str, *, cheap: Any, strong: Any, threshold: float, store: Any = None, run_id: str | None = None
) -> Any:
    """Return a function that builds configuration `letter`'s speculative node for a tool list.

    C judges with the strong model; D and E use the proposer's confidence, the verifier that
    needs no training (a trained classifier plugs in the same way).
    """
    from spec_agent.graphs.configurations import get_configuration
    from spec_agent.node import speculative_node
    from spec_agent.verifiers import ConfidenceVerifier, JudgeVerifier

    config = get_configuration(letter)
    verifier = {"none": None, "judge": JudgeVerifier(strong), "verifier": ConfidenceVerifier()}[config.verifier]

    def make_node(tools: Sequence[Any]) -> Any:
        return speculative_node(
            cheap if config.speculate else None,
            verifier,
            strong if config.fallback else None,
            tools=tools,
            threshold=threshold,
            n_proposals=config.n_proposals,
            store=store,
            name=f"episodes-{config.name}",
            config_name=config.name,
            run_id=run_id,
        )

    return make_node


def summary_table(results: Sequence[Any]) -> Table:
    """Tabulate task success rate, mean cost, mean latency and decisions per configuration."""
    table = Table(title="BFCL multi_turn_base episodes (state-based success)")
    for column in ("config", "tasks", "success", "turns passed", "mean cost", "mean latency s",
                   "steps", "cut turns", "decisions"):
        table.add_column(column)
    for letter in sorted({result.config for result in results}):
        rows = [result for result in results if result.config == letter]
        decisions: dict[str, int] = {}
        for row in rows:
            for kind, number in row.decisions.items():
                decisions[kind] = decisions.get(kind, 0) + number
        table.add_row(
            letter,
            str(len(rows)),
            f"{sum(row.success for row in rows) / len(rows):.2f}",
            f"{sum(row.turns_passed for row in rows)}/{sum(row.turns for row in rows)}",
            f"{sum((row.cost for row in rows), Decimal(0)) / len(rows):.2f}",
            f"{sum(row.latency_s for row in rows) / len(rows):.1f}",
            str(sum(row.steps for row in rows)),
            str(sum(row.cut_turns for row in rows)),
            ", ".join(f"{kind} {number}" for kind, number in sorted(decisions.items())),
        )
    return table


def _open_store(url: str | None) -> Any:
    if url is None:
        return None
    from spec_agent.db.store import SqlTraceStore

    return SqlTraceStore(url)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _result_dict(result: Any) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(result)
    data["cost"] = str(result.cost)
    return data
