"""Scratch databases and fabricated jobs.

A SQLite file in the test's folder, or a PostgreSQL schema of its own (search_path in the URL) dropped afterwards.
Jobs are written with the `db.crud` functions the batch path uses, so no network and no worker runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TEST_PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
LABELS = ["apple", "banana", "cherry"]


def _create_pg_schema() -> tuple[str, str]:
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(TEST_PG_URL)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {TEST_PG_URL}: {exc.orig}")
    finally:
        engine.dispose()
    return schema, f"{TEST_PG_URL}?options=-csearch_path%3D{schema}"


def _drop_pg_schema(schema: str) -> None:
    import sqlalchemy as sa

    from db.session import dispose_engines

    dispose_engines()  # the cached engines hold connections into the schema
    engine = sa.create_engine(TEST_PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


@contextmanager
def scratch_database(kind: str, folder: Path, *, migrated: bool = True) -> Iterator[str]:
    """The URL of an empty 'sqlite' or 'postgres' database, upgraded to the head revision unless `migrated` is
    False; the test is skipped when PostgreSQL cannot be reached (make services starts it)."""
    schema = None
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'results.db'}"
    else:
        schema, url = _create_pg_schema()
    try:
        if migrated:
            from db.migrate import upgrade

            upgrade(url)
        yield url
    finally:
        if schema:
            _drop_pg_schema(schema)


def url_of(sessions) -> str:
    """The database URL behind a sessionmaker, password included (the CLIs take it as --database-url)."""
    return sessions.kw["bind"].url.render_as_string(hide_password=False)


def alembic_command(url: str, action: str, revision: str) -> None:
    """Run an Alembic command ("upgrade", "downgrade") the way db.migrate does (on a connection it passes in),
    uncached: for tests of the migrations themselves."""
    from alembic import command

    from db.migrate import alembic_config
    from db.session import make_engine

    cfg, engine = alembic_config(), make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    finally:
        engine.dispose()


def row(path: str, label: str | None, confidence: float | None, content_hash: str | None = "auto",
        error: str | None = None, *, unknown: bool = False, unknown_score: float | None = None) -> dict[str, Any]:
    """A result row ("auto": a hash made from the path); the top-k puts `label` first, the rest share the remainder.
    `unknown`: the model's "none of my classes" flag, `label` then being the closest class."""
    top_k = None
    if label is not None:
        rest = [x for x in LABELS if x != label]
        top_k = [[label, confidence]] + [[x, (1 - confidence) / len(rest)] for x in rest]
    content_hash = f"h-{path}" if content_hash == "auto" else content_hash
    return {"path": path, "label": label, "confidence": confidence, "content_hash": content_hash, "top_k": top_k,
            "error": error, "unknown": unknown, "unknown_score": unknown_score}


def add_job(sessions, job_id: str, rows: list[dict[str, Any]], *, version: str = "v-old", folder: str = "/f",
            labels: list[str] = LABELS) -> None:
    """A finished job of `rows`, written as the batch path writes one."""
    from db import crud

    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=version, labels=labels, input_size=32)
        crud.create_job(session=session, job_id=job_id, folder=folder, recursive=True, model_dir="/m",
                        model_version=version, total=len(rows))
        crud.insert_predictions(session=session, rows=[{**r, "job_id": job_id, "model_version": version}
                                                       for r in rows])
        crud.refresh_job(session=session, job_id=job_id)


def migrated_sessions(kind: str, tmp_path: Path) -> Iterator:
    """Sessions on a migrated 'sqlite' or 'postgres' database, for a module's fixture to yield from."""
    from db.session import session_factory

    with scratch_database(kind, tmp_path) as url:
        yield session_factory(url)
