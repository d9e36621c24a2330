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

from db.models import Prediction
from tests.helpers import TINY_LABELS, assert_top1
from tests.helpers.databases import scratch_database
from tests.helpers.processes import WorkerProcess, wait_job

pytestmark = pytest.mark.slow  # worker processes


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fleet(request, tiny_bundle, shared_redis_url, tmp_path_factory):
    """(database_url, queue, worker, model_dir): one running worker bound to a fresh database."""
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    # Migrated here, as an entry point does; the worker does it too, when it starts.
    with scratch_database(request.param, tmp) as url:
        queue = f"test-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(f"w-{request.param}", queue=queue, database_url=url, model_dir=str(tiny_bundle),
                               log_dir=tmp, cwd=tmp, redis_url=shared_redis_url)
        try:
            worker.wait_ready()
            yield {"url": url, "queue": queue, "worker": worker, "model_dir": str(tiny_bundle),
                   "redis_url": shared_redis_url, "tmp": tmp}
        finally:
            worker.stop()


def _submit(fleet, folder, **kw):
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker

    kw.setdefault("chunk_size", 64)
    return submit_folder(folder, model_dir=fleet["model_dir"], database_url=fleet["url"],
                         broker=RedisBroker(fleet["redis_url"]), queue=fleet["queue"], **kw)


def _rows(url, job_id):
    from db.session import session_factory

    with session_factory(url)() as session:
        return session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()


def test_folder_job_end_to_end(fleet, tmp_path, good_images, tiny_classifier):
    from db.results import job_summary
    from db.session import session_factory

    images = good_images(24, "in")
    (tmp_path / "in" / "readme.txt").write_text("not an image")
    good_images(2, "in/sub", prefix="nested")  # not included without --recursive
    job_id = _submit(fleet, tmp_path / "in", chunk_size=8)
    progress = wait_job(job_id, fleet["url"], timeout=180, workers=[fleet["worker"]])

    assert progress["status"] == "done"
    assert (progress["total"], progress["done"], progress["errors"], progress["skipped"]) == (24, 24, 0, 1)
    assert progress["chunks"] == 3
    rows = {r.path: r for r in _rows(fleet["url"], job_id)}
    assert sorted(rows) == sorted(str(p.resolve()) for p in images)
    # What the worker stored is what the bundle gives in this process (1e-4: the parity of the runtimes, for a
    # `RUNTIME=auto` run), and each label is the top-1 of those probabilities.
    want = tiny_classifier.predict_probs(images)
    for path, probs in zip(images, want, strict=True):
        r = rows[str(path.resolve())]
        assert len(r.top_k) == 3 and r.top_k[0][0] == r.label and len(r.content_hash) == 64
        assert dict(r.top_k) == pytest.approx(dict(zip(TINY_LABELS, probs.tolist(), strict=True)), abs=1e-4)
    assert_top1([rows[str(p.resolve())].label for p in images], want, TINY_LABELS, atol=1e-4)
    with session_factory(fleet["url"])() as session:
        summary = job_summary(session, job_id)
    assert sum(x["count"] for x in summary["labels"]) == 24


def test_bad_files_next_to_good_ones(fleet, tmp_path, good_images, bad_images):
    folder = tmp_path / "mixed"
    good = good_images(6, "mixed")
    bad = bad_images("mixed")
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


def test_resubmitted_folder_recomputes_nothing(fleet, tmp_path, good_images):
    folder = tmp_path / "again"
    good_images(10, "again", seed=500)
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
    good_images(1, "again", seed=9999)
    third = _submit(fleet, folder, chunk_size=4)
    progress = wait_job(third, fleet["url"], timeout=120, workers=[fleet["worker"]])
    assert (progress["reused"], progress["done"], progress["chunks"]) == (9, 10, 1)


def test_worker_killed_mid_job(fleet, tmp_path, good_images):
    """SIGKILL the process running a chunk while a second worker runs: the job completes, one row per image."""
    folder = tmp_path / "kill"
    images = good_images(40, "kill", seed=1000)
    slow = WorkerProcess("w-slow", queue=fleet["queue"], database_url=fleet["url"], model_dir=fleet["model_dir"],
                         log_dir=fleet["tmp"], app="tests.worker.slow_worker", extra_env={"SLOW_CHUNK_S": "2"},
                         redis_url=fleet["redis_url"])
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
