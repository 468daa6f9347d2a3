"""Create the runs table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from sealdump.history.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``runs`` and its indexes."""
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("scheduled_for", UtcDateTime(), nullable=True),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("backup_id", sa.String(64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_runs_server_job_started", "runs", ["server", "job", "started_at"])
    op.create_index("ix_runs_backup_id", "runs", ["backup_id"])


def downgrade() -> None:
    """Drop ``runs``."""
    op.drop_index("ix_runs_backup_id", "runs")
    op.drop_index("ix_runs_server_job_started", "runs")
    op.drop_table("runs")
