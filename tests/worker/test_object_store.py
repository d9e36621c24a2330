"""Jobs whose folder is a bucket: an S3-compatible server on loopback (`moto_server`, moto in server mode), the
README's worker command started from a folder that holds no photo, and `python -m worker.submit s3://...` as a user
types it. Credentials and the endpoint reach both only through AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_ENDPOINT_URL. One worker serves the module: most of the time is its start and the model's load.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from db.models import Job, Prediction
from tests.helpers.images import write_good_images
from tests.helpers.processes import WorkerProcess, compose_worker_command, free_port

pytestmark = pytest.mark.slow  # a moto server, a worker process and redis-server

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "photos"
MAX_OBJECT_BYTES = 300_000  # the worker's limit here: `big.jpg` (400 kB) is over it


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A moto S3 server on a free loopback port; this process's environment points at it while the module runs."""
    pytest.importorskip("s3fs")
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server is not installed (pip install -r requirements-dev.txt)")
    tmp = tmp_path_factory.mktemp("moto")
    port = free_port()
    with open(tmp / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {(tmp / 'moto.log').read_text()[-2000:]}") from None
            time.sleep(0.1)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "BUNDLE_CACHE_DIR": str(tmp / "submitter-cache")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    try:
        yield SimpleNamespace(env=env, fs=fs, port=port)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def fleet(store, private_redis, tiny_bundle, tmp_path_factory):
    """The README's worker command, started in a folder with no photo, reading the bucket itself."""
    tmp = tmp_path_factory.mktemp("s3-fleet")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp / 'results.db'}"
    worker_env = {**store.env, "MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES), "BUNDLE_CACHE_DIR": str(tmp / "cache")}
    worker = WorkerProcess("s3", database_url=url, model_dir=str(tiny_bundle), log_dir=tmp, cwd=elsewhere,
                           redis_url=private_redis.url(0), argv=compose_worker_command(), extra_env=worker_env)
    try:
        worker.wait_ready()
        env = {**os.environ, **store.env, "REDIS_URL": private_redis.url(0), "DATABASE_URL": url,
               "MODEL_DIR": str(tiny_bundle), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        yield SimpleNamespace(url=url, redis_url=private_redis.url(0), worker=worker, env=env, cwd=elsewhere,
                              cache=tmp / "cache", model_dir=str(tiny_bundle))
    finally:
        worker.stop()


def _upload(store, tmp: Path, prefix: str, n: int, *, seed: int = 0) -> list[str]:
    """n distinct small photos under s3://photos/PREFIX/; their URLs."""
    urls = []
    for path in write_good_images(tmp / prefix, n, seed=seed):
        store.fs.put_file(str(path), f"{BUCKET}/{prefix}/{path.name}")
        urls.append(f"s3://{BUCKET}/{prefix}/{path.name}")
    return urls


def _submit_cli(fleet, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.submit", *args], env=fleet.env, cwd=fleet.cwd,
                          capture_output=True, text=True, timeout=timeout)


def _rows(url: str, job_id: str) -> dict[str, Prediction]:
    from db.session import session_factory

    with session_factory(url)() as session:
        return {r.path: r for r in session.scalars(select(Prediction).where(Prediction.job_id == job_id))}


def _job(url: str, job_id: str) -> Job:
    from db.session import session_factory

    with session_factory(url)() as session:
        return session.get(Job, job_id)


def test_bucket_job_one_row_per_object_then_resubmit_reuses(store, fleet, tmp_path):
    good = _upload(store, tmp_path, "in", 8) + _upload(store, tmp_path, "in/sub", 2, seed=100)
    store.fs.pipe({f"{BUCKET}/in/empty.jpg": b"", f"{BUCKET}/in/notes.jpg": b"this is text, not a picture\n",
                   f"{BUCKET}/in/big.jpg": os.urandom(MAX_OBJECT_BYTES + 100_000),
                   f"{BUCKET}/in/readme.txt": b"skipped: not an image name", f"{BUCKET}/in/.hidden.jpg": b"x"})

    first = _submit_cli(fleet, f"s3://{BUCKET}/in", "--recursive", "--wait", "--chunk-size", "4")
    assert first.returncode == 0, first.stderr + fleet.worker.log()[-3000:]
    job_id = first.stdout.split()[0]
    rows = _rows(fleet.url, job_id)
    bad = {f"s3://{BUCKET}/in/{n}" for n in ("empty.jpg", "notes.jpg", "big.jpg")}
    assert set(rows) == set(good) | bad  # one row per object with an image name; no file was downloaded to submit
    assert all(rows[u].error is None and rows[u].label for u in good)
    assert "empty" in rows[f"s3://{BUCKET}/in/empty.jpg"].error
    assert "not an image" in rows[f"s3://{BUCKET}/in/notes.jpg"].error
    assert "too large" in rows[f"s3://{BUCKET}/in/big.jpg"].error
    job = _job(fleet.url, job_id)
    assert (job.status, job.total, job.errors, job.skipped, job.reused) == ("done", 13, 3, 1, 0)
    assert job.folder == f"s3://{BUCKET}/in"

    again = _submit_cli(fleet, f"s3://{BUCKET}/in", "--recursive", "--wait", "--chunk-size", "4")
    assert again.returncode == 0, again.stderr
    second = again.stdout.split()[0]
    assert "reused 10," in again.stdout  # what submit --wait prints, as for a local folder
    job2 = _job(fleet.url, second)
    assert (job2.status, job2.total, job2.reused, job2.errors, job2.chunks) == ("done", 13, 10, 3, 1)
    rows2 = _rows(fleet.url, second)
    assert all(rows2[u].reused and rows2[u].label == rows[u].label for u in good)

    # A changed object (new ETag) is computed again; the others are still reused.
    store.fs.pipe_file(f"{BUCKET}/in/sub/img_0001.png", store.fs.cat_file(f"{BUCKET}/in/img_0000.jpg"))
    third = _submit_cli(fleet, f"s3://{BUCKET}/in", "--recursive", "--wait", "--chunk-size", "4")
    assert third.returncode == 0, third.stderr
    rows3 = _rows(fleet.url, third.stdout.split()[0])
    assert not rows3[f"s3://{BUCKET}/in/sub/img_0001.png"].reused
    assert sum(r.reused for r in rows3.values()) == 9


def test_object_gone_mid_job_and_heal_requeues_urls(store, fleet, tmp_path):
    """The chunks are lost (a Redis that restarted without persistence) and an object is deleted after listing:
    the heal queues the job's URLs again, and the deleted object gets its error row."""
    from jobs.heal import heal_job
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker
    from worker.celery_app import app

    urls = _upload(store, tmp_path, "heal", 6, seed=300)
    lost: list = []

    class LosingBroker:  # takes the chunks and drops them
        def available(self, timeout: float = 1.0) -> bool:
            return True

        def send_chunks(self, job_id, chunks, model_dir, *, queue=None) -> None:
            lost.extend(chunks)

    job_id = submit_folder(f"s3://{BUCKET}/heal", broker=LosingBroker(), database_url=fleet.url,
                           model_dir=fleet.model_dir, chunk_size=4)
    assert sum(len(c) for c in lost) == 6 and all(item[0].startswith("s3://") for c in lost for item in c)
    store.fs.rm_file(f"{BUCKET}/heal/img_0002.jpg")

    job = _job(fleet.url, job_id)
    done = heal_job({"job_id": job_id, "total": job.total, "done": job.done, "heals": job.heals},
                    database_url=fleet.url, broker=RedisBroker(fleet.redis_url),
                    queue=app.conf.task_default_queue, heal_after_s=0, max_heals=3, chunk_size=4)
    assert done["action"] == "healed" and done["queued"] == 6
    from tests.helpers.processes import wait_job

    progress = wait_job(job_id, fleet.url, timeout=120, workers=[fleet.worker])
    assert progress["status"] == "done" and progress["errors"] == 1
    rows = _rows(fleet.url, job_id)
    assert set(rows) == set(urls)
    assert "gone" in rows[f"s3://{BUCKET}/heal/img_0002.jpg"].error


def test_bundle_url_fetched_once_per_host(store, fleet, tmp_path, tiny_bundle):
    from jobs.submit import submit_folder
    from model.bundle import BundleConfig
    from tests.helpers.processes import wait_job
    from worker.broker import RedisBroker

    store.fs.put(f"{tiny_bundle}/", f"{BUCKET}/models/tiny/", recursive=True)
    urls = _upload(store, tmp_path, "bundle", 3, seed=600)
    job_id = submit_folder(f"s3://{BUCKET}/bundle", broker=RedisBroker(fleet.redis_url), database_url=fleet.url,
                           model_dir=f"s3://{BUCKET}/models/tiny", chunk_size=4)
    progress = wait_job(job_id, fleet.url, timeout=120, workers=[fleet.worker])
    assert progress["status"] == "done" and progress["errors"] == 0
    assert set(_rows(fleet.url, job_id)) == set(urls)
    version = BundleConfig.read(tiny_bundle).model_version
    assert _job(fleet.url, job_id).model_dir == f"s3://{BUCKET}/models/tiny"  # never a path of the submitter's
    assert (fleet.cache / version / "config.json").exists()  # the worker's own copy, keyed by model_version
    assert (Path(store.env["BUNDLE_CACHE_DIR"]) / version / "model.keras").exists()


def test_listing_errors_are_one_line_exit_2(store, fleet):
    missing = _submit_cli(fleet, "s3://no-such-bucket/in", "--recursive", timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert missing.stderr.startswith("error: cannot list s3://no-such-bucket/in: not found")

    fleet.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        down = _submit_cli(fleet, f"s3://{BUCKET}/in", timeout=120)
    finally:
        fleet.env["AWS_ENDPOINT_URL"] = store.env["AWS_ENDPOINT_URL"]
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "not reachable" in down.stderr and "AWS_ENDPOINT_URL" in down.stderr


def test_read_errors_name_the_reason():
    from jobs.storage import listing_error, read_error

    assert "access denied" in str(read_error("s3://b/k.jpg", PermissionError("AccessDenied"), 10))
    assert "gone" in str(read_error("s3://b/k.jpg", FileNotFoundError("k.jpg"), 10))
    NoCredentialsError = type("NoCredentialsError", (Exception,), {})  # botocore's name is what is matched
    assert "no credentials" in str(listing_error("s3://b", NoCredentialsError("Unable to locate credentials")))
