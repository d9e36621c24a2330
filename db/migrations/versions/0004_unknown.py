"""Unknown detection (revision 0004, after 0003, 2026-12-01): each prediction's "not a class I know" flag and its
score (model.unknown). Rows written before keep unknown = false and a NULL score: their model had no statistics."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"
branch_labels = depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: rebuilding `predictions` on SQLite (foreign keys on) would cascade-delete
    # every review.
    op.add_column("predictions", sa.Column("unknown", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("predictions", sa.Column("unknown_score", sa.Float(), nullable=True))
    op.create_index("ix_predictions_job_unknown", "predictions", ["job_id", "unknown"])


def downgrade() -> None:
    op.drop_index("ix_predictions_job_unknown", table_name="predictions")
    op.drop_column("predictions", "unknown_score")  # SQLite >= 3.35 drops a column in place
    op.drop_column("predictions", "unknown")
