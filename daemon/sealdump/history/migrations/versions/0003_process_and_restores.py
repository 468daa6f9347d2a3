"""Runs record their process and heartbeat (to close dead ones), and restores' target and mode.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from sealdump.history.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``pid``, ``process_start``, ``heartbeat_at``, ``target``, ``mode``; index status."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("process_start", sa.String(64), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("target", sa.Text(), nullable=True))
        batch.add_column(sa.Column("mode", sa.String(16), nullable=True))
    op.create_index("ix_runs_status", "runs", ["status"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_runs_status", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in ("mode", "target", "heartbeat_at", "process_start", "pid"):
            batch.drop_column(name)
