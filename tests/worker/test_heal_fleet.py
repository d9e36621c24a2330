"""Jobs that heal themselves, the fleet as a user runs it (slow): three workers started with the README's command on
a private redis-server without persistence and a private PostgreSQL, which the tests stop, kill and start; nobody
runs `--resume`. The sweep on its own: test_heal.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, select

from db.models import JobFile, Prediction
from tests.helpers import ROOT
from tests.helpers.processes import (
    PrivatePostgres,
    WorkerProcess,
    compose_worker_command,
    wait_job,
)

HEAL_ENV = {"HEAL_AFTER_S": "2", "HEAL_CHECK_S": "0.5", "HEAL_MAX": "3", "TASK_MAX_RETRIES": "1",
            "TASK_RETRY_MAX_S": "1", "CHUNK_SIZE": "2"}
SUCCEEDED = re.compile(r"Task worker\.classify_chunk\[[^\]]+\] succeeded in [\d.]+s: (\d+)")


class LostBroker:
    """A broker that loses every chunk it is given, as a Redis restarted without persistence would."""

    def send_chunks(self, *_args, **_kw) -> None:
        pass


@pytest.fixture(scope="module")
def fleet(private_redis, tiny_bundle, tmp_path_factory):
    """Three workers started with the README's command (each a host of its own), on a private PostgreSQL."""
    try:
        pg = PrivatePostgres()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"cannot start a private PostgreSQL: {exc}")
    tmp = tmp_path_factory.mktemp("heal")
    workers = []
    try:
        url = pg.create_database("results")
        from db.migrate import upgrade

        upgrade(url)
        for i in range(3):
            workers.append(WorkerProcess(f"heal{i}", database_url=url, model_dir=str(tiny_bundle), log_dir=tmp,
                                         redis_url=private_redis.url(0), extra_env=HEAL_ENV, cwd=ROOT,
                                         argv=[*compose_worker_command(), "-n", f"heal{i}@%h"]))
        for w in workers:
            w.wait_ready()
        env = {**os.environ, "REDIS_URL": private_redis.url(0), "DATABASE_URL": url, "MODEL_DIR": str(tiny_bundle),
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **HEAL_ENV}
        fleet = SimpleNamespace(url=url, pg=pg, redis=private_redis, workers=workers, env=env, bundle=tiny_bundle)
        _warm_up(fleet, tmp)
        yield fleet
    finally:
        for w in workers:
            w.stop()
        from db.session import dispose_engines

        dispose_engines()
        pg.close()


def _warm_up(fleet, tmp: Path) -> None:
    """A first job of one-image chunks, so that each worker's process has loaded the model and run it once: the
    tests then measure healing, not TensorFlow starting."""
    from tests.helpers.images import write_good_images

    write_good_images(tmp / "warm", 6, seed=900)
    # Three TensorFlow processes start at once: minutes on a loaded 2-core machine.
    done = _cli(fleet, str(tmp / "warm"), "--chunk-size", "1", "--wait", cwd=tmp, timeout=400)
    assert done.returncode == 0, done.stderr + "".join(w.log()[-2000:] for w in fleet.workers)


def _cli(fleet, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker.submit", *args], env=fleet.env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _in_redis(fleet) -> int:
    from worker.broker import RedisBroker

    q = RedisBroker(fleet.redis.url(0)).queue_length()
    return -1 if q is None else q["queued"] + q["in_flight"]


def _until(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(0.1)


def _paused(fleet, sig: int) -> None:
    for w in fleet.workers:
        for pid in w.children():
            os.kill(pid, sig)


def _submit_during(fleet, folder: Path, cwd: Path, outage) -> str:
    """Submit with every worker's pool process stopped, so that all 6 chunks sit in Redis (3 reserved, 3 waiting),
    then call `outage()` and let the workers go on; returns the job id."""
    _paused(fleet, signal.SIGSTOP)
    try:
        done = _cli(fleet, str(folder), "--chunk-size", "2", cwd=cwd)
        assert done.returncode == 0, done.stderr
        _until(lambda: _in_redis(fleet) == 6, "6 chunks in Redis")
        outage()
    finally:
        _paused(fleet, signal.SIGCONT)
    return done.stdout.split()[0]


def _finished_by_itself(fleet, job_id: str, images: list[Path], timeout: float = 90.0) -> dict:
    from db.session import session_factory

    progress = wait_job(job_id, fleet.url, timeout=timeout, workers=fleet.workers)
    with session_factory(fleet.url)() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()
    counts = Counter(r.path for r in rows)
    assert set(counts) == {str(p.resolve()) for p in images} and set(counts.values()) == {1}, counts
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error]
    assert (progress["status"], progress["done"], progress["errors"]) == ("done", len(images), 0), progress
    return progress


def _classified(fleet) -> int:
    """Images the fleet classified so far, from the workers' logs (a row written twice counts twice here)."""
    return sum(int(n) for w in fleet.workers for n in SUCCEEDED.findall(w.log()))


@pytest.mark.slow
def test_database_down_longer_than_the_retries(fleet, tmp_path, good_images):
    images = good_images(12, "in", seed=500)
    job_id = _submit_during(fleet, tmp_path / "in", tmp_path, fleet.pg.stop)
    # Every chunk is taken, retried and given up while the database is down: its failure cannot be written either.
    _until(lambda: _in_redis(fleet) == 0, "every chunk given up", timeout=90)
    back = time.monotonic()
    fleet.pg.start()
    progress = _finished_by_itself(fleet, job_id, images)
    print(f"\ndatabase back -> job done: {time.monotonic() - back:.1f} s, healed {progress['heals']}x")
    assert 1 <= progress["heals"] <= 3
    assert "retry 1 of 1" in "".join(w.log() for w in fleet.workers)


@pytest.mark.slow
def test_redis_without_persistence_killed_mid_job(fleet, tmp_path, good_images):
    images = good_images(12, "in", seed=600)

    def crash() -> None:
        fleet.redis.kill()
        fleet.redis.start()

    job_id = _submit_during(fleet, tmp_path / "in", tmp_path, crash)
    back = time.monotonic()
    progress = _finished_by_itself(fleet, job_id, images)
    print(f"\nredis back -> job done: {time.monotonic() - back:.1f} s, healed {progress['heals']}x")
    assert progress["heals"] >= 1


@pytest.mark.slow
def test_three_workers_heal_a_stalled_job_once_and_wait_attaches(fleet, tmp_path, good_images):
    """A job whose chunks were never queued (lost before any worker saw them); `--wait JOB_ID` watches it."""
    from jobs.submit import submit_folder

    images = good_images(12, "in", seed=700)
    before = _classified(fleet)
    job_id = submit_folder(tmp_path / "in", model_dir=fleet.bundle, chunk_size=2, database_url=fleet.url,
                           broker=LostBroker(), check_broker=False)
    watcher = subprocess.Popen([sys.executable, "-m", "worker.submit", "--wait", job_id[:8]], env=fleet.env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    assert out.splitlines()[0] == job_id and f"job {job_id}: done, 12/12 images" in out
    progress = _finished_by_itself(fleet, job_id, images, timeout=10)
    time.sleep(3)  # longer than HEAL_AFTER_S: a second heal would have happened by now
    assert _in_redis(fleet) == 0
    assert _classified(fleet) - before <= len(images) + 2  # nothing classified twice beyond one chunk
    from jobs.progress import job_progress

    assert job_progress(job_id, database_url=fleet.url)["heals"] == progress["heals"] == 1


@pytest.mark.slow
def test_a_job_that_cannot_be_healed_fails_and_wait_exits_1(fleet, tmp_path, good_images):
    from db.session import session_factory
    from jobs.submit import submit_folder

    good_images(4, "in", seed=800)
    job_id = submit_folder(tmp_path / "in", model_dir=fleet.bundle, chunk_size=2, database_url=fleet.url,
                           broker=LostBroker(), check_broker=False)
    with session_factory(fleet.url)() as session, session.begin():
        session.execute(delete(JobFile).where(JobFile.job_id == job_id))  # its file list is gone
    waited = _cli(fleet, "--wait", job_id, cwd=tmp_path)
    assert waited.returncode == 1, waited.stderr
    assert f"job {job_id} failed: cannot heal: job {job_id} has no file list" in waited.stderr
    assert f"job {job_id}: failed, 0/4 images" in waited.stdout
    unknown = _cli(fleet, "--wait", "nosuchjob", cwd=tmp_path)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2, "error: no job with id 'nosuchjob'; list the jobs with: python -m db.report --list")
