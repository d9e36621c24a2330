"""How a chunk no worker can run still ends (jobs/failure.py), the worker errors kept in Redis (worker/broker.py)
and the job file list, on SQLite and PostgreSQL (no model)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db import crud
from db.models import Job, JobStatus, Prediction

VERSION = "abc123def456"
FILES = [["/f/a.jpg", "h1"], ["/f/b.jpg", "h2"], ["/f/c.jpg", None]]


@pytest.fixture
def db(database_url):
    """(url, sessions) of a migrated database holding job "j" over FILES, none of them classified yet."""
    from db.session import session_factory

    url = database_url
    sessions = session_factory(url)
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=VERSION, labels=["apple"], input_size=32)
        crud.create_job(session=session, job_id="j", folder="/f", recursive=False, model_dir="/m",
                        model_version=VERSION, total=len(FILES))
        crud.record_files(session=session, job_id="j", items=FILES)
        crud.record_files(session=session, job_id="j", items=FILES[:1])  # recording again changes nothing
    return url, sessions


def _ok_row(path: str, h: str | None) -> dict:
    return {"job_id": "j", "path": path, "model_version": VERSION, "content_hash": h, "label": "apple",
            "confidence": 0.9, "top_k": [["apple", 0.9]], "error": None}


def test_files_without_row(db):
    _, sessions = db
    with sessions() as session, session.begin():
        assert crud.count_files(session=session, job_id="j") == 3
        assert crud.files_without_row(session=session, job_id="j") == FILES
        crud.insert_predictions(session=session, rows=[_ok_row(*FILES[1])])
        assert crud.files_without_row(session=session, job_id="j") == [FILES[0], FILES[2]]


def test_chunk_failure_rows_and_failed_job(db):
    from jobs.failure import record_chunk_failure

    url, sessions = db
    with sessions() as session, session.begin():
        crud.insert_predictions(session=session, rows=[_ok_row(*FILES[0])])
        crud.refresh_job(session=session, job_id="j")
    # A chunk of a.jpg (stored by an earlier delivery) and b.jpg: only b.jpg gets the error row.
    assert record_chunk_failure(database_url=url, job_id="j", items=FILES[:2], error="worker failed: X") == 2
    with sessions() as session:
        job = session.get(Job, "j")
        assert (job.status, job.done, job.errors, job.error) == (JobStatus.RUNNING, 2, 1, "worker failed: X")
    # The last chunk runs fine, but the job had a chunk no worker could run: it ends failed with that reason.
    with sessions() as session, session.begin():
        crud.insert_predictions(session=session, rows=[_ok_row(*FILES[2])])
        job = crud.refresh_job(session=session, job_id="j")
        assert (job.status, job.done, job.errors, job.finished_at is not None) == (JobStatus.FAILED, 3, 1, True)
    # Recorded again (a redelivered chunk failing again, with another reason): nothing changes.
    record_chunk_failure(database_url=url, job_id="j", items=FILES, error="worker failed: Y")
    with sessions() as session:
        rows = {r.path: r for r in session.scalars(select(Prediction))}
        job = session.get(Job, "j")
    assert len(rows) == 3 and rows["/f/a.jpg"].label == "apple" and rows["/f/c.jpg"].error is None
    assert rows["/f/b.jpg"].error == "worker failed: X" and rows["/f/b.jpg"].model_version == VERSION
    assert (job.status, job.error) == (JobStatus.FAILED, "worker failed: X")
    assert record_chunk_failure(database_url=url, job_id="nope", items=FILES, error="E") == 0


def test_failsafe_ends_a_job_by_itself(db):
    from jobs.failure import record_chunk_failure

    url, sessions = db
    record_chunk_failure(database_url=url, job_id="j", items=FILES, error="worker failed: model missing")
    with sessions() as session:
        job = session.get(Job, "j")
    assert (job.status, job.done, job.errors) == (JobStatus.FAILED, 3, 3)
    assert job.started_at is not None and job.finished_at is not None


def test_worker_errors_are_kept_in_redis_and_never_raise(shared_redis_url):
    from worker.broker import ERRORS_KEPT, RedisBroker

    broker = RedisBroker(shared_redis_url)
    broker.note_error("E1", worker="w:1", job_id="j")
    broker.note_error("E2", worker="w:2")  # a job-less error (an unknown task) shows for every job
    broker.note_error("E3", worker="w:3", job_id="other")
    errors = broker.recent_errors()
    assert [e["error"] for e in errors] == ["E3", "E2", "E1"] and errors[2]["worker"] == "w:1"  # newest first
    assert [e["error"] for e in broker.recent_errors(job_id="j")] == ["E2", "E1"]
    assert [e["error"] for e in broker.recent_errors(limit=1)] == ["E3"]
    for n in range(ERRORS_KEPT + 5):
        broker.note_error(f"F{n}", worker="w")
    assert len(broker.recent_errors(limit=10 * ERRORS_KEPT)) == ERRORS_KEPT  # the list stays bounded

    dead = RedisBroker("redis://127.0.0.1:1/0")
    dead.note_error("E", worker="w", job_id="j")  # nothing raised: the failure path must not fail
    assert dead.recent_errors() == [] and not dead.take_lease("k", "w", 1) and dead.queue_length() is None


def test_status_reports_what_it_cannot_reach(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0",
           "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"}
    done = subprocess.run([sys.executable, "-m", "worker.status"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    line = done.stdout.splitlines()[0]
    assert line.startswith("0 workers online · broker unreachable · database unreachable (OperationalError"), line
