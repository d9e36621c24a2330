"""A real worker writes the unknown flag (issue 20): a prefork `celery worker` process on the `honest_bundle` (the
tiny bundle with a temperature and unknown statistics) as its MODEL_DIR, a folder of images planted known (noisy
plain colours), unknown (stripe patterns) and one bad file. The rows, the job's count, the review order and a
resubmission (every row reused, flags included) are checked against what the same bundle gives in this process.

One backend, SQLite (always there): the worker writes through the same `db.crud` on both, and tests/db checks the
columns, the migration and the flag's reuse on SQLite and PostgreSQL; a second worker start costs minutes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Prediction
from tests.helpers.databases import scratch_database
from tests.helpers.images import write_good_images, write_unknown_images
from tests.helpers.processes import WorkerProcess, wait_job

# Worker processes; the ceiling covers building the tiny and honest bundles and starting a worker (setup), which
# took 160-350 s on a loaded 2-core machine, plus the job.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The seeds `tests.helpers.honesty` fits and sets the threshold on: these pixels are known, resp. unknown, by
# construction, so the test is about what the worker stores, not about how well the detector generalises (that is
# tests/model's).
SEED = 5000


@pytest.fixture(scope="module")
def honest_fleet(honest_bundle, shared_redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("honest")
    with scratch_database("sqlite", tmp) as url:
        queue = f"test-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess("w-honest", queue=queue, database_url=url,
                               model_dir=str(honest_bundle), log_dir=tmp, cwd=tmp, redis_url=shared_redis_url)
        try:
            worker.wait_ready()
            yield {"url": url, "queue": queue, "worker": worker, "redis_url": shared_redis_url}
        finally:
            worker.stop()


def _submit(fleet, folder, model_dir):
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker

    return submit_folder(folder, model_dir=model_dir, database_url=fleet["url"], broker=RedisBroker(fleet["redis_url"]),
                         queue=fleet["queue"], chunk_size=4)


def _rows(url, job_id) -> dict[str, Prediction]:
    from db.session import session_factory

    with session_factory(url)() as session:
        return {Path(r.path).name: r for r in session.scalars(select(Prediction).where(Prediction.job_id == job_id))}


def test_a_real_worker_writes_the_flag(honest_fleet, honest_bundle, tmp_path, classifier_options):
    from db.results import job_summary
    from db.reviews import to_review
    from db.session import session_factory
    from model.predict import load_classifier

    folder = tmp_path / "shop"
    known = write_good_images(folder, 6, prefix="fruit", seed=SEED)
    odd = write_unknown_images(folder, 4, prefix="odd", seed=SEED)
    (folder / "empty.jpg").write_bytes(b"")
    job_id = _submit(honest_fleet, folder, honest_bundle)
    # 300 s: the first task loads TensorFlow and the model; on a loaded 2-core machine that alone took 64 s.
    progress = wait_job(job_id, honest_fleet["url"], timeout=300, workers=[honest_fleet["worker"]])

    assert progress["status"] == "done" and (progress["done"], progress["errors"]) == (11, 1)
    assert progress["unknown"] == len(odd)
    rows = _rows(honest_fleet["url"], job_id)
    assert {name for name, r in rows.items() if r.unknown} == {p.name for p in odd}
    assert (rows["empty.jpg"].error is not None, rows["empty.jpg"].unknown, rows["empty.jpg"].unknown_score) == (
        True, False, None)
    # What the worker stored is what the bundle gives in this process: the flag, its score, the calibrated top-k.
    classifier = load_classifier(honest_bundle, **classifier_options)
    threshold = classifier.unknown.threshold
    for path, pred in zip(known + odd, classifier.predict(known + odd), strict=True):
        r = rows[path.name]
        assert (r.unknown, pred.unknown) == (path in odd, path in odd)
        assert r.unknown_score == pytest.approx(pred.unknown_score, rel=1e-4)
        assert (r.unknown_score > threshold) == r.unknown
        assert dict(r.top_k) == pytest.approx(dict(pred.top_k), abs=1e-4)

    with session_factory(honest_fleet["url"])() as session:
        summary = job_summary(session, job_id)
        queue = [Path(r["path"]).name for r in to_review(session, job_id, limit=None)]
    assert summary["unknown_count"] == len(odd) and sum(x["count"] for x in summary["labels"]) == len(known)
    assert set(queue[:len(odd)]) == {p.name for p in odd}  # review: unknown first

    # The same folder again: every image reused from the first job, flags and scores with them; only the bad file
    # (errors are never reused) is a chunk of its own.
    again = _submit(honest_fleet, folder, honest_bundle)
    progress = wait_job(again, honest_fleet["url"], timeout=120, workers=[honest_fleet["worker"]])
    assert (progress["reused"], progress["unknown"], progress["chunks"], progress["done"]) == (10, len(odd), 1, 11)
    # Stripe patterns can repeat: a file's copy may come from another file of the same bytes, whose score was
    # computed in another batch (equal to float rounding).
    first = {}
    for r in rows.values():
        first.setdefault(r.content_hash, set()).add((r.unknown, r.unknown_score))
    for name, r in _rows(honest_fleet["url"], again).items():
        assert r.reused == (name != "empty.jpg"), name
        assert (r.unknown, r.unknown_score) in first[r.content_hash], name
