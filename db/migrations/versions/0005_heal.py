"""Jobs that heal themselves (revision 0005, after 0004, 2026-12-01): how often the workers queued a stalled job's
files again (`heals`) and when they last did (`healed_at`), for `jobs.heal` and `worker.status`."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0005", "0004"
branch_labels = depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: rebuilding `jobs` on SQLite (foreign keys on) would cascade-delete every
    # prediction of every job.
    op.add_column("jobs", sa.Column("heals", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("healed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "healed_at")  # SQLite >= 3.35 drops a column in place
    op.drop_column("jobs", "heals")
