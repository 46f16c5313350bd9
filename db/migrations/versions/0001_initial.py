"""Create the schema-1 tables: runs, decisions and the schema version.

Stores written before Alembic managed the schema have exactly these tables; opening one stamps
it with this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the schema-1 tables."""
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name="ck_runs_status"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("config", sa.String(8), nullable=False),
        sa.Column("example_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("scenario", sa.Text, nullable=False),
        sa.Column("gold_kind", sa.String(32), nullable=False),
        sa.Column("thread_id", sa.Text, nullable=True),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("proposals_json", sa.Text, nullable=False),
        sa.Column("scores_json", sa.Text, nullable=False),
        sa.Column("verdicts_json", sa.Text, nullable=False),
        sa.Column("chosen", sa.Integer, nullable=True),
        sa.Column("fallback_json", sa.Text, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("final_action_json", sa.Text, nullable=True),
        sa.Column("final_kind", sa.String(32), nullable=True),
        sa.Column("gold_json", sa.Text, nullable=False),
        sa.Column("kind_correct", sa.Boolean, nullable=False),
        sa.Column("full_correct", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("tokens_by_role_json", sa.Text, nullable=False),
        sa.Column("calls_json", sa.Text, nullable=False),
        sa.Column("cost", sa.Numeric(12, 4), nullable=False),
        sa.Column("flops", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "run_id", "config", "example_id", name="uq_decisions_run_config_example"
        ),
        sa.CheckConstraint(
            "decision IN ('accept', 'escalate', 'direct', 'unverified')",
            name="ck_decisions_decision",
        ),
    )
    op.create_index("ix_decisions_run_config", "decisions", ["run_id", "config"])
    op.execute(
        sa.text("INSERT INTO schema_version (version, applied_at) VALUES (1, CURRENT_TIMESTAMP)")
    )


def downgrade() -> None:
    """Drop every table."""
    op.drop_index("ix_decisions_run_config", table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("runs")
    op.drop_table("schema_version")
