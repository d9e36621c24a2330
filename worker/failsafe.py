"""How a chunk that no worker can run still ends: error rows, the reason on the job, a note in Redis.

`worker.tasks` imports this at the top, before any task runs, so it is loaded while what a task needs may still be
missing: the pipeline does not import, the model does not load, the database stays unreachable through every
retry. It writes with `db`'s tables and rules (`db.crud.record_failure`, the finish rule of `db.crud.refresh_job`,
the engines of `db.session`), which import only SQLAlchemy: a worker whose `db` cannot be imported does not start.
What it cannot write (the database itself is down) is noted in Redis, and the fleet heals it (`worker.heal`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

from db import crud
from db.session import session_factory

log = logging.getLogger(__name__)

# The broker's Redis keeps the last worker errors, so a submitter waiting on a stuck job can show one.
ERRORS_KEY = "densenet121:worker-errors"
ERRORS_KEPT = 100


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_chunk_failure(*, database_url: str, job_id: str, items: Sequence[Sequence[str | None]], error: str,
                         worker: str | None = None) -> int:
    """Give each image of the chunk that has no row an error row, put `error` on the job and recount it.

    Rows an earlier delivery stored are kept. The job ends `failed` once every image has a row, and keeps the
    first reason it was given. Returns the number of images in the chunk (0 for an unknown job).
    """
    with session_factory(database_url)() as session, session.begin():
        job = crud.record_failure(session=session, job_id=job_id, items=items, error=error,
                                  worker=worker or worker_name())
    if job is None:
        log.error("job %s does not exist; dropping the failure of %d images", job_id, len(items))
        return 0
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
