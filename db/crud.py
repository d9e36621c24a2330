"""Writes of the batch path. Keyword-only functions taking a Session; the caller commits (one commit per chunk).

Result rows are written with INSERT ... ON CONFLICT DO NOTHING on (job_id, path, model_version), so a chunk
that is delivered twice (a worker died after writing, before acknowledging) never duplicates a row, and
job counters are recounted from the rows rather than incremented, so they are right after any replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Job, JobFile, JobStatus, ModelRecord, Prediction, utcnow

# SQLite's default limit is 32766 host parameters per statement; PostgreSQL's is 65535. 14 columns a row.
_ROWS_PER_INSERT = 1000
_HASHES_PER_QUERY = 900
# What a reused row copies from the earlier one: the whole answer, the unknown verdict included (the same bytes and
# the same model version give the same answer).
REUSED_COLUMNS = ("label", "confidence", "top_k", "unknown", "unknown_score")


def _insert(session: Session, table):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def upsert_model(*, session: Session, version: str, labels: Sequence[str], input_size: int, source: str = "",
                 card: dict[str, Any] | None = None) -> None:
    """Record a model version once; later loads of the same weights change nothing."""
    stmt = _insert(session, ModelRecord).values(
        version=version, labels=list(labels), input_size=int(input_size), source=str(source), card=card or {},
        created_at=utcnow(),
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["version"]))


def create_job(*, session: Session, job_id: str, folder: str, recursive: bool, model_dir: str, model_version: str,
               total: int, skipped: int = 0) -> Job:
    job = Job(id=job_id, folder=folder, recursive=recursive, model_dir=model_dir, model_version=model_version,
              status=JobStatus.QUEUED, total=total, done=0, errors=0, reused=0, skipped=skipped, chunks=0,
              created_at=utcnow())
    session.add(job)
    session.flush()
    return job


def insert_predictions(*, session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk insert result rows; rows whose (job_id, path, model_version) exists already are left alone."""
    # Every row of one multi-row INSERT needs the same columns: rows that do not say get the columns' defaults.
    rows = [{"reused": False, "unknown": False, "unknown_score": None, "created_at": utcnow(), **r} for r in rows]
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        stmt = _insert(session, Prediction).values(rows[start:start + _ROWS_PER_INSERT])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["job_id", "path", "model_version"]))


def record_files(*, session: Session, job_id: str, items: Iterable[Sequence[str | None]]) -> None:
    """Record the job's images ([path, sha256] pairs, or [url, sha256, source_key] for objects in a store) once;
    recording them again changes nothing."""
    rows = [{"job_id": job_id, "path": str(item[0]), "content_hash": item[1],
             "source_key": item[2] if len(item) > 2 else None} for item in items]
    # 3 columns a row: far below either database's parameter limit at this size.
    for start in range(0, len(rows), _ROWS_PER_INSERT * 4):
        stmt = _insert(session, JobFile).values(rows[start:start + _ROWS_PER_INSERT * 4])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["job_id", "path"]))


def files_without_row(*, session: Session, job_id: str) -> list[list[str | None]]:
    """[path, sha256] of the job's images that have no result row yet, in path order."""
    has_row = exists().where(Prediction.job_id == JobFile.job_id, Prediction.path == JobFile.path)
    stmt = (select(JobFile.path, JobFile.content_hash).where(JobFile.job_id == job_id, ~has_row)
            .order_by(JobFile.path))
    return [[p, h] for p, h in session.execute(stmt)]


def count_files(*, session: Session, job_id: str) -> int:
    return int(session.scalar(select(func.count()).where(JobFile.job_id == job_id)) or 0)


def reusable_results(*, session: Session, model_version: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Stored successful results by content hash for this model version (any earlier job).

    Error rows are not reused: an error can be transient (a file still being written, a permission fixed
    since), and recomputing a failure costs only a decode attempt.
    """
    wanted = sorted({h for h in hashes if h})
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _HASHES_PER_QUERY):
        part = wanted[start:start + _HASHES_PER_QUERY]
        stmt = select(*(getattr(Prediction, c) for c in ("content_hash", *REUSED_COLUMNS))).where(
            Prediction.model_version == model_version,
            Prediction.error.is_(None),
            Prediction.content_hash.in_(part),
        )
        for h, *values in session.execute(stmt):
            found.setdefault(h, dict(zip(REUSED_COLUMNS, values, strict=True)))
    return found


def reusable_by_source(*, session: Session, model_version: str, keys: Iterable[str | None]
                       ) -> dict[str, dict[str, Any]]:
    """Stored successful results by source key (an object's URL, size and ETag at listing) for this model version:
    the row an earlier job wrote for the same unchanged object. Each comes with that row's content_hash."""
    wanted = sorted({k for k in keys if k})
    found: dict[str, dict[str, Any]] = {}
    columns = ("content_hash", *REUSED_COLUMNS)
    for start in range(0, len(wanted), _HASHES_PER_QUERY):
        stmt = (select(JobFile.source_key, *(getattr(Prediction, c) for c in columns))
                .join(Prediction, (Prediction.job_id == JobFile.job_id) & (Prediction.path == JobFile.path))
                .where(JobFile.source_key.in_(wanted[start:start + _HASHES_PER_QUERY]),
                       Prediction.model_version == model_version, Prediction.error.is_(None)))
        for key, *values in session.execute(stmt):
            found.setdefault(key, dict(zip(columns, values, strict=True)))
    return found


def refresh_job(*, session: Session, job_id: str, chunks: int | None = None, error: str | None = None) -> Job | None:
    """Recount the job's rows and set its status; the job row is locked so concurrent chunks serialise here.

    Call after inserting a chunk's rows, in the same transaction: on PostgreSQL the row lock makes the
    next chunk's count (a new snapshot under READ COMMITTED) see this chunk's committed rows. `error` is a reason
    for the job to fail (the first one given is kept). The finish rule: a job ends once every image has a row,
    `failed` when it was given a reason, `done` otherwise.
    """
    # FOR NO KEY UPDATE on PostgreSQL: the chunk's own inserts hold FOR KEY SHARE on this row (the foreign key), and
    # FOR UPDATE would wait for the other chunk's KEY SHARE while it waits for ours: a deadlock per pair of chunks.
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update(key_share=True)
                          .execution_options(populate_existing=True)).scalar_one_or_none()
    if job is None:
        return None
    done, errors, reused = session.execute(
        select(
            func.count(),
            func.count(Prediction.error),
            func.coalesce(func.sum(case((Prediction.reused, 1), else_=0)), 0),
        ).where(Prediction.job_id == job_id)
    ).one()
    now = utcnow()
    values: dict[str, Any] = {"done": int(done), "errors": int(errors), "reused": int(reused)}
    if chunks is not None:
        values["chunks"] = chunks
    if error is not None and job.error is None:
        values["error"] = error
    if job.status not in JobStatus.FINISHED:
        if done >= job.total:
            # A job whose chunk no worker could run ends failed (with the reason), even though every image has a row.
            values.update(status=JobStatus.FAILED if job.error or error else JobStatus.DONE, finished_at=now)
            values.setdefault("started_at", job.started_at or now)
        elif done > reused and job.status == JobStatus.QUEUED:
            values.update(status=JobStatus.RUNNING, started_at=now)
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    session.refresh(job)
    return job


def record_failure(*, session: Session, job_id: str, items: Sequence[Sequence[str | None]], error: str,
                   worker: str | None = None) -> Job | None:
    """Give each of `items` ([path, sha256]) that has no row an error row, put `error` on the job and recount it.

    Rows stored before are kept; the job ends `failed` once every image has a row. None for an unknown job.
    """
    model_version = session.scalar(select(Job.model_version).where(Job.id == job_id))
    if model_version is None:
        return None
    insert_predictions(session=session, rows=[
        {"job_id": job_id, "path": str(p), "model_version": model_version, "content_hash": h, "error": error,
         "worker": worker} for p, h in items
    ])
    return refresh_job(session=session, job_id=job_id, error=error)


def fail_job(*, session: Session, job_id: str, error: str, worker: str | None = None) -> Job | None:
    """End an unfinished job `failed` with `error` now: its files without a row get an error row with the reason.

    Images that have no row and are not in the job's file list cannot get one; the job ends failed all the same.
    """
    job = record_failure(session=session, job_id=job_id, items=files_without_row(session=session, job_id=job_id),
                         error=error, worker=worker)
    if job is not None and job.status not in JobStatus.FINISHED:
        now = utcnow()
        session.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.FAILED, finished_at=now, started_at=job.started_at or now))
        session.refresh(job)
    return job


def claim_heal(*, session: Session, job_id: str, heals: int) -> bool:
    """Count one heal of an unfinished job seen with `heals` heals; False when another worker counted it first.

    A compare-and-set on the job row: of any number of workers that saw the same stalled job, exactly one heals it.
    """
    claimed = session.execute(
        update(Job).where(Job.id == job_id, Job.heals == heals, Job.status.not_in(JobStatus.FINISHED))
        .values(heals=heals + 1, healed_at=utcnow())
    )
    return claimed.rowcount == 1


def mark_started(*, session: Session, job_id: str) -> None:
    """A worker began a chunk of this job: queued -> running (first one wins)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=utcnow())
    )
