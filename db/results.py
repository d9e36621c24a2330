"""Queries over stored results: pure functions of a Session returning plain dicts.

Used by `python -m db.report` (the CLI that prints them), the job service (`jobs`) and the demo: `find_job`,
`job_dict`, `job_dicts`, `stalled_jobs`, `list_jobs`, `job_summary`, `job_predictions`.

An image flagged unknown (the model's "not one of the classes I know", `model.unknown`) keeps its closest label
in `label`; the summary counts it apart from the labels, as what it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from db.models import Job, JobStatus, Prediction
from model.predict import UNCERTAIN_BELOW as LOW_CONFIDENCE_BELOW  # one definition, in the core

HISTOGRAM_BINS = 10


def _iso(dt: datetime | None) -> str | None:
    return _aware(dt).isoformat() if dt else None


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def job_dict(job: Job, *, unknown: int | None = None) -> dict[str, Any]:
    """A job as plain data: ids, counts, status, times and the fraction done.

    `unknown` (images flagged unknown) is counted from the rows, not kept on the job: `job_dicts` counts it.
    """
    end = _aware(job.finished_at) if job.finished_at else datetime.now(UTC)
    elapsed = (end - _aware(job.created_at)).total_seconds()
    return {
        "job_id": job.id,
        "folder": job.folder,
        "status": job.status,
        "model_version": job.model_version,
        "model_dir": job.model_dir,
        "total": job.total,
        "done": job.done,
        "errors": job.errors,
        "reused": job.reused,
        "unknown": unknown,
        "skipped": job.skipped,
        "chunks": job.chunks,
        "fraction": job.done / job.total if job.total else 1.0,
        "finished": job.status in JobStatus.FINISHED,
        "error": job.error,  # why a failed job failed
        "heals": job.heals or 0,  # how often the workers queued its files again (jobs.heal)
        "healed_at": _iso(job.healed_at),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "elapsed_s": round(elapsed, 3),
    }


def find_job(session: Session, job_id: str) -> Job:
    """The job with this id, or the only one whose id starts with it; LookupError otherwise."""
    job = session.get(Job, job_id)
    if job is not None:
        return job
    matches = session.scalars(select(Job).where(Job.id.startswith(job_id, autoescape=True)).limit(2)).all()
    if len(matches) == 1:
        return matches[0]
    raise LookupError(f"no job with id {job_id!r}" if not matches else f"job id prefix {job_id!r} is ambiguous")


def unknown_counts(session: Session, job_ids: list[str]) -> dict[str, int]:
    """Images flagged unknown per job (jobs without any are absent); one query on (job_id, unknown)."""
    if not job_ids:
        return {}
    stmt = (select(Prediction.job_id, func.count()).where(Prediction.job_id.in_(job_ids), Prediction.unknown)
            .group_by(Prediction.job_id))
    return {job_id: int(n) for job_id, n in session.execute(stmt)}


def job_dicts(session: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """`job_dict` of each job, with its count of unknown images."""
    counts = unknown_counts(session, [j.id for j in jobs])
    return [job_dict(j, unknown=counts.get(j.id, 0)) for j in jobs]


def stalled_jobs(session: Session, *, quiet_since: datetime) -> list[dict[str, Any]]:
    """Unfinished jobs with no new row, no heal and no submit since `quiet_since`, oldest first (`jobs.heal`)."""
    last_row = select(func.max(Prediction.created_at)).where(Prediction.job_id == Job.id).scalar_subquery()
    jobs = session.scalars(
        select(Job).where(Job.status.not_in(JobStatus.FINISHED), Job.created_at < quiet_since,
                          or_(Job.healed_at.is_(None), Job.healed_at < quiet_since),
                          or_(last_row.is_(None), last_row < quiet_since))
        .order_by(Job.created_at)
    ).all()
    return [job_dict(j) for j in jobs]


def list_jobs(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent jobs first."""
    jobs = session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)).all()
    return job_dicts(session, list(jobs))


def _prediction_dict(p: Prediction) -> dict[str, Any]:
    return {
        "path": p.path,
        "label": p.label,
        "confidence": p.confidence,
        "top_k": p.top_k,
        "error": p.error,
        "content_hash": p.content_hash,
        "reused": p.reused,
        "unknown": p.unknown,
        "unknown_score": p.unknown_score,
        "model_version": p.model_version,
    }


def job_predictions(
    session: Session,
    job_id: str,
    *,
    min_confidence: float | None = None,
    label: str | None = None,
    unknown: bool | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The job's rows, lowest confidence first (error rows, which have none, come first of all).

    `unknown` True: only the images flagged unknown; False: only classified images not flagged (no error rows).
    """
    job = find_job(session, job_id)
    stmt = select(Prediction).where(Prediction.job_id == job.id)
    if min_confidence is not None:
        stmt = stmt.where(Prediction.confidence >= min_confidence)
    if label is not None:
        stmt = stmt.where(Prediction.label == label)
    if unknown is not None:
        stmt = stmt.where(Prediction.unknown == unknown, Prediction.error.is_(None))
    stmt = stmt.order_by(Prediction.confidence.asc().nulls_first(), Prediction.path)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_prediction_dict(p) for p in session.scalars(stmt)]


def job_summary(
    session: Session,
    job_id: str,
    *,
    low_confidence_below: float = LOW_CONFIDENCE_BELOW,
    bins: int = HISTOGRAM_BINS,
    examples: int = 20,
) -> dict[str, Any]:
    """Counts per label, the unknown images, a confidence histogram, the errors and the least confident images.

    Label counts are of the images the model recognised: an unknown image's closest label is no answer, so it is
    counted under `unknown_count` instead (with the most clearly unknown ones, highest score first, as examples).
    """
    job = find_job(session, job_id)
    labels = [
        {"label": label, "count": int(count), "mean_confidence": float(mean or 0.0)}
        for label, count, mean in session.execute(
            select(Prediction.label, func.count(), func.avg(Prediction.confidence))
            .where(Prediction.job_id == job.id, Prediction.label.is_not(None), ~Prediction.unknown)
            .group_by(Prediction.label)
            .order_by(func.count().desc(), Prediction.label)
        )
    ]
    # Binned in Python: SQLite and PostgreSQL disagree on float-to-int casts (truncate vs round).
    counts = [0] * bins
    for (conf,) in session.execute(
        select(Prediction.confidence).where(Prediction.job_id == job.id, Prediction.confidence.is_not(None))
    ):
        counts[min(int(conf * bins), bins - 1)] += 1
    histogram = [{"from": i / bins, "to": (i + 1) / bins, "count": c} for i, c in enumerate(counts)]
    errors = [
        {"path": path, "error": error}
        for path, error in session.execute(
            select(Prediction.path, Prediction.error)
            .where(Prediction.job_id == job.id, Prediction.error.is_not(None))
            .order_by(Prediction.path)
        )
    ]
    low = [
        {"path": path, "label": label, "confidence": conf}
        for path, label, conf in session.execute(
            select(Prediction.path, Prediction.label, Prediction.confidence)
            .where(Prediction.job_id == job.id, Prediction.confidence < low_confidence_below)
            .order_by(Prediction.confidence.asc(), Prediction.path)
            .limit(examples)
        )
    ]
    low_count = session.scalar(
        select(func.count()).where(Prediction.job_id == job.id, Prediction.confidence < low_confidence_below)
    )
    unknown = [
        {"path": path, "closest": label, "confidence": conf, "unknown_score": score}
        for path, label, conf, score in session.execute(
            select(Prediction.path, Prediction.label, Prediction.confidence, Prediction.unknown_score)
            .where(Prediction.job_id == job.id, Prediction.unknown)
            .order_by(Prediction.unknown_score.desc().nulls_last(), Prediction.path)
            .limit(examples)
        )
    ]
    job_info = job_dicts(session, [job])[0]
    return {
        "job": job_info,
        "labels": labels,
        "unknown_count": job_info["unknown"],
        "unknown": unknown,
        "histogram": histogram,
        "errors": errors,
        "low_confidence_below": low_confidence_below,
        "low_confidence_count": int(low_count or 0),
        "low_confidence": low,
    }
