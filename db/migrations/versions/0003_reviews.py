"""Reviews (revision 0003, after 0002, 2025-12-01): a person's label, or "none of these", for an image of a job,
linked to the prediction it judged."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"
branch_labels = depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("prediction_id", BigId, sa.ForeignKey("predictions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reviewed_label", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "path", name="uq_reviews_job_path"),
    )


def downgrade() -> None:
    op.drop_table("reviews")
