"""Job file lists (for `submit --resume`) and the reason a job failed.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "job_files",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "path"),
    )


def downgrade() -> None:
    op.drop_table("job_files")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("error")
