"""The training loop shared by proposer SFT and verifier training: resume, Ctrl-C and throughput.

A run resumes from the newest checkpoint in its checkpoint folder. The first Ctrl-C requests that the
trainer save a checkpoint and stop at the end of the current optimizer step. A second Ctrl-C
raises `KeyboardInterrupt` at once, and the loop then saves what it has before returning.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LoopOutcome:
    """Outcome of one `run_trainer` call."""

    interrupted: bool
    """True when Ctrl-C stopped the run; a checkpoint to resume from was saved."""
    resumed_from: str | None
    """Checkpoint the run started from, or None for a fresh start."""
    global_step: int
    """Optimizer steps done in total, counting steps before a resume."""
    steps_run: int
    """Optimizer steps done by this call."""
    wall_seconds: float
    """Wall time of this call's training, in seconds."""
    examples_per_second: float
    """Training rows processed per second by this call."""
    train_loss: float | None
    """Mean training loss reported by the trainer, when it finished."""


class StopRequest(TrainerCallback):
    """A callback that saves a checkpoint and stops training once `request` was called."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        """Ask the trainer to stop at the end of the current optimizer step."""
        self.requested = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Turn a pending request into a checkpoint save and a stop."""
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class RichProgress(TrainerCallback):
    """A rich progress bar over optimizer steps that shows the latest loss and examples/s.

    TRL's `RichProgressCallback` (trl 1.16) fails when `evaluate` runs outside `train`, which the
    before/after validation loss needs, hence this small replacement.
    """

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.started = 0.0
        self.first_step = 0
        self.loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Start the bar at the current (possibly resumed) step."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.progress import TimeRemainingColumn

        self.progress = Progress(TextColumn("Training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, status="")
        self.started, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        """Keep the latest training loss for the status text."""
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Advance the bar and refresh loss and throughput."""
        if self.progress is None:
            return
        rows = (state.global_step - self.first_step) * args.per_device_train_batch_size
        rows *= args.gradient_accumulation_steps
        rate = rows / max(time.perf_counter() - self.started, 1e-9)
        loss = f"loss {self.loss:.4f}, " if self.loss is not None else ""
        self.progress.update(self.task, completed=state.global_step, status=f"{loss}{rate:.2f} examples/s")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop the bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def prepare_callbacks(trainer: Any) -> StopRequest:
    """Replace the tqdm progress output with a rich progress bar and add a `StopRequest`."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(RichProgress())
    stop = StopRequest()
    trainer.add_callback(stop)
    return stop


def run_trainer(trainer: Any, stop: StopRequest) -> LoopOutcome:
    """Train, resuming from the newest checkpoint in `trainer.args.output_dir` if there is one."""
    folder = Path(trainer.args.output_dir)
    checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    started = time.perf_counter()
    start_step = _checkpoint_step(checkpoint)
    train_loss = None
    with _sigint_requests(stop):
        try:
            output = trainer.train(resume_from_checkpoint=checkpoint)
            train_loss = float(output.training_loss)
        except KeyboardInterrupt:
            stop.request()
            _save_after_interrupt(trainer)
    wall = time.perf_counter() - started
    steps = trainer.state.global_step - start_step
    rows = steps * trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    return LoopOutcome(
        interrupted=stop.requested,
        resumed_from=checkpoint,
        global_step=trainer.state.global_step,
        steps_run=steps,
        wall_seconds=round(wall, 2),
        examples_per_second=round(rows / wall, 3) if wall > 0 else 0.0,
        train_loss=train_loss,
    )


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _save_after_interrupt(trainer: Any) -> None:
    # A second Ctrl-C lands mid-step, so there is no step end at which the callback could save.
    # `_save_checkpoint` is private in transformers 5.25 but writes the same folder layout that
    # `resume_from_checkpoint` reads.
    try:
        trainer._save_checkpoint(trainer.model, trial=None)
    except (OSError, RuntimeError, AttributeError) as error:
        logger.warning("Could not save a checkpoint after the interrupt: %s", error)


class _sigint_requests:
    """Context manager: the first SIGINT requests a stop, a second one raises KeyboardInterrupt."""

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop
        self.previous: Any = None

    def __enter__(self) -> None:
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C raises as usual.
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        logger.warning("Interrupt received: saving a checkpoint at the end of this step "
                       "(press Ctrl-C again to stop at once)")
        self.stop.request()
        signal.signal(signal.SIGINT, signal.default_int_handler)
