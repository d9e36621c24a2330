"""Reviews of a job's results: plain functions of a Session returning plain dicts (the CLI and the demo call them).

A review gives an image the right label, or none ("none of these / skip": no label of the model fits, or the
reviewer cannot tell). Only images the model classified can be reviewed: an error row has no answer to judge.
Writes (`set_review`) leave the commit to the caller, as `db.crud` does.

    next_to_review(session, job_id)      the next unreviewed image (unknown ones first, then lowest confidence), top-5
    to_review(session, job_id, limit)    the next `limit` of them
    review_progress(session, job_id)     {"reviewed": 12, "total": 87, "text": "12 of 87 reviewed", ...}
    reviewed_accuracy(session, job_id)   {"right": 71, "labelled": 87, "text": "right on 71 of 87 reviewed", ...}
    set_review(session, job_id, path, label, reviewer)   label None: none of these
    job_reviews(session, job_id)         {path: review} for reports, exports and diffs
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import case, exists, func, select
from sqlalchemy.orm import Session

from db.crud import _insert as dialect_insert  # the dialect's INSERT ... ON CONFLICT, shared with the batch writes
from db.models import Job, ModelRecord, Prediction, Review, utcnow
from db.results import _iso, find_job

# How reports and listings show a review that picked none of the labels (a NULL label in the table); the
# parentheses keep it from reading as a class name.
NONE_OF_THESE = "(none of these)"
TOP_K = 5


class ReviewError(ValueError):
    """A review that cannot be stored; the message says what would be accepted."""


def job_labels(session: Session, job: Job) -> list[str]:
    """The labels of the model that ran the job (recorded with the model version, so the bundle may be gone)."""
    record = session.get(ModelRecord, job.model_version)
    return list(record.labels) if record else []


def _candidate_dict(p: Prediction, top_k: int) -> dict[str, Any]:
    return {
        "path": p.path,
        "label": p.label,
        "confidence": p.confidence,
        "top_k": [list(pair) for pair in (p.top_k or [])[:top_k]],
        "unknown": p.unknown,
        "unknown_score": p.unknown_score,
        "content_hash": p.content_hash,
        "prediction_id": p.id,
    }


def to_review(session: Session, job_id: str, *, limit: int | None = 10, top_k: int = TOP_K) -> list[dict[str, Any]]:
    """The job's classified images that nobody reviewed yet: the ones flagged unknown first, then lowest confidence
    first (ties by path).

    Unknown images lead whatever their confidence: the model's confidence in its closest class says nothing about
    an image of none of its classes, and a person is what tells a new kind of input from a bad flag.
    """
    job = find_job(session, job_id)
    reviewed = exists().where(Review.job_id == Prediction.job_id, Review.path == Prediction.path)
    stmt = (select(Prediction).where(Prediction.job_id == job.id, Prediction.error.is_(None), ~reviewed)
            .order_by(Prediction.unknown.desc(), Prediction.confidence.asc(), Prediction.path).limit(limit))
    return [_candidate_dict(p, top_k) for p in session.scalars(stmt)]


def next_to_review(session: Session, job_id: str, *, top_k: int = TOP_K) -> dict[str, Any] | None:
    """The first unreviewed image of `to_review` (unknown, else least sure), with its top-k; None when all are
    reviewed."""
    rows = to_review(session, job_id, limit=1, top_k=top_k)
    return rows[0] if rows else None


def review_progress(session: Session, job_id: str) -> dict[str, Any]:
    """How many of the job's classified images are reviewed ("12 of 87 reviewed")."""
    job = find_job(session, job_id)
    total = int(session.scalar(
        select(func.count()).where(Prediction.job_id == job.id, Prediction.error.is_(None))) or 0)
    reviewed = int(session.scalar(select(func.count()).where(Review.job_id == job.id)) or 0)
    return {
        "job_id": job.id,
        "reviewed": reviewed,
        "total": total,
        "remaining": total - reviewed,
        "fraction": reviewed / total if total else 1.0,
        "text": f"{reviewed} of {total} reviewed",
    }


def reviewed_accuracy(session: Session, job_id: str) -> dict[str, Any]:
    """The model's accuracy on the reviewed images that got a label.

    Images marked "none of these" are counted apart, neither right nor wrong: the mark also means "cannot tell".
    """
    job = find_job(session, job_id)
    reviewed, labelled, right = session.execute(
        select(
            func.count(),
            func.count(Review.reviewed_label),
            func.coalesce(func.sum(case((Review.reviewed_label == Prediction.label, 1), else_=0)), 0),
        )
        .join(Prediction, Prediction.id == Review.prediction_id)
        .where(Review.job_id == job.id)
    ).one()
    reviewed, labelled, right = int(reviewed), int(labelled), int(right)
    text = f"right on {right} of {labelled} reviewed"
    if reviewed > labelled:
        text += f" ({reviewed - labelled} more marked none of these)"
    return {
        "job_id": job.id,
        "reviewed": reviewed,
        "labelled": labelled,
        "none_of_these": reviewed - labelled,
        "right": right,
        "wrong": labelled - right,
        "accuracy": right / labelled if labelled else None,
        "text": text,
    }


def _review_dict(review: Review, prediction: Prediction) -> dict[str, Any]:
    return {
        "job_id": review.job_id,
        "path": review.path,
        "model_label": prediction.label,
        "confidence": prediction.confidence,
        "model_version": prediction.model_version,
        "reviewed_label": review.reviewed_label,
        "none_of_these": review.reviewed_label is None,
        "agrees": review.reviewed_label is not None and review.reviewed_label == prediction.label,
        "reviewer": review.reviewer,
        "reviewed_at": _iso(review.reviewed_at),
    }


def job_reviews(session: Session, job_id: str) -> dict[str, dict[str, Any]]:
    """Every review of the job by path (see `_review_dict` for the keys)."""
    job = find_job(session, job_id)
    stmt = (select(Review, Prediction).join(Prediction, Prediction.id == Review.prediction_id)
            .where(Review.job_id == job.id))
    return {r.path: _review_dict(r, p) for r, p in session.execute(stmt).tuples()}


def with_reviews(session: Session, job_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows (from `job_predictions`) with `reviewed_label` (NONE_OF_THESE for a skip) and `reviewer`."""
    reviews = job_reviews(session, job_id)
    out = []
    for row in rows:
        review = reviews.get(row["path"])
        shown = None if review is None else (review["reviewed_label"] or NONE_OF_THESE)
        out.append({**row, "reviewed_label": shown, "reviewer": review["reviewer"] if review else None})
    return out


def _unknown_path(session: Session, job: Job, path: str) -> ReviewError:
    name = PurePath(path).name
    like = session.scalars(select(Prediction.path).where(Prediction.job_id == job.id, Prediction.path.endswith(
        name, autoescape=True)).order_by(Prediction.path).limit(3)).all()
    hint = (f"did you mean {' or '.join(like)}?" if like
            else f"python -m db.review {job.id} lists images to review, with their paths as stored")
    return ReviewError(f"no image {path!r} in job {job.id} (paths are as stored for the job: {hint})")


def set_review(session: Session, job_id: str, path: str, label: str | None, reviewer: str, *,
               when: datetime | None = None) -> dict[str, Any]:
    """Record (or replace) the review of one image: `label` one of the job's model labels, None for none of these.

    Raises LookupError for an unknown job, ReviewError for an unknown path, an error row, a label the model does
    not have (the message lists the valid ones) or an empty reviewer. Nothing is written when it raises.
    """
    job = find_job(session, job_id)
    if not reviewer or not reviewer.strip():
        raise ReviewError("the reviewer's name is empty")
    prediction = session.scalars(
        select(Prediction).where(Prediction.job_id == job.id, Prediction.path == path).limit(1)).first()
    if prediction is None:
        raise _unknown_path(session, job, path)
    if prediction.error is not None:
        raise ReviewError(f"{path} was not classified ({prediction.error}): there is no answer to review")
    labels = job_labels(session, job)
    if label is not None and label not in labels:
        raise ReviewError(f"{label!r} is not a label of model {job.model_version}; "
                          f"choose one of: {', '.join(labels)}")
    stmt = dialect_insert(session, Review).values(
        job_id=job.id, path=path, prediction_id=prediction.id, reviewed_label=label, reviewer=reviewer.strip(),
        reviewed_at=when or utcnow())
    session.execute(stmt.on_conflict_do_update(
        index_elements=["job_id", "path"],
        set_={c: stmt.excluded[c] for c in ("prediction_id", "reviewed_label", "reviewer", "reviewed_at")},
    ))
    review = session.scalars(select(Review).where(Review.job_id == job.id, Review.path == path)
                             .execution_options(populate_existing=True)).one()
    return _review_dict(review, prediction)


def review_summary(session: Session, job_id: str) -> dict[str, Any]:
    """{"progress": review_progress(...), "accuracy": reviewed_accuracy(...)}, for reports."""
    return {"progress": review_progress(session, job_id), "accuracy": reviewed_accuracy(session, job_id)}
