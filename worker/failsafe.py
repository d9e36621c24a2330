"""How a chunk that no worker can run still ends: error rows, the reason on the job, a note in Redis.

`worker.tasks` imports this at the top, before any task runs, and it depends on nothing of the project but the
database URL: only SQLAlchemy Core and redis-py. So when what a task needs cannot be had (the pipeline or `db`
does not import, the model does not load, the database stays unreachable through every retry), this code is
already loaded and cannot fail the same way. The tables are declared here again, with only the columns it
writes, on purpose: importing `db.models` is one of the things that may be broken.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# The broker's Redis keeps the last worker errors, so a submitter waiting on a stuck job can show one.
ERRORS_KEY = "densenet121:worker-errors"
ERRORS_KEPT = 100
FAILED, FINISHED = "failed", ("done", "failed")

_md = MetaData()
_jobs = Table(
    "jobs", _md,
    Column("id", String(32), primary_key=True), Column("status", String(16)), Column("total", Integer),
    Column("done", Integer), Column("errors", Integer), Column("reused", Integer), Column("error", Text),
    Column("model_version", String(64)), Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)
_predictions = Table(
    "predictions", _md,
    Column("job_id", String(32)), Column("path", Text), Column("model_version", String(64)),
    Column("content_hash", String(64)), Column("error", Text), Column("reused", Boolean),
    Column("worker", String(255)), Column("created_at", DateTime(timezone=True)),
)

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _engine(url: str) -> Engine:
    # Per process: a forked pool child must not share its parent's connections.
    key = (os.getpid(), url)
    with _lock:
        if key not in _engines:
            sqlite_db = make_url(url).get_backend_name() == "sqlite"
            _engines[key] = create_engine(url, connect_args={"timeout": 30} if sqlite_db else {},
                                          pool_pre_ping=not sqlite_db)
        return _engines[key]


def record_chunk_failure(*, database_url: str, job_id: str, items: Sequence[Sequence[str | None]], error: str,
                         worker: str | None = None) -> int:
    """Give each image of the chunk that has no row an error row, put `error` on the job and recount it.

    Rows an earlier delivery stored are kept. The job ends `failed` once every image has a row, and keeps the
    first reason it was given. Returns the number of images in the chunk (0 for an unknown job).
    """
    engine = _engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    with engine.begin() as conn:
        model_version = conn.scalar(select(_jobs.c.model_version).where(_jobs.c.id == job_id))
        if model_version is None:
            log.error("job %s does not exist; dropping the failure of %d images", job_id, len(items))
            return 0
        rows = [{"job_id": job_id, "path": str(p), "model_version": model_version, "content_hash": h,
                 "error": error, "reused": False, "worker": worker or worker_name(), "created_at": now}
                for p, h in items]
        if rows:
            insert = (postgresql.insert if postgres else sqlite.insert)(_predictions).values(rows)
            conn.execute(insert.on_conflict_do_nothing(index_elements=["job_id", "path", "model_version"]))
        # Locked after the insert, in the same order as db.crud.refresh_job, so the two never deadlock.
        locked = select(_jobs.c.id).where(_jobs.c.id == job_id)
        conn.execute(locked.with_for_update() if postgres else locked)
        done, errors, reused = conn.execute(
            select(func.count(), func.count(_predictions.c.error),
                   func.coalesce(func.sum(case((_predictions.c.reused, 1), else_=0)), 0))
            .where(_predictions.c.job_id == job_id)
        ).one()
        conn.execute(update(_jobs).where(_jobs.c.id == job_id).values(
            done=done, errors=errors, reused=reused, error=func.coalesce(_jobs.c.error, error)))
        conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status.not_in(FINISHED),
                                         _jobs.c.done >= _jobs.c.total)
                     .values(status=FAILED, finished_at=now, started_at=func.coalesce(_jobs.c.started_at, now)))
    return len(items)


def note_worker_error(*, redis_url: str, error: str, job_id: str | None = None) -> None:
    """Keep `error` in the broker's Redis for `worker.status` and a waiting submitter; never raises."""
    import redis

    entry = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"), "worker": worker_name(),
                        "job_id": job_id, "error": error})
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.pipeline().lpush(ERRORS_KEY, entry).ltrim(ERRORS_KEY, 0, ERRORS_KEPT - 1).execute()
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError, ValueError):
        log.warning("could not note the worker error in Redis: %s", error)


def recent_worker_errors(*, redis_url: str, job_id: str | None = None, limit: int = 5) -> list[dict]:
    """The newest worker errors noted in Redis (of `job_id` when given, with job-less ones); [] when unreachable."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            raw = client.lrange(ERRORS_KEY, 0, ERRORS_KEPT - 1)
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError, ValueError):
        return []
    found = []
    for item in raw:
        try:
            entry = json.loads(item)
        except ValueError:
            continue
        if job_id is None or entry.get("job_id") in (job_id, None):
            found.append(entry)
            if len(found) >= limit:
                break
    return found
