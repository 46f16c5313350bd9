"""A write buffer in front of a trace store that keeps the agent running when the store fails.

An agent step or a benchmark example should not crash because the trace database is locked past
its timeout, full or read-only. `BufferedTraceWriter` queues decision rows, writes them in batches,
and on a failed write keeps the rows queued, logs the error with the run and example ids, counts
it, and tries again on a later write or an explicit `flush()`. Rows leave the queue only once the
store has committed them, and the store ignores rows it already has, so a retry never duplicates
a row.

With `WritePolicy(flush_interval_s=...)` a daemon thread does the writing, so the caller only
appends to the queue instead of committing a transaction per call. Rows then wait in memory for
at most the interval (or until `flush()`/`close()`), and a process killed in that window loses
them. The default policy writes in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spec_agent.db.store import DecisionRow, TraceStore
from spec_agent.errors import ConfigError, SpecAgentRuntimeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class WritePolicy:
    """When the buffer writes and how it retries after a failed write."""

    batch_size: int = 64
    """Queued rows that trigger a write from `log_decisions`; 1 writes every call at once."""
    retry_interval_s: float = 1.0
    """Seconds after a failed write before `log_decisions` tries again; `flush()` always tries."""
    flush_interval_s: float | None = None
    """Seconds between writes of a background thread; None writes in the caller's thread."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.retry_interval_s < 0:
            raise ConfigError(f"retry_interval_s must be >= 0, got {self.retry_interval_s}.")
        if self.flush_interval_s is not None and self.flush_interval_s <= 0:
            raise ConfigError(
                f"flush_interval_s must be > 0 seconds or None (write in the caller's thread), "
                f"got {self.flush_interval_s}."
            )


class BufferedTraceWriter:
    """Trace store wrapper with a retry queue; it never raises a store failure to the caller.

    Misuse still raises `ConfigError` (rows of another run, an unknown run id), because retrying
    cannot fix it. Thread-safe: one lock guards the queue and another orders the writes, so
    callers keep queueing while a batch is being written.

    Args:
        store: The trace store to write to.
        policy: Batch size and retry interval; defaults to `WritePolicy()`.
    """

    def __init__(self, store: TraceStore, *, policy: WritePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or WritePolicy()
        self.failed_writes = 0
        """Write attempts that failed; each failure is logged with the ids involved."""
        self.written = 0
        """Rows the store committed (duplicates it ignored included)."""
        self._queue: list[DecisionRow] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._retry_after = 0.0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Rows queued but not yet committed."""
        with self._lock:
            return len(self._queue)

    def log_decisions(self, run_id: str, rows: Sequence[DecisionRow]) -> int:
        """Queue rows and write the queue when it reaches the batch size; return the rows queued.

        Raises:
            ConfigError: A row belongs to another run.
        """
        foreign = sorted({row.run_id for row in rows if row.run_id != run_id})
        if foreign:
            raise ConfigError(
                f"Rows of run(s) {foreign} passed to log_decisions for run {run_id!r}; "
                "log each run's rows under its own run id."
            )
        with self._lock:
            self._queue.extend(rows)
            due = len(self._queue) >= self.policy.batch_size and time.monotonic() >= self._retry_after
        if self.policy.flush_interval_s is not None:
            self._start_thread()
            if due:
                self._wake.set()
        elif due:
            self._write_queue()
        return len(rows)

    def flush(self) -> int:
        """Try to write every queued row now; return the rows still pending afterwards."""
        self._write_queue()
        return self.pending

    def close(self) -> None:
        """Flush the queue.

        Raises:
            SpecAgentRuntimeError: Rows are still pending after the final flush; the message
                names how many and of which runs, and they stay queued for another `flush()`.
        """
        self._stopped.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        left = self.flush()
        if left:
            runs = sorted({row.run_id for row in self._queue})
            raise SpecAgentRuntimeError(
                f"{left} decision rows of run(s) {runs} could not be written to the trace store "
                f"after {self.failed_writes} failed attempts; fix the store (see the logged "
                "errors) and call flush() again before the process exits."
            )

    def done_example_ids(self, run_id: str, config: str) -> set[str]:
        """Return the example ids stored or queued for a configuration of a run."""
        with self._lock:
            queued = {row.example_id for row in self._queue if (row.run_id, row.config) == (run_id, config)}
        try:
            stored = self.store.done_example_ids(run_id, config)
        except SpecAgentRuntimeError as error:
            logger.error("Failed to read stored example ids of run %s: %s", run_id, error)
            stored = set()
        return stored | queued

    def __getattr__(self, name: str) -> Any:
        # Reads and run bookkeeping (start_run, finish_run, decisions, ...) go to the store as is.
        return getattr(self.store, name)

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._write_periodically, name="spec-agent-trace-writer",
                                            daemon=True)
            self._thread.start()

    def _write_periodically(self) -> None:
        assert self.policy.flush_interval_s is not None
        while not self._stopped.is_set():
            self._wake.wait(self.policy.flush_interval_s)
            self._wake.clear()
            if time.monotonic() < self._retry_after:
                continue
            try:
                self._write_queue()
            except ConfigError as error:
                # Retrying cannot fix misuse; the rows stay queued and `flush()` raises the error.
                logger.error("Background trace write stopped: %s", error)
                self._retry_after = time.monotonic() + self.policy.retry_interval_s

    def _write_queue(self) -> None:
        # The queue lock is held only to copy and trim the queue, never during a database write.
        with self._write_lock:
            with self._lock:
                queued = list(self._queue)
            for run_id in list(dict.fromkeys(row.run_id for row in queued)):
                batch = [row for row in queued if row.run_id == run_id]
                if not self._write_batch(run_id, batch):
                    self._retry_after = time.monotonic() + self.policy.retry_interval_s
                    return
                committed = {id(row) for row in batch}
                with self._lock:
                    self._queue = [row for row in self._queue if id(row) not in committed]
                    self.written += len(batch)

    def _write_batch(self, run_id: str, batch: list[DecisionRow]) -> bool:
        try:
            self.store.log_decisions(run_id, batch)
        except ConfigError:
            raise
        except (SpecAgentRuntimeError, OSError) as error:
            self.failed_writes += 1
            examples = sorted({f"{row.config}/{row.example_id}" for row in batch})
            shown = ", ".join(examples[:5]) + (f" and {len(examples) - 5} more" if len(examples) > 5 else "")
            logger.error(
                "Failed to write %s decision rows of run %s (%s); they stay queued for retry "
                "(failed writes so far: %s): %s",
                len(batch), run_id, shown, self.failed_writes, error,
            )
            return False
        return True
