"""The trace store commands: `traces list|show|export|upgrade`, `replay` and `calibrate`.

`register(app)` mounts them on the main `spec-agent` app. None of them calls a model: they read
the trace store only (and `calibrate` writes a thresholds file).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from spec_agent.errors import ConfigError, SpecAgentError

if TYPE_CHECKING:
    from spec_agent.db.store import SqlTraceStore

DEFAULT_STORE = "sqlite:///runs/traces.sqlite"
EXPORT_TABLES = ("decisions", "proposals", "model_calls")

traces_app = typer.Typer(help="List, show, export and upgrade stored runs.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

StoreOption = Annotated[str, typer.Option("--store", help="Trace store URL.")]
RunArgument = Annotated[str | None, typer.Argument(help="Run id; default: the latest run.")]


def register(app: typer.Typer) -> None:
    """Mount `traces`, `replay` and `calibrate` on the main app."""
    app.add_typer(traces_app, name="traces")
    app.command("replay")(replay_command)
    app.command("calibrate")(calibrate_command)


def _fail(error: SpecAgentError) -> None:
    errors.print(f"[red]error:[/red] {error}", soft_wrap=True)
    raise typer.Exit(code=2)


def _open(url: str, *, upgrade: bool = True) -> SqlTraceStore:
    from spec_agent.db.store import SqlTraceStore

    return SqlTraceStore(url, upgrade=upgrade)


def _resolve_run(store: SqlTraceStore, run_id: str | None) -> str:
    if run_id is not None:
        return store.run(run_id).run_id
    latest = store.latest_run()
    if latest is None:
        raise ConfigError(f"The trace store {store.url!r} has no runs; run `spec-agent bench` first.")
    return latest.run_id


@traces_app.command("list")
def list_command(store: StoreOption = DEFAULT_STORE) -> None:
    """Show every run with its status and decisions per configuration."""
    try:
        trace_store = _open(store)
        runs = trace_store.runs()
        counts = trace_store.decision_counts()
    except SpecAgentError as error:
        _fail(error)
    table = Table(title=f"Runs in {store}")
    for column in ("Run id", "Name", "Status", "Started", "Finished", "Decisions", "Schema"):
        table.add_column(column)
    for run in runs:
        per_config = counts.get(run.run_id, {})
        decisions = " ".join(f"{config}:{count}" for config, count in sorted(per_config.items()))
        table.add_row(
            run.run_id, run.name, run.status, f"{run.created_at:%Y-%m-%d %H:%M:%S}",
            f"{run.finished_at:%Y-%m-%d %H:%M:%S}" if run.finished_at else "-",
            decisions or "-", str(run.schema_version),
        )
    console.print(table)


@traces_app.command("show")
def show_command(
    run_id: RunArgument = None,
    store: StoreOption = DEFAULT_STORE,
    config: Annotated[str | None, typer.Option(help="Only this configuration (A-E).")] = None,
    limit: Annotated[int, typer.Option(help="Decisions to show; 0 shows all.")] = 20,
) -> None:
    """Show a run's settings and its decisions: verdicts, scores, correctness, cost and tokens."""
    try:
        trace_store = _open(store)
        chosen = _resolve_run(trace_store, run_id)
        run = trace_store.run(chosen)
        rows = trace_store.decisions(chosen, config.upper() if config else None)
    except SpecAgentError as error:
        _fail(error)
    console.print(f"[bold]Run {run.run_id}[/bold] {run.name} ({run.status}), {len(rows)} decisions")
    console.print_json(json.dumps(run.config, sort_keys=True, default=str))
    table = Table(title=f"Decisions{' of ' + config.upper() if config else ''}")
    columns = ("Example", "Config", "Decision", "Final kind", "Gold kind", "Kind ok", "Full ok",
               "Scores", "Cost", "Tokens", "Thread / step")
    for column in columns:
        table.add_column(column)
    for row in rows[: limit or None]:
        scores = ", ".join("-" if score is None else f"{score:.2f}" for score in row.scores)
        table.add_row(
            row.example_id, row.config, row.decision, row.final_kind or "-", row.gold_kind,
            _mark(row.kind_correct), _mark(row.full_correct), scores or "-", f"{row.cost:.2f}",
            str(row.prompt_tokens + row.completion_tokens),
            f"{row.thread_id or '-'} / {'-' if row.step is None else row.step}",
        )
    console.print(table)
    if limit and len(rows) > limit:
        console.print(f"{len(rows) - limit} more decisions; pass --limit 0 to show all.")


def _mark(value: bool) -> str:
    return "[green]yes[/green]" if value else "[red]no[/red]"


@traces_app.command("export")
def export_command(
    run_id: RunArgument = None,
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Path, typer.Option(help="Folder for the exported files.")] = Path("runs/export"),
    format: Annotated[str, typer.Option("--format", help="parquet, csv or both.")] = "parquet",
) -> None:
    """Export a run's decisions, proposals and model calls to Parquet and/or CSV files."""
    try:
        formats = _formats(format)
        trace_store = _open(store)
        chosen = _resolve_run(trace_store, run_id)
        paths = export_run(trace_store, chosen, out, formats=formats)
    except SpecAgentError as error:
        _fail(error)
    for path in paths:
        console.print(f"Wrote {path}")


def _formats(value: str) -> tuple[str, ...]:
    choices = {"parquet": ("parquet",), "csv": ("csv",), "both": ("parquet", "csv")}
    if value not in choices:
        raise ConfigError(f"Unknown export format {value!r}; choose parquet, csv or both.")
    return choices[value]


def export_run(
    store: SqlTraceStore, run_id: str, out: Path, *, formats: tuple[str, ...] = ("parquet",)
) -> list[Path]:
    """Write `<table>.parquet` and/or `<table>.csv` for the run's three trace tables.

    Costs become floats, timestamps stay timestamps, and JSON columns stay JSON text.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    folder = out / run_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in EXPORT_TABLES:
        rows = [_plain(row) for row in store.table_rows(name, run_id)]
        table = pa.Table.from_pylist(rows)
        if "parquet" in formats:
            paths.append(folder / f"{name}.parquet")
            pq.write_table(table, paths[-1])
        if "csv" in formats:
            paths.append(folder / f"{name}.csv")
            pa_csv.write_csv(table, paths[-1])
    return paths


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {key: float(value) if isinstance(value, Decimal) else value for key, value in row.items()}


@traces_app.command("upgrade")
def upgrade_command(store: StoreOption = DEFAULT_STORE) -> None:
    """Migrate a store written by an older spec-agent to the current schema."""
    from spec_agent.db.migrate import head_revision

    try:
        trace_store = _open(store, upgrade=True)
    except SpecAgentError as error:
        _fail(error)
    before = trace_store.upgraded_from
    head = head_revision()
    if before == head:
        console.print(f"{store} is already at schema revision {head}.")
    else:
        console.print(f"Upgraded {store} from schema revision {before or 'empty'} to {head}.")


def _floats(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ConfigError(f"Invalid threshold list {text!r}; expected numbers like 0.3,0.5,0.7.") from error


def _kind_thresholds(text: str | None) -> dict[str, float]:
    result: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        kind, _, value = part.partition("=")
        try:
            result[kind.strip()] = float(value)
        except ValueError as error:
            raise ConfigError(f"Invalid per-kind threshold {part!r}; expected kind=number.") from error
    return result


def replay_command(
    run_id: RunArgument = None,
    store: StoreOption = DEFAULT_STORE,
    thresholds: Annotated[str | None, typer.Option(help="Comma-separated thresholds, e.g. 0.3,0.5,0.7.")] = None,
    grid: Annotated[int, typer.Option(help="Evenly spaced thresholds from 0 to 1 when --thresholds is not given.")] = 11,
    score: Annotated[str, typer.Option(help="Stored score to replay: verifier (D), judge (C), confidence or kind (the proposal's kind probability).")] = "verifier",
    by_kind: Annotated[str | None, typer.Option(help="Per-kind thresholds, e.g. file_read=0.3,tool_call=0.7.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows to this JSON file.")] = None,
    escalation_rate: Annotated[float | None, typer.Option(help="Move each setting's thresholds by one shared offset so that this share of examples escalates, learnt step by step in run order as an EscalationTarget does live.")] = None,
) -> None:
    """Re-score a stored run under other thresholds or another stored score, without model calls."""
    from spec_agent.db.replay import SCORE_SOURCES, ReplaySetting, load_frame, replay, replay_target, threshold_grid
    from spec_agent.escalation import EscalationTarget

    try:
        if score not in SCORE_SOURCES:
            raise ConfigError(f"Unknown score {score!r}; choose from {SCORE_SOURCES}.")
        values = _floats(thresholds) or threshold_grid(grid)
        trace_store = _open(store)
        chosen = _resolve_run(trace_store, run_id)
        frame = load_frame(trace_store, chosen)
        settings = [ReplaySetting(threshold=value, by_kind=_kind_thresholds(by_kind), score=score)  # type: ignore[arg-type]
                    for value in values]
        if escalation_rate is None:
            rows = replay(frame, settings).rows()
        else:
            rows = [row for setting in settings
                    for row in replay_target(frame, setting, EscalationTarget(rate=escalation_rate)).rows()]
    except SpecAgentError as error:
        _fail(error)
    _print_replay(chosen, rows)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        console.print(f"Wrote {json_out}")


def _print_replay(run_id: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"Replay of run {run_id} ({rows[0]['n'] if rows else 0} examples)")
    columns = {
        "setting": "Setting", "kind_accuracy": "Kind acc ↑", "full_accuracy": "Full acc ↑",
        "cost": "Cost ↓", "accept_rate": "Accept rate", "escalation_rate": "Escalation ↓",
        "false_accept_rate": "False accept ↓", "false_reject_rate": "False reject ↓",
        "wasted_cost": "Wasted cost ↓",
    }
    for label in columns.values():
        table.add_column(label)
    for row in rows:
        table.add_row(*[_cell(row[key]) for key in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def calibrate_command(
    run_id: RunArgument = None,
    store: StoreOption = DEFAULT_STORE,
    max_escalation: Annotated[float | None, typer.Option(help="Escalation budget: highest share of examples sent to the strong model.")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="Accuracy floor to reach at the least cost.")] = None,
    accuracy: Annotated[str, typer.Option(help="Accuracy to use: kind or full.")] = "kind",
    min_support: Annotated[int, typer.Option(help="Proposals a kind needs for its own threshold.")] = 20,
    per_kind: Annotated[bool, typer.Option(help="Also calibrate per-kind verifier thresholds.")] = True,
    out: Annotated[Path, typer.Option(help="Thresholds file to write.")] = Path("thresholds.json"),
) -> None:
    """Pick thresholds on a stored calibration run and write them to thresholds.json."""
    from spec_agent.db.replay import load_frame
    from spec_agent.eval.calibration import CalibrationConfig, calibrate, write_thresholds

    try:
        config = CalibrationConfig(
            max_escalation=max_escalation, min_accuracy=min_accuracy,
            accuracy=_accuracy(accuracy), min_support=min_support, per_kind=per_kind,
        )
        trace_store = _open(store)
        chosen = _resolve_run(trace_store, run_id)
        result = calibrate(load_frame(trace_store, chosen), config)
        write_thresholds(out, result.thresholds)
    except SpecAgentError as error:
        _fail(error)
    table = Table(title=f"Thresholds calibrated on run {chosen}")
    for column in ("Score", "Kind", "Threshold", "Target met", "n", "Accuracy", "Cost", "Escalation"):
        table.add_column(column)
    rows = [(choice, choice.kind or "all", f"{choice.threshold:g}") for choice in result.choices]
    if result.combined is not None:
        rows.append((result.combined, "all, with per-kind", "-"))
    for choice, kind, threshold in rows:
        table.add_row(
            choice.score, kind, threshold, _mark(choice.met), str(choice.n),
            f"{choice.accuracy:.3f}", f"{choice.cost:.3f}", f"{choice.escalation_rate:.3f}",
        )
    console.print(table)
    console.print(f"Wrote {out}")


def _accuracy(value: str) -> Literal["kind", "full"]:
    if value not in ("kind", "full"):
        raise ConfigError(f"Unknown accuracy {value!r}; choose kind or full.")
    return value  # type: ignore[return-value]
