"""The trace store: a small `TraceStore` interface and its SQLAlchemy implementation.

Every benchmark decision becomes one `DecisionRow`, keyed by (run, configuration, example). Writes
are insert-or-ignore on that key, so a retried batch never duplicates a row, and every call commits
its own transaction, so a failure later in a run loses nothing already written. One call writes its
whole batch with one `executemany` per table: the decision rows and their normalised proposals and
model calls.

SQLite (the default) runs in WAL mode, and write transactions start with `BEGIN IMMEDIATE`, so
concurrent writers queue on the busy timeout instead of failing when a read snapshot goes stale.
PostgreSQL works through any SQLAlchemy URL such as `postgresql+psycopg://user@host/db`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from sqlalchemy import Engine, Table, create_engine, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spec_agent.actions import Action
from spec_agent.db._normalise import call_values, proposal_values
from spec_agent.db.migrate import prepare_schema
from spec_agent.db.schema import (
    SCHEMA_VERSION,
    DecisionRecord,
    ModelCallRecord,
    ProposalRecord,
    RunRecord,
    SchemaVersionRecord,
)
from spec_agent.decision import Decision, DecisionKind
from spec_agent.errors import ConfigError, SpecAgentRuntimeError

logger = logging.getLogger(__name__)

RunStatus = Literal["running", "finished", "failed"]
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for a lock held by another process before failing."""

_UNIQUE_KEY = ("run_id", "config", "example_id")
_IN_CHUNK = 500
"""Values per SQL `IN (...)` list, well below SQLite's limit on bound parameters."""


@dataclass(frozen=True, kw_only=True)
class DecisionRow:
    """One decision of one configuration on one example, as stored in the `decisions` table."""

    run_id: str
    config: str
    """Benchmark configuration, "A" to "E"."""
    example_id: str
    source: str
    scenario: str
    gold_kind: str
    decision: DecisionKind
    gold: dict[str, Any]
    """Gold action as `Action.to_dict()` output."""
    kind_correct: bool
    full_correct: bool
    proposals: list[dict[str, Any]] = field(default_factory=list)
    """Proposals as `Proposal.to_dict()` output, in sampling order."""
    scores: list[float | None] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    chosen: int | None = None
    fallback: dict[str, Any] | None = None
    threshold: float | None = None
    final_action: dict[str, Any] | None = None
    final_kind: str | None = None
    thread_id: str | None = None
    """LangGraph thread id of the graph run, to join with checkpoints."""
    checkpoint_id: str | None = None
    """LangGraph checkpoint id the decision was made from, when a checkpointer was used."""
    step: int | None = None
    node: str | None = None
    """Name of the graph node that made the decision."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_by_role: dict[str, dict[str, int]] = field(default_factory=dict)
    """Token counts per role: `{"cheap": {"prompt": n, "completion": m}, ...}`."""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Model calls as `ModelCall.to_dict()` output, fallbacks included."""
    cost: Decimal = Decimal(0)
    """Per-call cost, relative to one strong-model call."""
    flops: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    """Error message of a failed example, else None. Failed examples are kept as rows."""
    created_at: datetime | None = None
    """Set by the store when the row is written."""

    @classmethod
    def from_decision(
        cls,
        decision: Decision,
        *,
        run_id: str,
        config: str,
        example_id: str,
        source: str,
        scenario: str,
        gold: Action,
        kind_correct: bool,
        full_correct: bool,
        thread_id: str | None = None,
        checkpoint_id: str | None = None,
        step: int | None = None,
        node: str | None = None,
        error: str | None = None,
    ) -> DecisionRow:
        """Build a row from a decision, taking tokens, cost, FLOPs and latency from it."""
        action = decision.action
        prompt, completion, by_role = _count_tokens(decision)
        return cls(
            run_id=run_id,
            config=config,
            example_id=example_id,
            source=source,
            scenario=scenario,
            gold_kind=gold.kind,
            decision=decision.decision,
            gold=gold.to_dict(),
            kind_correct=kind_correct,
            full_correct=full_correct,
            proposals=decision.proposal_dicts,
            scores=list(decision.scores),
            verdicts=list(decision.verdicts),
            chosen=decision.chosen,
            fallback=decision.fallback.to_dict() if decision.fallback else None,
            threshold=decision.threshold,
            final_action=action.to_dict() if action else None,
            final_kind=action.kind if action else None,
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            step=step,
            node=node,
            prompt_tokens=prompt,
            completion_tokens=completion,
            tokens_by_role=by_role,
            calls=decision.call_dicts,
            cost=Decimal(decision.cost),
            flops=float(decision.flops),
            latency_s=float(decision.latency_s),
            error=error,
        )


def _count_tokens(decision: Decision) -> tuple[int, int, dict[str, dict[str, int]]]:
    # A backend that reports no usage counts as zero tokens rather than failing the row.
    by_role: dict[str, dict[str, int]] = {}
    for call in decision.calls:
        counts = by_role.setdefault(call.role, {"prompt": 0, "completion": 0})
        counts["prompt"] += call.prompt_tokens or 0
        counts["completion"] += call.completion_tokens or 0
    prompt = sum(counts["prompt"] for counts in by_role.values())
    completion = sum(counts["completion"] for counts in by_role.values())
    return prompt, completion, by_role


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """Metadata of one benchmark run."""

    run_id: str
    name: str
    status: RunStatus
    config: dict[str, Any]
    """Run settings: dataset path and hash, models, thresholds, seed, limit, git commit and
    package versions."""
    created_at: datetime
    finished_at: datetime | None
    schema_version: int


@runtime_checkable
class TraceStore(Protocol):
    """Storage of benchmark runs and their decision rows."""

    def start_run(self, *, name: str, config: dict[str, Any]) -> str:
        """Create a run with status "running" and return its id."""
        ...

    def log_decisions(self, run_id: str, rows: Sequence[DecisionRow]) -> int:
        """Store rows in one transaction, skipping rows whose key exists.

        Returns:
            The number of rows that were new.
        """
        ...

    def finish_run(self, run_id: str, status: RunStatus) -> None:
        """Set the final status and finish time of a run."""
        ...

    def resume_run(self, run_id: str, *, config: dict[str, Any]) -> None:
        """Set a stored run running again, with `config` in place of its settings."""
        ...

    def decisions(self, run_id: str, config: str | None = None) -> list[DecisionRow]:
        """Return the rows of a run, optionally of one configuration only."""
        ...

    def runs(self) -> list[RunInfo]:
        """Return every run, oldest first."""
        ...

    def latest_run(self) -> RunInfo | None:
        """Return the most recently started run, or None when there is none."""
        ...

    def done_example_ids(self, run_id: str, config: str) -> set[str]:
        """Return the ids of examples already stored for a configuration of a run."""
        ...


class SqlTraceStore:
    """Trace store over any SQLAlchemy database, with WAL mode and a busy timeout on SQLite."""

    def __init__(self, url: str, *, echo: bool = False, upgrade: bool = True) -> None:
        """Open the database at `url`, creating or upgrading its tables.

        Args:
            url: SQLAlchemy URL, e.g. `sqlite:///runs/traces.sqlite` or
                `postgresql+psycopg://user@127.0.0.1:5432/traces`; a SQLite file's folder is
                created when missing.
            echo: Log every SQL statement (SQLAlchemy's `echo`).
            upgrade: Migrate a store written by an older spec-agent to the current schema
                (default). When False, such a store raises an error that names the upgrade command.

        Raises:
            SpecAgentRuntimeError: The database cannot be opened, needs an upgrade that `upgrade`
                forbids, or records a schema version this spec-agent cannot read.
        """
        self.url = url
        self._engine = _create_engine(url, echo=echo)
        # Reads begin deferred; writes take SQLite's write lock up front (see `_begin_sqlite`).
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            with self._write_engine.begin() as connection:
                self.upgraded_from = prepare_schema(connection, url=url, upgrade=upgrade)
            self._check_schema_version()
        except SQLAlchemyError as error:
            self._engine.dispose()
            raise SpecAgentRuntimeError(
                f"Failed to open trace store {url!r}: {error}. Check the URL and that its folder "
                "is writable."
            ) from error

    def _check_schema_version(self) -> None:
        with self._sessions() as session:
            stored = session.scalars(select(SchemaVersionRecord.version)).all()
        if stored != [SCHEMA_VERSION]:
            raise SpecAgentRuntimeError(
                f"Trace store {self.url!r} has schema version {stored}, but this spec-agent reads "
                f"version {SCHEMA_VERSION}; use a new database file or the matching spec-agent."
            )

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def start_run(self, *, name: str, config: dict[str, Any]) -> str:
        """Create a run with status "running" and return its id (a UUID4 string)."""
        run_id = str(uuid.uuid4())
        record = RunRecord(
            run_id=run_id,
            created_at=_now(),
            finished_at=None,
            status="running",
            name=name,
            config_json=_dumps(config),
            schema_version=SCHEMA_VERSION,
        )
        with self._write(f"start run {name!r}") as session:
            session.add(record)
        logger.info("Started run %s (%s)", run_id, name)
        return run_id

    def log_decisions(self, run_id: str, rows: Sequence[DecisionRow]) -> int:
        """Store rows in one transaction, skipping rows whose key exists; return how many were new.

        Raises:
            ConfigError: The run does not exist or a row belongs to another run.
            SpecAgentRuntimeError: The database write failed; nothing of this batch is stored.
        """
        foreign = sorted({row.run_id for row in rows if row.run_id != run_id})
        if foreign:
            raise ConfigError(
                f"Rows of run(s) {foreign} passed to log_decisions for run {run_id!r}; "
                "log each run's rows under its own run id."
            )
        with self._write(f"log decisions of run {run_id!r}") as session:
            self._require_run(session, run_id)
            fresh = _new_rows(session, run_id, rows)
            if fresh:
                _insert_rows(session, self._engine.dialect.name, fresh)
        logger.debug("Stored %s new decision rows of run %s", len(fresh), run_id)
        if len(fresh) < len(rows):
            skipped = len(rows) - len(fresh)
            logger.debug("Skipped %s rows of run %s already stored", skipped, run_id)
        return len(fresh)

    def finish_run(self, run_id: str, status: RunStatus) -> None:
        """Set the final status ("finished" or "failed") and finish time of a run.

        Raises:
            ConfigError: The status is not final or the run does not exist.
        """
        if status not in ("finished", "failed"):
            raise ConfigError(f"Invalid final run status {status!r}; use 'finished' or 'failed'.")
        with self._write(f"finish run {run_id!r}") as session:
            record = self._require_run(session, run_id)
            record.status = status
            record.finished_at = _now()
        logger.info("Run %s %s", run_id, status)

    def resume_run(self, run_id: str, *, config: dict[str, Any]) -> None:
        """Set a stored run's status back to "running" and replace its settings with `config`.

        Raises:
            ConfigError: The run does not exist.
        """
        with self._write(f"resume run {run_id!r}") as session:
            record = self._require_run(session, run_id)
            record.status = "running"
            record.finished_at = None
            record.config_json = _dumps(config)
        logger.info("Resumed run %s", run_id)

    def decisions(self, run_id: str, config: str | None = None) -> list[DecisionRow]:
        """Return the rows of a run in insertion order, optionally of one configuration only."""
        # A Core select skips ORM identity tracking, which dominates the time on large runs.
        table = DecisionRecord.__table__
        query = select(table).where(table.c.run_id == run_id)
        if config is not None:
            query = query.where(table.c.config == config)
        with self._sessions() as session:
            records = session.execute(query.order_by(table.c.id)).all()
        return [_to_row(record) for record in records]

    def lean_decisions(self, run_id: str) -> list[DecisionRow]:
        """Return a run's rows with the fields replay reads only, built from the child tables.

        Each row has its decision, gold kind and correctness. `proposals` and `scores` contain the
        first proposal only, its action reduced to the kind, with its confidence and kind
        probability. `calls` contains each call's role, and `tokens_by_role` the token counts.
        Skipping the JSON columns makes this several times faster than `decisions` on large runs.
        """
        decisions = DecisionRecord.__table__
        proposals = ProposalRecord.__table__
        calls = ModelCallRecord.__table__
        first = (
            select(proposals.c.config, proposals.c.example_id, proposals.c.valid, proposals.c.kind,
                   proposals.c.score, proposals.c.confidence, proposals.c.kind_probability)
            .where(proposals.c.run_id == run_id, proposals.c.source == "proposal",
                   proposals.c.position == 0)
        )
        roles = select(
            calls.c.config, calls.c.example_id, calls.c.role, func.count(),
            func.coalesce(func.sum(calls.c.prompt_tokens), 0),
            func.coalesce(func.sum(calls.c.completion_tokens), 0),
        ).where(calls.c.run_id == run_id).group_by(calls.c.config, calls.c.example_id, calls.c.role)
        rows = select(
            decisions.c.config, decisions.c.example_id, decisions.c.gold_kind, decisions.c.decision,
            decisions.c.kind_correct, decisions.c.full_correct,
        ).where(decisions.c.run_id == run_id).order_by(decisions.c.id)
        with self._sessions() as session:
            first_by_key = {(row[0], row[1]): row[2:] for row in session.execute(first)}
            calls_by_key: dict[tuple[str, str], list[tuple[str, int, int, int]]] = {}
            for config, example_id, role, count, prompt, completion in session.execute(roles):
                calls_by_key.setdefault((config, example_id), []).append((role, count, prompt, completion))
            return [
                _lean_row(run_id, row, first_by_key.get(row[:2]), calls_by_key.get(row[:2], []))
                for row in session.execute(rows)
            ]

    def run(self, run_id: str) -> RunInfo:
        """Return one run.

        Raises:
            ConfigError: No run has this id.
        """
        with self._sessions() as session:
            record = session.get(RunRecord, run_id)
            if record is not None:
                return _to_info(record)
        latest = ", ".join(run.run_id for run in self.runs()[-5:]) or "none"
        raise ConfigError(f"Run {run_id!r} not found in the trace store; latest run ids: {latest}.")

    def decision_counts(self) -> dict[str, dict[str, int]]:
        """Return the number of stored decisions per run and configuration."""
        table = DecisionRecord.__table__
        query = select(table.c.run_id, table.c.config, func.count()).group_by(
            table.c.run_id, table.c.config
        )
        counts: dict[str, dict[str, int]] = {}
        with self._sessions() as session:
            for run_id, config, count in session.execute(query):
                counts.setdefault(run_id, {})[config] = count
        return counts

    def table_rows(self, table_name: str, run_id: str) -> list[dict[str, Any]]:
        """Return the raw rows of one table (`decisions`, `proposals`, `model_calls`) of a run.

        Raises:
            ConfigError: The table name is not one of the three.
        """
        tables: dict[str, Table] = {
            "decisions": DecisionRecord.__table__,  # type: ignore[dict-item]
            "proposals": ProposalRecord.__table__,  # type: ignore[dict-item]
            "model_calls": ModelCallRecord.__table__,  # type: ignore[dict-item]
        }
        table = tables.get(table_name)
        if table is None:
            raise ConfigError(f"Unknown trace table {table_name!r}; choose from {sorted(tables)}.")
        order = list(table.primary_key.columns)
        query = select(table).where(table.c.run_id == run_id).order_by(*order)
        with self._sessions() as session:
            return [dict(row._mapping) for row in session.execute(query)]

    def runs(self) -> list[RunInfo]:
        """Return every run, oldest first."""
        query = select(RunRecord).order_by(RunRecord.created_at)
        with self._sessions() as session:
            return [_to_info(record) for record in session.scalars(query).all()]

    def latest_run(self) -> RunInfo | None:
        """Return the most recently started run, or None when the store is empty."""
        query = select(RunRecord).order_by(RunRecord.created_at.desc()).limit(1)
        with self._sessions() as session:
            record = session.scalars(query).first()
        return _to_info(record) if record else None

    def done_example_ids(self, run_id: str, config: str) -> set[str]:
        """Return the ids of examples already stored for a configuration, failed ones included."""
        query = select(DecisionRecord.example_id).where(
            DecisionRecord.run_id == run_id, DecisionRecord.config == config
        )
        with self._sessions() as session:
            return set(session.scalars(query).all())

    def _write(self, action: str) -> _WriteTransaction:
        return _WriteTransaction(self._write_sessions, action)

    @staticmethod
    def _require_run(session: Session, run_id: str) -> RunRecord:
        record = session.get(RunRecord, run_id)
        if record is None:
            raise ConfigError(f"Run {run_id!r} not found in the trace store; call start_run first.")
        return record


class _WriteTransaction:
    """One committed session; database errors become `SpecAgentRuntimeError`."""

    def __init__(self, sessions: sessionmaker[Session], action: str) -> None:
        self._context = sessions.begin()
        self._action = action

    def __enter__(self) -> Session:
        return self._context.__enter__()

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        try:
            self._context.__exit__(kind, error, traceback)
        except SQLAlchemyError as commit_error:
            raise SpecAgentRuntimeError(f"Failed to {self._action}: {commit_error}") from commit_error
        if isinstance(error, SQLAlchemyError):
            raise SpecAgentRuntimeError(f"Failed to {self._action}: {error}") from error
        return False


def _create_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo)
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(connection: Any, _record: Any) -> None:
    # WAL lets readers (a report, a replay) run while the benchmark writes. The busy timeout makes
    # a second writer wait for the lock instead of failing at once.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL skips the fsync on each commit: a killed process loses nothing committed,
    # and only a power loss can drop the latest commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Stop the sqlite3 module from issuing its own BEGIN, so that `_begin_sqlite` chooses the kind.
    connection.isolation_level = None


def _begin_sqlite(connection: Any) -> None:
    # A deferred transaction that reads, then writes, fails at once with SQLITE_BUSY when another
    # process committed in between, because the busy timeout does not apply to a stale snapshot.
    # Write transactions therefore take the write lock when they begin.
    mode = connection.get_execution_options().get("sqlite_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _insert_ignoring_duplicates(dialect: str, table: Any, key: Sequence[str]) -> Any:
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        # Other databases rely on the key filter in `_new_rows`, which runs in the same transaction.
        return insert(table)
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(key))


def _insert_rows(session: Session, dialect: str, rows: Sequence[DecisionRow]) -> None:
    decisions, proposals, calls = [], [], []
    for row in rows:
        decisions.append(_to_values(row))
        key = {"run_id": row.run_id, "config": row.config, "example_id": row.example_id}
        proposals += proposal_values(
            key,
            proposals=row.proposals,
            scores=row.scores,
            verdicts=row.verdicts,
            chosen=row.chosen,
            fallback=row.fallback,
        )
        calls += call_values(key, row.calls)
    connection = session.connection()
    connection.execute(
        _insert_ignoring_duplicates(dialect, DecisionRecord.__table__, _UNIQUE_KEY), decisions
    )
    for table, values in ((ProposalRecord.__table__, proposals), (ModelCallRecord.__table__, calls)):
        if values:
            primary_key = [column.name for column in table.primary_key.columns]
            connection.execute(_insert_ignoring_duplicates(dialect, table, primary_key), values)


def _new_rows(session: Session, run_id: str, rows: Sequence[DecisionRow]) -> list[DecisionRow]:
    # Only keys of this batch are looked up, so a write costs the same early and late in a run.
    example_ids = sorted({row.example_id for row in rows})
    seen: set[tuple[str, str]] = set()
    for start in range(0, len(example_ids), _IN_CHUNK):
        query = select(DecisionRecord.config, DecisionRecord.example_id).where(
            DecisionRecord.run_id == run_id,
            DecisionRecord.example_id.in_(example_ids[start : start + _IN_CHUNK]),
        )
        seen.update((config, example_id) for config, example_id in session.execute(query))
    fresh = []
    for row in rows:
        key = (row.config, row.example_id)
        if key not in seen:
            seen.add(key)
            fresh.append(row)
    return fresh


def _to_values(row: DecisionRow) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "config": row.config,
        "example_id": row.example_id,
        "source": row.source,
        "scenario": row.scenario,
        "gold_kind": row.gold_kind,
        "thread_id": row.thread_id,
        "checkpoint_id": row.checkpoint_id,
        "step": row.step,
        "node": row.node,
        "decision": row.decision,
        "proposals_json": _dumps(row.proposals),
        "scores_json": _dumps(row.scores),
        "verdicts_json": _dumps(row.verdicts),
        "chosen": row.chosen,
        "fallback_json": _dumps_optional(row.fallback),
        "threshold": row.threshold,
        "final_action_json": _dumps_optional(row.final_action),
        "final_kind": row.final_kind,
        "gold_json": _dumps(row.gold),
        "kind_correct": bool(row.kind_correct),
        "full_correct": bool(row.full_correct),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "tokens_by_role_json": _dumps(row.tokens_by_role),
        "calls_json": _dumps(row.calls),
        "cost": Decimal(row.cost),
        "flops": float(row.flops),
        "latency_s": float(row.latency_s),
        "error": row.error,
        "created_at": row.created_at or _now(),
    }


def _to_row(record: Any) -> DecisionRow:
    return DecisionRow(
        run_id=record.run_id,
        config=record.config,
        example_id=record.example_id,
        source=record.source,
        scenario=record.scenario,
        gold_kind=record.gold_kind,
        decision=record.decision,  # type: ignore[arg-type]
        gold=json.loads(record.gold_json),
        kind_correct=bool(record.kind_correct),
        full_correct=bool(record.full_correct),
        proposals=json.loads(record.proposals_json),
        scores=json.loads(record.scores_json),
        verdicts=json.loads(record.verdicts_json),
        chosen=record.chosen,
        fallback=_loads_optional(record.fallback_json),
        threshold=record.threshold,
        final_action=_loads_optional(record.final_action_json),
        final_kind=record.final_kind,
        thread_id=record.thread_id,
        checkpoint_id=record.checkpoint_id,
        step=record.step,
        node=record.node,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        tokens_by_role=json.loads(record.tokens_by_role_json),
        calls=json.loads(record.calls_json),
        cost=Decimal(record.cost),
        flops=record.flops,
        latency_s=record.latency_s,
        error=record.error,
        created_at=_aware(record.created_at),
    )


def _lean_row(
    run_id: str, row: Any, first: Any, calls: list[tuple[str, int, int, int]]
) -> DecisionRow:
    config, example_id, gold_kind, decision, kind_correct, full_correct = row
    proposals: list[dict[str, Any]] = []
    scores: list[float | None] = []
    if first is not None:
        valid, kind, score, confidence, kind_probability = first
        proposals.append({"action": {"kind": kind} if valid else None, "confidence": confidence,
                          "kind_probability": kind_probability})
        scores.append(score)
    return DecisionRow(
        run_id=run_id,
        config=config,
        example_id=example_id,
        source="",
        scenario="",
        gold_kind=gold_kind,
        decision=decision,
        gold={"kind": gold_kind},
        kind_correct=bool(kind_correct),
        full_correct=bool(full_correct),
        proposals=proposals,
        scores=scores,
        calls=[{"role": role} for role, count, _, _ in calls for _ in range(count)],
        tokens_by_role={
            role: {"prompt": int(prompt), "completion": int(completion)}
            for role, _, prompt, completion in calls
        },
    )


def _to_info(record: RunRecord) -> RunInfo:
    return RunInfo(
        run_id=record.run_id,
        name=record.name,
        status=record.status,  # type: ignore[arg-type]
        config=json.loads(record.config_json),
        created_at=_aware(record.created_at),
        finished_at=_aware(record.finished_at) if record.finished_at else None,
        schema_version=record.schema_version,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite drops the time zone; every timestamp the store writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _dumps_optional(value: Any) -> str | None:
    return None if value is None else _dumps(value)


def _loads_optional(text: str | None) -> Any:
    return None if text is None else json.loads(text)
