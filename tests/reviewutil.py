"""Helpers for the review, export and diff tests: a migrated SQLite or PostgreSQL database and fabricated jobs.

Jobs are written with the `db.crud` functions the batch path uses, so no network runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import crud
from tests.batchutil import database_url_for, drop_pg_schema

LABELS = ["apple", "banana", "cherry"]


def migrated_sessions(kind: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """For a test module's `sessions` fixture: sessions on a migrated 'sqlite' or 'postgres' database."""
    from db.migrate import upgrade
    from db.session import session_factory

    url, schema = database_url_for(kind, tmp_path)
    upgrade(url)
    yield session_factory(url)
    if schema:
        drop_pg_schema(schema)


def url_of(sessions) -> str:
    return sessions.kw["bind"].url.render_as_string(hide_password=False)


def row(path: str, label: str | None, confidence: float | None, content_hash: str | None = "auto",
        error: str | None = None) -> dict[str, Any]:
    """A result row ("auto": a hash made from the path); the top-k puts `label` first, the rest share the remainder."""
    top_k = None
    if label is not None:
        rest = [x for x in LABELS if x != label]
        top_k = [[label, confidence]] + [[x, (1 - confidence) / len(rest)] for x in rest]
    content_hash = f"h-{path}" if content_hash == "auto" else content_hash
    return {"path": path, "label": label, "confidence": confidence, "content_hash": content_hash, "top_k": top_k,
            "error": error}


def add_job(sessions, job_id: str, rows: list[dict[str, Any]], *, version: str = "v-old", folder: str = "/f",
            labels: list[str] = LABELS) -> None:
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=version, labels=labels, input_size=32)
        crud.create_job(session=session, job_id=job_id, folder=folder, recursive=True, model_dir="/m",
                        model_version=version, total=len(rows))
        crud.insert_predictions(session=session, rows=[{**r, "job_id": job_id, "model_version": version}
                                                       for r in rows])
        crud.refresh_job(session=session, job_id=job_id)
