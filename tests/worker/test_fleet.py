"""The fleet as documented, on a private Redis without persistence: real worker processes started with the
README's (docker-compose's) command, the CLIs as a user runs them, a broker killed and a queue flushed mid-job,
then `--resume`; a task that cannot import its pipeline; a `--wait` that explains a stalled job.

Redis is a `redis-server` of this module's own (`--save "" --appendonly no`), so killing it touches nothing else.
To land a crash while a job is queued, whatever the machine's speed, the worker's pool process is paused
(SIGSTOP) while the job is submitted and its chunks are lost, and resumed (SIGCONT) after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from db.models import Prediction
from tests.helpers import ROOT
from tests.helpers.processes import CELERY, WorkerProcess, compose_worker_command

pytestmark = pytest.mark.slow  # worker processes and a redis-server

BROKEN_APP = '''"""A worker whose tasks cannot import their pipeline (a broken install, a half-deployed checkout)."""
import sys

sys.modules["worker.pipeline"] = None  # from here on, `import worker.pipeline` raises ModuleNotFoundError
from worker import app  # noqa: E402,F401
'''


def _env(redis_url: str, database_url: str, model_dir) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "MODEL_DIR": str(model_dir),
            "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def fleet(private_redis, tiny_bundle, tmp_path_factory):
    """The README's worker command, run from the repo root, on Redis database 0 and a SQLite file."""
    tmp = tmp_path_factory.mktemp("fleet")
    url = f"sqlite:///{tmp / 'results.db'}"
    worker = WorkerProcess("readme", database_url=url, model_dir=str(tiny_bundle), log_dir=tmp,
                           redis_url=private_redis.url(0), argv=compose_worker_command(), cwd=ROOT)
    try:
        worker.wait_ready()
        yield SimpleNamespace(url=url, redis_url=private_redis.url(0), worker=worker,
                              env=_env(private_redis.url(0), url, tiny_bundle))
    finally:
        worker.stop()


def cli(module: str, *args: str, env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it, from `cwd` (never the repo root here)."""
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _rows(url: str, job_id: str) -> list[Prediction]:
    from db.session import session_factory

    with session_factory(url)() as session:
        return session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()


def _one_row_per_image(url: str, job_id: str, images: list[Path]) -> list[Prediction]:
    rows = _rows(url, job_id)
    counts = Counter(r.path for r in rows)
    assert set(counts) == {str(p.resolve()) for p in images}
    assert set(counts.values()) == {1}, [p for p, n in counts.items() if n > 1]
    return rows


def _wait_until(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not after {timeout} s")


def _queued(redis_url: str) -> int:
    from worker.broker import RedisBroker

    q = RedisBroker(redis_url).queue_length()
    return q["queued"] + q["in_flight"]


def _paused(worker: WorkerProcess, sig: int) -> list[int]:
    children = worker.children()
    assert children, worker.log()[-2000:]
    for pid in children:
        os.kill(pid, sig)
    return children


def _submit(fleet, folder: Path, cwd: Path, *args: str) -> str:
    done = cli("worker.submit", str(folder), *args, env=fleet.env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def test_readme_worker_from_the_repo_root_classifies_a_folder(fleet, tmp_path, good_images):
    from jobs.progress import job_progress

    command = " ".join(["celery", *compose_worker_command()[1:]])
    assert f"`{command}`" in (ROOT / "README.md").read_text()
    folder = tmp_path / "in"
    images = good_images(10, "in")
    (folder / "empty.jpg").write_bytes(b"")
    done = cli("worker.submit", str(folder), "--wait", "--chunk-size", "4", env=fleet.env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + fleet.worker.log()[-3000:]
    job_id = done.stdout.split()[0]

    rows = {Path(r.path).name: r for r in _one_row_per_image(fleet.url, job_id, [*images, folder / "empty.jpg"])}
    assert "empty" in rows["empty.jpg"].error
    assert all(rows[p.name].label in {"apple", "banana", "cherry"} for p in images)
    progress = job_progress(job_id, database_url=fleet.url)
    assert (progress["status"], progress["done"], progress["errors"], progress["error"]) == ("done", 11, 1, None)

    status = cli("worker.status", env=fleet.env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    line = status.stdout.splitlines()[0]
    assert line == "1 worker online · 0 chunks queued, 0 in flight · no running jobs", status.stdout

    from webui.batch import fleet_markdown

    # the Batch tab shows the same line
    assert fleet_markdown(fleet.env["REDIS_URL"], fleet.env["DATABASE_URL"]) == f"**Fleet:** {line}"


def test_redis_killed_mid_job_then_resume(fleet, private_redis, tmp_path, good_images):
    """Redis without persistence dies with SIGKILL while a job is queued: `--resume` finishes it, one row each."""
    from jobs.progress import job_progress

    images = good_images(24, "in", seed=100)
    children = _paused(fleet.worker, signal.SIGSTOP)
    try:
        job_id = _submit(fleet, tmp_path / "in", tmp_path, "--chunk-size", "2")
        _wait_until(lambda: _queued(fleet.redis_url) == 12, "12 chunks in Redis")
        private_redis.kill()
        private_redis.start()
        # The queued chunks are gone; at most the one the worker had reserved comes back (Celery restores it).
        assert _queued(fleet.redis_url) <= 1
    finally:
        for pid in children:
            os.kill(pid, signal.SIGCONT)
    assert not job_progress(job_id, database_url=fleet.url)["finished"]

    resumed = cli("worker.submit", "--resume", job_id, "--wait", env=fleet.env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr + fleet.worker.log()[-3000:]
    assert f"job {job_id}: queued" in resumed.stderr
    rows = _one_row_per_image(fleet.url, job_id, images)
    assert all(r.error is None for r in rows)
    progress = job_progress(job_id, database_url=fleet.url)
    assert (progress["status"], progress["done"], progress["total"]) == ("done", 24, 24)


def test_queue_flushed_mid_job_then_resume_twice(fleet, tmp_path, good_images):
    """`celery purge` empties the queue mid-job; `--resume` run twice while the chunk a worker held also runs."""
    from jobs.progress import job_progress
    from worker.broker import RedisBroker

    images = good_images(20, "in", seed=200)
    children = _paused(fleet.worker, signal.SIGSTOP)
    try:
        job_id = _submit(fleet, tmp_path / "in", tmp_path, "--chunk-size", "2")
        _wait_until(lambda: _queued(fleet.redis_url) == 10, "10 chunks in Redis")
        purge = subprocess.run([CELERY, "-A", "worker", "purge", "-f"], env=fleet.env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert purge.returncode == 0, purge.stderr
        assert RedisBroker(fleet.redis_url).queue_length()["queued"] == 0
    finally:
        for pid in children:
            os.kill(pid, signal.SIGCONT)

    first = cli("worker.submit", "--resume", job_id, env=fleet.env, cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.split()[0] == job_id, first.stderr
    second = cli("worker.submit", "--resume", job_id, "--wait", env=fleet.env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # Files queued twice may still be running after the job is done: count rows once nothing is left.
    _wait_until(lambda: _queued(fleet.redis_url) == 0, "queue drained")
    _one_row_per_image(fleet.url, job_id, images)
    progress = job_progress(job_id, database_url=fleet.url)
    assert (progress["status"], progress["done"], progress["errors"]) == ("done", 20, 0)
    third = cli("worker.submit", "--resume", job_id, env=fleet.env, cwd=tmp_path)
    assert "queued 0 file(s)" in third.stderr


def test_task_that_cannot_import_its_pipeline_fails_the_job(private_redis, tiny_bundle, tmp_path, good_images):
    """Every image still gets a row (the error), the job ends failed with the reason, `--wait` exits 1."""
    from jobs.progress import job_progress
    from worker.broker import RedisBroker

    appdir = tmp_path / "app"
    appdir.mkdir()
    (appdir / "broken_app.py").write_text(BROKEN_APP)
    url, redis_url = f"sqlite:///{tmp_path / 'results.db'}", private_redis.url(1)  # a database no other worker uses
    # The documented flags, started from a folder that is not the repo root.
    argv = [CELERY, "-A", "broken_app", *compose_worker_command()[3:]]
    worker = WorkerProcess("broken", database_url=url, model_dir=str(tiny_bundle), log_dir=tmp_path,
                           redis_url=redis_url, argv=argv, cwd=appdir)
    images = good_images(6, "in", seed=300)
    try:
        worker.wait_ready()
        done = cli("worker.submit", str(tmp_path / "in"), "--wait", "--chunk-size", "4",
                   env=_env(redis_url, url, tiny_bundle), cwd=tmp_path)
    finally:
        worker.stop()
    assert done.returncode == 1, done.stderr + worker.log()[-3000:]
    job_id = done.stdout.split()[0]
    assert f"job {job_id} failed: worker failed: ModuleNotFoundError" in done.stderr
    rows = _one_row_per_image(url, job_id, images)
    assert all("ModuleNotFoundError" in r.error and r.label is None for r in rows)
    progress = job_progress(job_id, database_url=url)
    assert (progress["status"], progress["done"], progress["errors"]) == ("failed", 6, 6)
    assert "import of worker.pipeline halted" in progress["error"]
    assert "ModuleNotFoundError" in RedisBroker(redis_url).recent_errors(job_id=job_id)[0]["error"]


def _ctrl_c_as_in_a_terminal() -> None:
    # A suite started in the background (`make test &`, CI runners) inherits SIGINT ignored, and so would the
    # child: give it the disposition a terminal gives, so that SIGINT is the user's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_wait_explains_a_stalled_job(private_redis, tiny_bundle, tmp_path, good_images):
    """No worker, then a lost queue: `--wait` says why it is stuck and how to recover, and keeps waiting."""
    redis_url = private_redis.url(2)  # no worker listens here
    env = _env(redis_url, f"sqlite:///{tmp_path / 'results.db'}", tiny_bundle)
    good_images(3, "in", seed=400)
    proc = subprocess.Popen([sys.executable, "-m", "worker.submit", str(tmp_path / "in"), "--wait", "--chunk-size",
                             "1", "--stall-after", "1"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    out: dict[str, str] = {"stdout": "", "stderr": ""}

    def drain(name: str) -> None:
        for chunk in iter(lambda: getattr(proc, name).read(1), ""):
            out[name] += chunk

    readers = [threading.Thread(target=drain, args=(n,), daemon=True) for n in out]
    for t in readers:
        t.start()
    try:
        _wait_until(lambda: "No worker answers" in out["stderr"], "a stall report", timeout=90)
        job_id = out["stdout"].split()[0]
        assert f"job {job_id}: no progress for" in out["stderr"]
        assert "Workers online: 0; 3 chunks queued, 0 in flight" in out["stderr"]
        assert "start one (celery -A worker worker" in out["stderr"]
        assert "--resume" not in out["stderr"]  # the chunks are still queued: nothing to resume yet

        private_redis.client(2).delete("celery")  # the queue is lost
        _wait_until(lambda: f"python -m worker.submit --resume {job_id}" in out["stderr"], "a resume hint", 90)
        assert proc.poll() is None  # it keeps waiting
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
        for t in readers:
            t.join(10)
    assert rc == 130, out["stderr"][-2000:]
    assert "stopped waiting; the job goes on" in out["stderr"]
