"""Tables: one row per job, one per image of a job (its file list), one per (job, image, model version) result,
one per model version, one per reviewed image of a job.

The unique key on predictions (job_id, path, model_version) is what makes result writes idempotent:
a chunk that a broker redelivers after a worker died inserts nothing twice (see `db.crud`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    FINISHED = (DONE, FAILED)


class ModelRecord(Base):
    """A model version seen by the batch path: its labels and card, so reports outlive the bundle folder."""

    __tablename__ = "models"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[list[str]] = mapped_column(JSONType)
    input_size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, default="")  # the bundle folder it was first loaded from
    card: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    folder: Mapped[str] = mapped_column(Text)
    recursive: Mapped[bool] = mapped_column(Boolean, default=False)
    model_dir: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(ForeignKey("models.version"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    total: Mapped[int] = mapped_column(Integer, default=0)  # images that will get a row
    done: Mapped[int] = mapped_column(Integer, default=0)  # rows present (results + errors)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    reused: Mapped[int] = mapped_column(Integer, default=0)  # rows copied from earlier jobs (same content + model)
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # files without an image extension: no row
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why the job failed: a chunk no worker could run (its images got error rows carrying the same reason).
    error: Mapped[str | None] = mapped_column(Text)
    # How often the workers queued the files of this stalled job again, and when last (jobs.heal).
    heals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    healed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobFile(Base):
    """Every image a job must give a row, recorded at submit: a lost queue is recovered from here (`--resume`)."""

    __tablename__ = "job_files"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # An object in a store: sha256 of its URL, size and ETag at listing (jobs.storage.source_key); the key under which
    # a later job reuses this file's row without downloading it. NULL for local files (reused by content_hash).
    source_key: Mapped[str | None] = mapped_column(String(64), index=True)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("job_id", "path", "model_version", name="uq_predictions_job_path_version"),
        # Report queries: lowest confidence first, per-label filters, and content-hash reuse across jobs.
        Index("ix_predictions_job_confidence", "job_id", "confidence"),
        Index("ix_predictions_job_label", "job_id", "label"),
        Index("ix_predictions_hash_version", "content_hash", "model_version"),
        Index("ix_predictions_job_unknown", "job_id", "unknown"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 hex; None when unreadable
    label: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[list[list[Any]] | None] = mapped_column(JSONType)  # [[label, confidence], ...]
    error: Mapped[str | None] = mapped_column(Text)
    # The model's "not a class I know" verdict and its score (model.unknown); score NULL: the bundle has none.
    unknown: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    unknown_score: Mapped[float | None] = mapped_column(Float)
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255))  # hostname:pid that computed it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """A person's verdict on one image of a job: the right label, or NULL for "none of these / skip".

    One row per (job, path): reviewing an image again updates its row. The prediction it judged is linked, so
    reports compare the model's label with the reviewer's without trusting a copy of it.
    """

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("job_id", "path", name="uq_reviews_job_path"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    prediction_id: Mapped[int] = mapped_column(BigId, ForeignKey("predictions.id", ondelete="CASCADE"))
    reviewed_label: Mapped[str | None] = mapped_column(Text)  # NULL: none of the model's labels fits
    reviewer: Mapped[str] = mapped_column(String(255))
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
