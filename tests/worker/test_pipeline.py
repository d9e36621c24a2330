"""worker/ and jobs/: configuration, submit errors and the chunk logic as plain functions (no broker; the chunk
tests run the tiny model, so they are slow)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_importing_the_worker_does_not_import_tensorflow_nor_read_settings():
    code = ("import sys, worker, worker.celery_app, worker.tasks, worker.lifecycle, worker.broker, worker.submit, "
            "worker.status, worker.dev, jobs.submit, jobs.progress, jobs.fleet, jobs.heal, jobs.failure, "
            "db.report, db.review, db.export, db.migrate, db.session; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "from settings import get_settings; assert get_settings.cache_info().currsize == 0, 'settings read'; "
            "assert worker.celery_app.app.conf.broker_url == get_settings().redis_url")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_celery_configuration():
    from settings import Settings
    from worker.broker import CLASSIFY_CHUNK
    from worker.celery_app import app
    from worker.tasks import retry_delay

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_proc_alive_timeout >= 30
    assert conf.broker_transport_options["visibility_timeout"] > 0
    assert {"worker.tasks", "worker.lifecycle"} <= set(app.conf.include)  # the tasks and the signal handlers
    assert set(app.tasks) >= {CLASSIFY_CHUNK}  # registered under the name the broker sends
    # A task's database and broker errors are retried for minutes (a restart), then it gives up (and is healed).
    settings = Settings()
    waits = [retry_delay(n, settings.task_retry_max_s) for n in range(settings.task_max_retries)]
    assert all(min(2 ** (n + 1), 60) / 2 <= w <= min(2 ** (n + 1), 60) for n, w in enumerate(waits))
    assert sum(min(2 ** (n + 1), 60) / 2 for n in range(settings.task_max_retries)) >= 240


def test_scan_folder_and_hashes(tmp_path, good_images):
    from db.content_hash import hash_files
    from model.images import scan_folder

    folder = tmp_path / "in"
    good = good_images(3, "in")
    good_images(2, "in/sub")
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.jpg").write_bytes(b"x")
    flat = scan_folder(folder)
    assert flat.images == [p.resolve() for p in good] and [p.name for p in flat.skipped] == ["notes.txt"]
    assert len(scan_folder(folder, recursive=True).images) == 5
    assert hash_files([good[0], folder / "missing.jpg"]) == [hashlib.sha256(good[0].read_bytes()).hexdigest(), None]


def test_submit_errors(tmp_path, good_images, shipped_bundle):
    from jobs.submit import BrokerUnavailableError, SubmitError, submit_folder
    from worker.broker import RedisBroker

    dead = RedisBroker("redis://:secret@127.0.0.1:1/0")
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    submit = functools.partial(submit_folder, broker=dead, database_url=db_url, model_dir=shipped_bundle,
                               chunk_size=4)
    with pytest.raises(SubmitError, match="folder not found"):
        submit(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubmitError, match="no images"):
        submit(tmp_path / "empty")
    good_images(2, "imgs")
    with pytest.raises(SubmitError, match="not a model bundle"):
        submit(tmp_path / "imgs", model_dir=tmp_path)
    assert not dead.available(timeout=0.5)
    with pytest.raises(BrokerUnavailableError, match="redis-server --daemonize yes") as exc:
        submit(tmp_path / "imgs")
    assert "secret" not in str(exc.value) and "\n" not in str(exc.value)  # one line, no password
    assert not (tmp_path / "r.db").exists()  # nothing recorded for a job that could not be queued


def test_chunks_and_the_one_rate_of_a_job():
    from jobs.progress import job_rate
    from jobs.submit import chunked

    assert chunked(list(range(5)), 2) == [[0, 1], [2, 3], [4]] and chunked([1], 0) == [[1]]
    # From the first worker's start, not from the submit: 100 s queued behind another job do not count.
    job = {"created_at": "2030-01-01T00:00:00+00:00", "started_at": "2030-01-01T00:01:40+00:00",
           "finished_at": "2030-01-01T00:01:50+00:00", "done": 30, "reused": 10}
    assert job_rate(job) == 2.0  # 20 computed (reused rows left out) in 10 s
    assert job_rate({**job, "started_at": None}) is None and job_rate({**job, "reused": 30}) is None


@pytest.mark.slow
def test_chunk_stored_with_a_row_per_image(tmp_path, tiny_classifier, good_images, bad_images):
    """The task's logic without Celery: good and bad images of one chunk, stored twice (a redelivery)."""
    from sqlalchemy import select

    from db import crud
    from db.content_hash import hash_files
    from db.models import Prediction
    from worker.pipeline import classify_items, process_chunk

    good = good_images(5, "in")
    bad = list(bad_images("in").values())
    paths = [str(p) for p in good + bad]
    items = [[p, h] for p, h in zip(paths, hash_files(paths), strict=True)]

    rows = classify_items(tiny_classifier, items, top_k=2, batch_size=4)
    assert [r["path"] for r in rows] == paths
    assert all(r["error"] is None and len(r["top_k"]) == 2 for r in rows[:5])
    assert all(r["error"] and r["label"] is None for r in rows[5:])

    sessions = _empty_jobs(tmp_path, tiny_classifier, ["j"], len(items))
    for _ in range(2):
        assert process_chunk(sessions=sessions, classifier=tiny_classifier, job_id="j", items=items) == len(items)
    with sessions() as session:
        stored = session.scalars(select(Prediction)).all()
        job = crud.refresh_job(session=session, job_id="j")
    assert len(stored) == len(items)
    assert (job.status, job.done, job.errors) == ("done", len(items), len(bad))
    # The tiny bundle has no unknown statistics: no flag and no score, on results and errors alike.
    assert {(r.unknown, r.unknown_score) for r in stored} == {(False, None)}


@pytest.mark.slow
def test_one_failing_file_does_not_fail_its_chunk(good_images, tiny_classifier, monkeypatch):
    """An exception the core does not turn into an ImageError is pinned on its file, not on the chunk."""
    from worker import pipeline

    good = good_images(3)
    items = [[str(p), None] for p in good]
    real = type(tiny_classifier).preprocess

    def flaky(self, images, *args, **kw):
        if len(images) > 1 or str(images[0]).endswith("0001.png"):
            raise OSError("device went away")
        return real(self, images, *args, **kw)

    monkeypatch.setattr(type(tiny_classifier), "preprocess", flaky)
    rows = pipeline.classify_items(tiny_classifier, items)
    assert [bool(r["error"]) for r in rows] == [False, True, False]
    assert "device went away" in rows[1]["error"]


def _empty_jobs(tmp_path, classifier, job_ids: list[str], total: int):
    """Sessions on a migrated SQLite file holding one job of `total` files per id, on `classifier`, no row yet."""
    from db import crud
    from db.migrate import upgrade
    from db.session import session_factory

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    sessions = session_factory(url)
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=classifier.model_version, labels=classifier.labels,
                          input_size=32)
        for job_id in job_ids:
            crud.create_job(session=session, job_id=job_id, folder=str(tmp_path), recursive=False, model_dir="m",
                            model_version=classifier.model_version, total=total)
    return sessions


def _stored(sessions, job_id: str) -> list[tuple]:
    from sqlalchemy import select

    from db.models import Prediction

    with sessions() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()
        return sorted((r.path, r.content_hash, r.label, r.confidence, r.top_k, r.error) for r in rows)


@pytest.mark.slow
def test_prefetching_writes_the_rows_of_one_chunk_at_a_time(tmp_path, tiny_classifier, good_images, bad_images,
                                                              monkeypatch):
    """`process_chunks` (the next chunk decoded while this one runs the network and is stored) writes exactly the
    rows of the core's `predict` run on each chunk alone, bad files included: every file of the job one row. A file
    that fails a whole batch (an error the core does not wrap) still costs only its own row, and no decoding thread
    outlives the call."""
    import threading

    from db.content_hash import hash_files
    from jobs.submit import chunked
    from worker.pipeline import classify_items, process_chunks

    more = good_images(4, "in", prefix="more", seed=50)
    files = [str(p) for p in good_images(7, "in") + list(bad_images("in").values()) + more]
    items = [[p, h] for p, h in zip(files, hash_files(files), strict=True)]
    chunks = chunked(items, 5)  # 16 files: batches of 3, 2 within each chunk, a bad file in most batches
    expected = sorted(
        (p, h, pred.label, pred.confidence, [[k, c] for k, c in pred.top_k] if pred.top_k else None, pred.error)
        for chunk in chunks
        for (p, h), pred in zip(chunk, tiny_classifier.predict([p for p, _ in chunk], top_k=2, batch_size=3),
                                strict=True))
    assert sum(e[-1] is not None for e in expected) == 5 and len(expected) == len(files)

    sessions = _empty_jobs(tmp_path, tiny_classifier, ["chunks", "culprit"], len(items))
    done = []
    assert process_chunks(sessions=sessions, classifier=tiny_classifier, job_id="chunks", chunks=chunks, top_k=2,
                          batch_size=3, after_chunk=done.append) == len(items)
    assert done == [5, 10, 15, 16]
    assert _stored(sessions, "chunks") == expected
    # The one-chunk-per-task path (a Celery task) gives the same rows.
    rows = [r for chunk in chunks for r in classify_items(tiny_classifier, chunk, top_k=2, batch_size=3)]
    assert sorted((r["path"], r["content_hash"], r["label"], r["confidence"], r["top_k"], r["error"])
                  for r in rows) == expected

    culprit = files[12]  # a good file, in the third chunk
    real = type(tiny_classifier).preprocess

    def flaky(self, images, *args, **kw):
        if culprit in map(str, images):
            raise OSError("device went away")
        return real(self, images, *args, **kw)

    monkeypatch.setattr(type(tiny_classifier), "preprocess", flaky)
    process_chunks(sessions=sessions, classifier=tiny_classifier, job_id="culprit", chunks=chunks, top_k=2,
                   batch_size=3)
    stored = {row[0]: row for row in _stored(sessions, "culprit")}
    assert len(stored) == len(files) and "device went away" in stored[culprit][-1]
    # The culprit's chunk is redone image by image: batches of one, whose floats may differ in the last digits.
    redone = {p for p, _ in chunks[2]}
    assert sorted(stored[e[0]] for e in expected if e[0] not in redone) == [e for e in expected if e[0] not in redone]
    for e in expected:
        if e[0] in redone - {culprit}:
            assert stored[e[0]][2] == e[2] and stored[e[0]][5] == e[5], (stored[e[0]], e)
            assert e[3] is None or stored[e[0]][3] == pytest.approx(e[3], abs=1e-5)
    assert not [t for t in threading.enumerate() if t.name == "chunk-reader"]
