"""The ``spec-agent train`` commands: fine-tune the proposers and train the verifier from a recipe.

Every command resumes from the newest checkpoint under its output folder, so rerunning an
interrupted command continues it. Ctrl-C saves a checkpoint at the end of the current step and
exits with status 130.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from spec_agent.errors import SpecAgentError

train_app = typer.Typer(
    help="Fine-tune the proposers (LoRA SFT) and train the ACCEPT/REJECT verifier from a recipe.",
    no_args_is_help=True,
)
console = Console(stderr=True)

RecipeOption = Annotated[
    str, typer.Option("--recipe", help="Recipe JSON file or built-in name (cpu-default, gpu-qwen3).")
]
OutputOption = Annotated[
    Path, typer.Option("--output", help="Folder for data, checkpoints, adapters and manifests.")
]
MaxStepsOption = Annotated[
    int | None, typer.Option("--max-steps", min=1, help="Stop each training run after this many optimizer steps.")
]
RoleOption = Annotated[
    str, typer.Option("--role", help="Proposer to train: cheap, strong or both (same settings for both).")
]
INTERRUPTED_EXIT = 130


@train_app.command("proposer")
def proposer_command(
    recipe: RecipeOption = "cpu-default",
    output: OutputOption = Path("runs/train"),
    max_steps: MaxStepsOption = None,
    role: RoleOption = "both",
) -> None:
    """Fine-tune LoRA adapters of the cheap and strong proposers on the train split."""
    loaded = _load(recipe, max_steps)
    for name in _roles(role):
        _run(lambda name=name: _pipeline().train_proposer(loaded, output, name), f"proposer --role {name}", recipe, output)


@train_app.command("head")
def head_command(
    recipe: RecipeOption = "cpu-default",
    output: OutputOption = Path("runs/train"),
    role: RoleOption = "both",
) -> None:
    """Fit the opening head of each trained proposer: a linear kind classifier on its hidden state.

    With both heads fitted, D's kind-probability thresholds are calibrated on their held-out rows.
    """
    loaded = _load(recipe, None)
    for name in _roles(role):
        _run(lambda name=name: _head(loaded, output, name), f"head --role {name}", recipe, output)
    if role == "both":
        _kind_thresholds(loaded, output)


@train_app.command("verifier")
def verifier_command(
    recipe: RecipeOption = "cpu-default",
    output: OutputOption = Path("runs/train"),
    max_steps: MaxStepsOption = None,
) -> None:
    """Build balanced verifier pairs, train the verifier and calibrate its threshold."""
    loaded = _load(recipe, max_steps)
    _run(lambda: _verifier(loaded, output), "verifier", recipe, output)


@train_app.command("all")
def all_command(
    recipe: RecipeOption = "cpu-default",
    output: OutputOption = Path("runs/train"),
    max_steps: MaxStepsOption = None,
) -> None:
    """Train both proposers, then their opening heads, then the verifier on the cheap one's mistakes."""
    loaded = _load(recipe, max_steps)
    for name in ("cheap", "strong"):
        _run(lambda name=name: _pipeline().train_proposer(loaded, output, name), "all", recipe, output)
    if loaded.proposer.head_examples:
        for name in ("cheap", "strong"):
            _run(lambda name=name: _head(loaded, output, name), "all", recipe, output)
        _kind_thresholds(loaded, output)
    _run(lambda: _verifier(loaded, output), "all", recipe, output)


def _pipeline():  # noqa: ANN202 - the module loads torch, so it is imported on first use
    from spec_agent.training import pipeline

    return pipeline


def _load(recipe: str, max_steps: int | None):  # noqa: ANN202
    from spec_agent.training.recipes import load_recipe

    try:
        return load_recipe(recipe).with_max_steps(max_steps)
    except SpecAgentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None


def _roles(role: str) -> tuple[str, ...]:
    if role == "both":
        return ("cheap", "strong")
    if role in ("cheap", "strong"):
        return (role,)
    console.print(f"[red]error:[/red] invalid --role {role!r}; use cheap, strong or both.", soft_wrap=True)
    raise typer.Exit(code=2)


@train_app.command("package")
def package_command(
    output: OutputOption = Path("runs/train"),
) -> None:
    """Copy a finished run's LoRA adapters and verifier into the package as the bench defaults."""
    from spec_agent.defaults import package_trained

    try:
        folders = package_trained(output)
    except SpecAgentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    for folder in folders:
        size = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
        console.print(f"Packaged {folder} ({size:.1f} MB)")


def _verifier(recipe, output: Path):  # noqa: ANN001, ANN202
    with _progress("Cheap proposals for hard negatives") as advance:
        return _pipeline().train_verifier_run(recipe, output, progress=advance)


def _head(recipe, output: Path, role: str):  # noqa: ANN001, ANN202
    with _progress(f"Features of the {role} proposer for its opening head") as advance:
        return _pipeline().train_head(recipe, output, role, progress=advance)


def _kind_thresholds(recipe, output: Path) -> None:  # noqa: ANN001
    try:
        chosen = _pipeline().calibrate_kind_thresholds(recipe, output)
    except SpecAgentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    kinds = ", ".join(f"{kind} {value:.3f}" for kind, value in chosen["by_kind"].items()) or "none"
    target = "" if chosen["met"] else " (target missed: the closest kept)"
    console.print(
        f"[green]D's kind thresholds[/green] on {chosen['rows']} held-out rows: {chosen['threshold']:.3f}, per kind "
        f"{kinds}; kind accuracy {chosen['accuracy']:.3f} against the strong head's {chosen['strong_accuracy']:.3f} "
        f"at cost {chosen['cost']:.3f}{target}"
    )


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """Show a progress bar and yield the (done, total) callback that advances it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _run(job, command: str, recipe: str, output: Path) -> None:  # noqa: ANN001
    """Run one training job, turning errors into exit status 2 and Ctrl-C into status 130."""
    try:
        report = job()
    except SpecAgentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    if report.interrupted:
        console.print(
            f"[yellow]Interrupted:[/yellow] {report.name} saved a checkpoint under {report.checkpoint_dir}. "
            f"Resume with: spec-agent train {command} --recipe {recipe} --output {output}"
        )
        sys.stdout.flush()
        raise typer.Exit(code=INTERRUPTED_EXIT)
    manifest = report.manifest
    steps = f"{manifest['steps']} steps in " if manifest.get("steps") is not None else ""
    rate = manifest["examples_per_second"]
    rate_text = "every example cached" if rate is None else f"{rate:.2f} examples/s"
    console.print(f"[green]{report.name}[/green]: {steps}{manifest['wall_seconds']:.0f} s, {rate_text} -> {report.folder}")
    for key, value in sorted(manifest["validation"].items()):
        if isinstance(value, (int, float)) or value is None:
            console.print(f"  {key}: {value}")
