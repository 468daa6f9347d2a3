"""Claims of scheduled runs, so daemons sharing a history run each once.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from sealdump.history.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``claims``."""
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_key", sa.String(200), nullable=False),
        sa.Column("fire_time", UtcDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("job_key", "fire_time", name="uq_claims_job_fire"),
    )


def downgrade() -> None:
    """Drop ``claims``."""
    op.drop_table("claims")
