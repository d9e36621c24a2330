"""Helpers for the batch-path tests: a real Redis database, SQLite/PostgreSQL URLs, Celery worker processes.

Redis tests use database 14 (`TEST_REDIS_URL`) and a fresh queue name per run, and flush only that database.
PostgreSQL tests work in a schema of their own (search_path in the URL), dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TEST_PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def redis_or_skip() -> str:
    from worker.submit import broker_available

    if not broker_available(timeout=1.0, redis_url=TEST_REDIS_URL):
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL} (make services starts it)")
    return TEST_REDIS_URL


def flush_test_redis() -> None:
    import redis

    db = int(TEST_REDIS_URL.rsplit("/", 1)[-1] or 0)
    assert db != 0, "never flush Redis database 0"
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()


def postgres_schema_url(schema: str) -> str:
    return f"{TEST_PG_URL}?options=-csearch_path%3D{schema}"


def create_pg_schema_or_skip() -> tuple[str, str]:
    """A new empty schema; returns (schema, url whose search_path points at it)."""
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
    return schema, postgres_schema_url(schema)


def drop_pg_schema(schema: str) -> None:
    import sqlalchemy as sa

    from db.session import dispose_engines

    dispose_engines()
    engine = sa.create_engine(TEST_PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def database_url_for(kind: str, tmp_path: Path) -> tuple[str, str | None]:
    """(url, pg schema or None) for 'sqlite' or 'postgres'."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}", None
    schema, url = create_pg_schema_or_skip()
    return url, schema


class WorkerProcess:
    """One `celery worker` (prefork, concurrency 1) as a subprocess in its own process group."""

    def __init__(self, name: str, *, queue: str, database_url: str, model_dir: str, log_dir: Path,
                 app: str = "worker.celery_app", extra_env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "DATABASE_URL": database_url, "MODEL_DIR": model_dir,
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(extra_env or {})}
        cmd = ["nice", "-n", "10", sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork",
               "--concurrency", "1", "--loglevel", "INFO", "-Q", queue, "-n", f"{name}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready after {timeout} s:\n{self.log()[-3000:]}")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown of the worker and its child
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()


def wait_job(job_id: str, database_url: str, timeout: float = 120.0, workers: list[WorkerProcess] = ()) -> dict:
    from worker.submit import job_progress

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job_progress(job_id, database_url=database_url)
        if progress["finished"]:
            return progress
        for w in workers:
            if w.proc.poll() is not None and not getattr(w, "killed", False):
                raise RuntimeError(f"worker {w.name} died:\n{w.log()[-3000:]}")
        time.sleep(0.2)
    logs = "\n".join(w.log()[-2000:] for w in workers)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s: {progress}\n{logs}")
