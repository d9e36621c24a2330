"""The batch path's logic as plain functions, testable without a broker: chunk, classify, store
(files are hashed by `db.content_hash`).

Tasks in `worker.tasks` only unpack arguments and call these. Decoding and resizing are the core's
(`Classifier.iter_predict` decodes batch i+1 in parallel threads while the network runs on batch i);
nothing here touches pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from db import crud
from model.predict import BATCH_SIZE, TOP_K
from worker.failsafe import worker_name

log = logging.getLogger(__name__)

Item = Sequence[str | None]  # (absolute path, sha256 hex or None), as it travels in a task message (JSON)


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    size = max(1, int(size))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _row(path: str, content_hash: str | None, prediction) -> dict[str, Any]:
    return {
        "path": path,
        "content_hash": content_hash,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "top_k": [[label, float(conf)] for label, conf in prediction.top_k] if prediction.top_k else None,
        "error": prediction.error,
    }


def classify_items(classifier, items: Sequence[Item], *, top_k: int = TOP_K,
                   batch_size: int = BATCH_SIZE) -> list[dict]:
    """One result row (without job fields) per item, in order; a bad image gives a row with its error.

    The core turns every decoding failure into a per-image error. Anything else it raises (an I/O error
    Pillow does not wrap, say) would fail the whole chunk, so the chunk is then redone one image at a time
    to pin the failure on the file that caused it.
    """
    paths = [str(p) for p, _ in items]
    try:
        predictions = list(classifier.iter_predict(paths, top_k=top_k, batch_size=batch_size))
    except Exception:  # noqa: BLE001 - isolate the culprit below
        log.warning("chunk failed as a whole; retrying image by image", exc_info=True)
        predictions = [_predict_one(classifier, p, top_k) for p in paths]
    return [_row(p, h, pred) for (p, h), pred in zip(items, predictions, strict=True)]


def _predict_one(classifier, path: str, top_k: int):
    from model.predict import Prediction

    try:
        return classifier.predict([path], top_k=top_k)[0]
    except Exception as exc:  # noqa: BLE001 - one file's failure becomes that file's error row
        return Prediction(error=f"unreadable: {type(exc).__name__}: {exc}", model_version=classifier.model_version)


def store_rows(*, session: Session, job_id: str, model_version: str, rows: Sequence[dict[str, Any]],
               worker: str | None = None) -> None:
    """Insert a chunk's rows (idempotent) and recount the job, in the caller's transaction."""
    crud.insert_predictions(
        session=session,
        rows=[{**r, "job_id": job_id, "model_version": model_version, "worker": worker} for r in rows],
    )
    crud.refresh_job(session=session, job_id=job_id)


def process_chunk(*, sessions: Callable[[], Session], classifier, job_id: str, items: Sequence[Item],
                  top_k: int = TOP_K, batch_size: int = BATCH_SIZE) -> int:
    """Classify a chunk and store it with one commit; returns the number of rows written or kept."""
    with sessions() as session, session.begin():
        crud.mark_started(session=session, job_id=job_id)
    rows = classify_items(classifier, items, top_k=top_k, batch_size=batch_size)
    with sessions() as session, session.begin():
        store_rows(session=session, job_id=job_id, model_version=classifier.model_version, rows=rows,
                   worker=worker_name())
    return len(rows)
