"""Tables of the trace store: runs, one row per decision, its proposals and model calls.

JSON-valued columns (`*_json`) hold sorted JSON text so that any SQL database can store them and a
diff of two dumps stays readable. They are the record `DecisionRow` is rebuilt from. The
`proposals` and `model_calls` tables repeat the same facts one row per proposal and per call, so
that SQL queries (acceptance by kind, tokens by role) need no JSON functions. Costs are
`Numeric(12, 4)` and read back as `Decimal`; token counts are integers.

A decision row carries the LangGraph thread id, checkpoint id, step and node it was made at, so
traces join with a checkpointer's tables on (thread_id, checkpoint_id).

The Alembic scripts in `migrations/` create these tables; a test checks that they match this module.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 3
"""Version of the table layout below; bump it with every incompatible change."""

RUN_STATUSES = ("running", "finished", "failed")
DECISION_KINDS = ("accept", "escalate", "direct", "unverified")
PROPOSAL_SOURCES = ("proposal", "fallback")
DECISION_KEY = ("run_id", "config", "example_id")
"""Columns that identify one decision; the child tables reference them."""


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base of the trace store tables."""


class SchemaVersionRecord(Base):
    """The single row that records which table layout a database file uses."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRecord(Base):
    """One benchmark run: its settings, status and timestamps."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_one_of("status", RUN_STATUSES), name="ck_runs_status"),)

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text)
    config_json: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[int] = mapped_column(Integer)


class DecisionRecord(Base):
    """One decision of one configuration on one example, with its cost and correctness."""

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("run_id", "config", "example_id", name="uq_decisions_run_config_example"),
        Index("ix_decisions_run_config", "run_id", "config"),
        Index("ix_decisions_thread_checkpoint", "thread_id", "checkpoint_id"),
        CheckConstraint(_one_of("decision", DECISION_KINDS), name="ck_decisions_decision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("runs.run_id"))
    config: Mapped[str] = mapped_column(String(8))
    example_id: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    scenario: Mapped[str] = mapped_column(Text)
    gold_kind: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[str | None] = mapped_column(Text)
    """LangGraph thread id (`configurable.thread_id`) of the graph run that made the decision."""
    checkpoint_id: Mapped[str | None] = mapped_column(Text)
    """LangGraph checkpoint id the decision was made from, when a checkpointer was used."""
    step: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(128))
    """Name of the graph node that made the decision."""
    decision: Mapped[str] = mapped_column(String(16))
    proposals_json: Mapped[str] = mapped_column(Text)
    scores_json: Mapped[str] = mapped_column(Text)
    verdicts_json: Mapped[str] = mapped_column(Text)
    chosen: Mapped[int | None] = mapped_column(Integer)
    fallback_json: Mapped[str | None] = mapped_column(Text)
    threshold: Mapped[float | None] = mapped_column(Float)
    final_action_json: Mapped[str | None] = mapped_column(Text)
    final_kind: Mapped[str | None] = mapped_column(String(32))
    gold_json: Mapped[str] = mapped_column(Text)
    kind_correct: Mapped[bool] = mapped_column(Boolean)
    full_correct: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    tokens_by_role_json: Mapped[str] = mapped_column(Text)
    calls_json: Mapped[str] = mapped_column(Text)
    cost: Mapped[Decimal] = mapped_column(Numeric(12, 4, asdecimal=True))
    flops: Mapped[float] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProposalRecord(Base):
    """One proposal (or the fallback model's action) of one decision, with its score and verdict."""

    __tablename__ = "proposals"
    __table_args__ = (
        ForeignKeyConstraint(
            list(DECISION_KEY),
            [f"decisions.{column}" for column in DECISION_KEY],
            name="fk_proposals_decision",
        ),
        CheckConstraint(_one_of("source", PROPOSAL_SOURCES), name="ck_proposals_source"),
    )

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    config: Mapped[str] = mapped_column(String(8), primary_key=True)
    example_id: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    """`proposal` for the cheap model's candidates, `fallback` for the strong model's action."""
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Index in sampling order; 0 for the fallback."""
    valid: Mapped[bool] = mapped_column(Boolean)
    """True when the text parsed into an action."""
    kind: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(8))
    chosen: Mapped[bool] = mapped_column(Boolean)
    """True for the proposal whose action the agent took."""
    confidence: Mapped[float | None] = mapped_column(Float)
    kind_probability: Mapped[float | None] = mapped_column(Float)
    """The proposer's probability of the proposal's kind, when it reported one."""
    error: Mapped[str | None] = mapped_column(Text)


class ModelCallRecord(Base):
    """One model call of one decision: role, model and token usage."""

    __tablename__ = "model_calls"
    __table_args__ = (
        ForeignKeyConstraint(
            list(DECISION_KEY),
            [f"decisions.{column}" for column in DECISION_KEY],
            name="fk_model_calls_decision",
        ),
        Index("ix_model_calls_run_role", "run_id", "role"),
    )

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    config: Mapped[str] = mapped_column(String(8), primary_key=True)
    example_id: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Index of the call in the decision's call order."""
    role: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    reused_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean)
