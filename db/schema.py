"""Tables of the trace store: benchmark runs, one row per decision, and the schema version.

JSON-valued columns (`*_json`) hold sorted JSON text so that any SQL database can store them and a
diff of two dumps stays readable. Costs are `Numeric(12, 4)` and read back as `Decimal`; token
counts are integers.
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
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1
"""Version of the table layout below; bump it with every incompatible change."""

RUN_STATUSES = ("running", "finished", "failed")
DECISION_KINDS = ("accept", "escalate", "direct", "unverified")


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
    step: Mapped[int | None] = mapped_column(Integer)
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
