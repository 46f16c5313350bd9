"""Add checkpoint and node columns and the normalised `proposals` and `model_calls` tables.

Existing decision rows are copied into the new tables from their JSON columns, and the recorded
schema version becomes 2.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from spec_agent.db._normalise import call_values, proposal_values

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = ["run_id", "config", "example_id"]
_BACKFILL_CHUNK = 2000


def upgrade() -> None:
    """Add the columns and tables, then backfill them from the stored JSON."""
    op.add_column("decisions", sa.Column("checkpoint_id", sa.Text, nullable=True))
    op.add_column("decisions", sa.Column("node", sa.String(128), nullable=True))
    op.create_index("ix_decisions_thread_checkpoint", "decisions", ["thread_id", "checkpoint_id"])
    proposals = op.create_table(
        "proposals",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("config", sa.String(8), primary_key=True),
        sa.Column("example_id", sa.Text, primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("valid", sa.Boolean, nullable=False),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("verdict", sa.String(8), nullable=True),
        sa.Column("chosen", sa.Boolean, nullable=False),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.ForeignKeyConstraint(
            _KEY, [f"decisions.{column}" for column in _KEY], name="fk_proposals_decision"
        ),
        sa.CheckConstraint("source IN ('proposal', 'fallback')", name="ck_proposals_source"),
    )
    calls = op.create_table(
        "model_calls",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("config", sa.String(8), primary_key=True),
        sa.Column("example_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=True),
        sa.Column("reused_tokens", sa.Integer, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.ForeignKeyConstraint(
            _KEY, [f"decisions.{column}" for column in _KEY], name="fk_model_calls_decision"
        ),
    )
    op.create_index("ix_model_calls_run_role", "model_calls", ["run_id", "role"])
    _backfill(proposals, calls)
    op.execute(sa.text("UPDATE schema_version SET version = 2"))


def _backfill(proposals: sa.Table, calls: sa.Table) -> None:
    bind = op.get_bind()
    query = sa.text(
        "SELECT run_id, config, example_id, proposals_json, scores_json, verdicts_json, chosen, "
        "fallback_json, calls_json FROM decisions ORDER BY id"
    )
    result = bind.execute(query)
    while chunk := result.fetchmany(_BACKFILL_CHUNK):
        proposal_rows, call_rows = [], []
        for row in chunk:
            key = {"run_id": row.run_id, "config": row.config, "example_id": row.example_id}
            proposal_rows += proposal_values(
                key,
                proposals=json.loads(row.proposals_json),
                scores=json.loads(row.scores_json),
                verdicts=json.loads(row.verdicts_json),
                chosen=row.chosen,
                fallback=json.loads(row.fallback_json) if row.fallback_json else None,
            )
            call_rows += call_values(key, json.loads(row.calls_json))
        if proposal_rows:
            # `proposal_values` is today's code, which may fill columns that later revisions add.
            columns = set(proposals.c.keys())
            proposal_rows = [{name: value for name, value in row.items() if name in columns} for row in proposal_rows]
            bind.execute(proposals.insert(), proposal_rows)
        if call_rows:
            bind.execute(calls.insert(), call_rows)


def downgrade() -> None:
    """Drop the child tables and the new columns; the JSON columns still hold everything."""
    op.drop_index("ix_model_calls_run_role", table_name="model_calls")
    op.drop_table("model_calls")
    op.drop_table("proposals")
    op.drop_index("ix_decisions_thread_checkpoint", table_name="decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("node")
        batch.drop_column("checkpoint_id")
    op.execute(sa.text("UPDATE schema_version SET version = 1"))
