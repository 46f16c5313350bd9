"""Add the proposer's kind probability to the `proposals` table.

Earlier versions did not record it, so existing rows keep NULL, and the recorded schema version
becomes 3.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column."""
    op.add_column("proposals", sa.Column("kind_probability", sa.Float, nullable=True))
    op.execute(sa.text("UPDATE schema_version SET version = 3"))


def downgrade() -> None:
    """Drop the column; the decisions' JSON still holds the values."""
    with op.batch_alter_table("proposals") as batch:
        batch.drop_column("kind_probability")
    op.execute(sa.text("UPDATE schema_version SET version = 2"))
