"""Objects from a store (revision 0006, after 0005, 2026-12-05): a job file's `source_key`, the store's checksum of
the object it was listed as (sha256 of URL, size and ETag; `jobs.storage.source_key`), so that a resubmitted
bucket prefix reuses the rows of unchanged objects without downloading them to hash them."""

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0006", "0005"
branch_labels = depends_on = None


def upgrade() -> None:
    op.add_column("job_files", sa.Column("source_key", sa.String(64), nullable=True))
    op.create_index("ix_job_files_source_key", "job_files", ["source_key"])


def downgrade() -> None:
    op.drop_index("ix_job_files_source_key", table_name="job_files")
    op.drop_column("job_files", "source_key")
