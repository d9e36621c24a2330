"""The batch path for real: Redis, Celery worker processes (prefork), SQLite and PostgreSQL.

One worker per database backend serves the folder, bad-files and resubmit tests; the kill test runs two.
The fleet's worker starts in a folder other than the repo root (`celery -A worker`, the console script): it finds
the project because the project is installed. Workers use the tiny 32 px DenseNet121 bundle, so most of the time
is process start and model load.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Prediction
from tests.batchutil import (
    WorkerProcess,
    database_url_for,
    drop_pg_schema,
    flush_test_redis,
    redis_or_skip,
    wait_job,
)
from tests.imagegen import write_bad_images, write_good_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fleet(request, tiny_bundle, tmp_path_factory):
    """(database_url, queue, worker, model_dir): one running worker bound to a fresh database."""
    redis_url = redis_or_skip()
    flush_test_redis()
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    url, schema = database_url_for(request.param, tmp)
    upgrade(url)  # what an entry point does; the worker does it too, when it starts
    queue = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(f"w-{request.param}", queue=queue, database_url=url, model_dir=str(tiny_bundle),
                           log_dir=tmp, cwd=tmp)
    try:
        worker.wait_ready()
        yield {"url": url, "queue": queue, "worker": worker, "model_dir": str(tiny_bundle), "redis_url": redis_url,
               "tmp": tmp}
    finally:
        worker.stop()
        if schema:
            drop_pg_schema(schema)


def _submit(fleet, folder, **kw):
    from worker.submit import submit_folder

    return submit_folder(folder, model_dir=fleet["model_dir"], database_url=fleet["url"],
                         redis_url=fleet["redis_url"], queue=fleet["queue"], **kw)


def _rows(url, job_id):
    from db.session import session_factory

    with session_factory(url)() as session:
        return session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()


def test_folder_job_end_to_end(fleet, tmp_path):
    from db.queries import job_summary
    from db.session import session_factory

    images = write_good_images(tmp_path / "in", 24)
    (tmp_path / "in" / "readme.txt").write_text("not an image")
    write_good_images(tmp_path / "in" / "sub", 2, prefix="nested")  # not included without --recursive
    job_id = _submit(fleet, tmp_path / "in", chunk_size=8)
    progress = wait_job(job_id, fleet["url"], timeout=180, workers=[fleet["worker"]])

    assert progress["status"] == "done"
    assert (progress["total"], progress["done"], progress["errors"], progress["skipped"]) == (24, 24, 0, 1)
    assert progress["chunks"] == 3
    rows = _rows(fleet["url"], job_id)
    assert sorted(r.path for r in rows) == sorted(str(p.resolve()) for p in images)
    for r in rows:
        assert r.label in {"apple", "banana", "cherry"} and 0.0 <= r.confidence <= 1.0
        assert len(r.top_k) == 3 and r.top_k[0][0] == r.label and len(r.content_hash) == 64
    with session_factory(fleet["url"])() as session:
        summary = job_summary(session, job_id)
    assert sum(x["count"] for x in summary["labels"]) == 24


def test_bad_files_next_to_good_ones(fleet, tmp_path):
    folder = tmp_path / "mixed"
    good = write_good_images(folder, 6)
    bad = write_bad_images(folder)
    (folder / "unreadable.png").write_bytes(b"\x89PNG")
    os.chmod(folder / "unreadable.png", 0)
    job_id = _submit(fleet, folder, chunk_size=4)
    progress = wait_job(job_id, fleet["url"], timeout=120, workers=[fleet["worker"]])

    rows = {os.path.basename(r.path): r for r in _rows(fleet["url"], job_id)}
    expected = len(good) + len(bad) + 1
    assert progress["done"] == progress["total"] == len(rows) == expected
    for p in good:
        assert rows[p.name].error is None and rows[p.name].label
    errors = {kind: rows[p.name].error for kind, p in bad.items()}
    assert all(errors.values()), errors
    assert "empty" in errors["empty"] and "too large" in errors["too_large"]
    assert "truncated" in errors["truncated"] or "corrupt" in errors["truncated"]
    assert rows["unreadable.png"].error  # permission denied (or, as root, a too-short PNG)
    assert progress["errors"] == len(bad) + 1


def test_resubmitted_folder_recomputes_nothing(fleet, tmp_path):
    folder = tmp_path / "again"
    write_good_images(folder, 10, seed=500)
    first = _submit(fleet, folder, chunk_size=4)
    wait_job(first, fleet["url"], timeout=120, workers=[fleet["worker"]])
    before = fleet["worker"].log().count("succeeded in")

    second = _submit(fleet, folder, chunk_size=4)
    progress = wait_job(second, fleet["url"], timeout=10)
    assert progress["status"] == "done" and progress["chunks"] == 0
    assert progress["reused"] == progress["done"] == 10
    old = {r.path: (r.label, r.confidence) for r in _rows(fleet["url"], first)}
    new = {r.path: (r.label, r.confidence) for r in _rows(fleet["url"], second)}
    assert new == old
    time.sleep(0.5)
    assert fleet["worker"].log().count("succeeded in") == before  # no task ran

    # One changed file: only that one is computed again.
    write_good_images(folder, 1, seed=9999)
    third = _submit(fleet, folder, chunk_size=4)
    progress = wait_job(third, fleet["url"], timeout=120, workers=[fleet["worker"]])
    assert (progress["reused"], progress["done"], progress["chunks"]) == (9, 10, 1)


def test_worker_killed_mid_job(fleet, tmp_path):
    """SIGKILL the process running a chunk while a second worker runs: the job completes, one row per image."""
    folder = tmp_path / "kill"
    images = write_good_images(folder, 40, seed=1000)
    slow = WorkerProcess("w-slow", queue=fleet["queue"], database_url=fleet["url"], model_dir=fleet["model_dir"],
                         log_dir=fleet["tmp"], app="tests.slow_worker", extra_env={"SLOW_CHUNK_S": "2"})
    try:
        slow.wait_ready()
        job_id = _submit(fleet, folder, chunk_size=4)
        # The slow worker logs this inside its first task (loading the model, then a 2 s pause before the
        # chunk); the warm worker meanwhile runs the other chunks. Kill the child while it holds its task.
        deadline = time.monotonic() + 120
        while "loading classifier" not in slow.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "succeeded in" not in slow.log()
        children = slow.children()
        assert children, slow.log()
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        progress = wait_job(job_id, fleet["url"], timeout=180, workers=[fleet["worker"]])
    finally:
        slow.stop()

    assert "signal 9" in slow.log() or "SIGKILL" in slow.log(), slow.log()[-2000:]
    rows = _rows(fleet["url"], job_id)
    counts = Counter(r.path for r in rows)
    assert set(counts) == {str(p.resolve()) for p in images}
    assert set(counts.values()) == {1}
    assert progress["done"] == progress["total"] == 40 and progress["errors"] == 0
