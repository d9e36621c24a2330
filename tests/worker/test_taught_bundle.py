"""A taught bundle on the batch path: `python -m worker.submit DIR --model TAUGHT` runs on a real worker (the
README's command, a private Redis, SQLite) started on another bundle, the job records the taught version and its
new class, and it compares with the parent's job on the same folder as the Compare view shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Prediction
from tests.helpers import ROOT, TINY_LABELS
from tests.helpers.images import write_good_images
from tests.helpers.processes import WorkerProcess, compose_worker_command

pytestmark = pytest.mark.slow  # a worker process, a redis-server and a teach


@pytest.fixture(scope="module")
def taught(teachable_bundle, tmp_path_factory):
    """The teachable tiny bundle taught 4 photos of a new class, in a models folder as the demo writes it."""
    from train.teach import teach

    tmp = tmp_path_factory.mktemp("taught")
    write_good_images(tmp / "photos" / "kiwi", 4, seed=100)
    return teach(teachable_bundle, tmp / "photos", tmp / "models" / "new")


def _submit(folder: Path, model: Path, env: dict, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "worker.submit", str(folder), "--model", str(model), "--wait"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[0]


def test_a_worker_classifies_with_a_taught_bundle(private_redis, tiny_bundle, teachable_bundle, taught, tmp_path):
    from db.diffs import diff_jobs
    from db.session import session_factory
    from model.predict import load_classifier

    url = f"sqlite:///{tmp_path / 'results.db'}"
    # The worker starts on the plain tiny bundle (MODEL_DIR): each job names its bundle by path, and the worker
    # loads the one a chunk asks for.
    worker = WorkerProcess("taught", database_url=url, model_dir=str(tiny_bundle), log_dir=tmp_path,
                           redis_url=private_redis.url(0), argv=compose_worker_command(), cwd=ROOT)
    env = {**os.environ, "REDIS_URL": private_redis.url(0), "DATABASE_URL": url, "MODEL_DIR": str(tiny_bundle),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    images = write_good_images(tmp_path / "in", 6, seed=700)
    try:
        worker.wait_ready()
        job_new = _submit(tmp_path / "in", taught.out_dir, env, tmp_path)
        job_old = _submit(tmp_path / "in", teachable_bundle, env, tmp_path)
    finally:
        worker.stop()

    labels = [*TINY_LABELS, "kiwi"]
    with session_factory(url)() as session:
        rows = {Path(r.path).name: r for r in session.scalars(select(Prediction).where(Prediction.job_id == job_new))}
        assert sorted(rows) == sorted(p.name for p in images)
        want = load_classifier(taught.out_dir, runtime="tf").predict_probs(images)
        for path, probs in zip(images, want, strict=True):
            r = rows[path.name]
            assert r.model_version == taught.model_version and r.label in labels
            # Every class of the taught bundle, the new one included, with the probabilities it gives here.
            assert dict(r.top_k) == pytest.approx(dict(zip(labels, probs.tolist(), strict=True)), abs=1e-4)
        diff = diff_jobs(session, job_old, job_new)
    assert diff["matched"] == 6 and diff["job_b"]["model_version"] == taught.model_version
    assert diff["job_a"]["model_version"] == taught.parent_version
