"""The fleet heals stalled jobs by itself: no extra process, nothing to run by hand.

Each worker's main process runs one `Healer` thread (started by `worker.tasks` when the worker is ready). Every
`HEAL_CHECK_S` seconds one worker of the fleet (the one that takes a Redis lease, SET NX EX) sweeps:

1. unfinished jobs with no new row, no heal and no submit for `HEAL_AFTER_S` (`db.queries.stalled_jobs`);
2. of those, the ones with no chunk waiting in the worker's queues or delivered and unacknowledged (read from the
   broker, `queued_job_ids`): a job whose chunks are only slow or waiting behind another job is left alone;
3. each is counted as healed with a compare-and-set on its row (`db.crud.claim_heal`), so of any number of workers
   that saw it exactly one goes on, and its files without a row are queued again by the idempotent resume
   (`worker.submit.resume_job`, what `--resume` does);
4. a job that stalls again after `HEAL_MAX` heals, or that cannot be healed (no file list, images missing from
   it), ends `failed` with the reason, its files without a row getting an error row (`db.crud.fail_job`).

What this heals: chunks lost with a Redis that restarted without persistence, a purged queue, a chunk whose
retries ran out while the database was down (its failure could not be written either), a worker machine gone.
The lease only saves work (one sweep per interval); the compare-and-set is what makes a heal happen once, even
when Redis restarted and forgot the lease.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.failsafe import worker_name

log = logging.getLogger(__name__)

SWEEP_KEY = "densenet121:heal-sweep"
TASK_NAME = "worker.classify_chunk"


def _job_of(payload: dict[str, Any]) -> str | None:
    """The job id of a Celery message (protocol 2: headers name the task, the body is [args, kwargs, embed])."""
    if payload.get("headers", {}).get("task") != TASK_NAME:
        return None
    body = payload.get("body", "")
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return str(args[0]) if args else None


def queued_job_ids(*, redis_url: str, queues: Sequence[str]) -> set[str] | None:
    """Jobs with a chunk waiting in one of `queues` or delivered and not acknowledged; None when Redis is down."""
    from worker.celery_app import app
    from worker.status import broker_available

    if not broker_available(redis_url=redis_url):
        return None
    try:
        with app.connection_for_read(redis_url) as conn:
            channel = conn.default_channel
            client = channel.client
            waiting = [m for q in queues for pri in channel.priority_steps  # kombu's key of each priority's list
                       for m in client.lrange(channel._q_for_pri(q, pri), 0, -1)]
            # Delivered, not acknowledged: [message, exchange, routing key] per delivery tag, for every queue.
            delivered = client.hvals(channel.unacked_key)
    except Exception:  # noqa: BLE001 - an unreadable broker: heal nothing this time
        log.warning("could not read the queues from the broker", exc_info=True)
        return None
    jobs = set()
    for item, is_delivery in [(m, False) for m in waiting] + [(m, True) for m in delivered]:
        try:
            payload = json.loads(item)
            job_id = _job_of(payload[0] if is_delivery else payload)
        except (ValueError, TypeError, KeyError, IndexError):
            continue  # not a message of ours
        if job_id:
            jobs.add(job_id)
    return jobs


def _take_lease(redis_url: str, seconds: float) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return bool(client.set(SWEEP_KEY, worker_name(), nx=True, ex=max(1, round(seconds))))
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError):
        return False


def heal_stalled_jobs(*, database_url: str, redis_url: str, queues: Sequence[str], heal_after_s: float,
                      max_heals: int, lease_s: float, chunk_size: int | None = None) -> list[dict[str, Any]]:
    """One sweep (see the module's docstring); returns what it did: [{'job_id', 'action', 'queued', 'error'}].

    `action` is 'healed' (its files without a row were queued again to `queues[0]`) or 'failed'. Nothing is done
    when another worker holds the lease, or when Redis or the database cannot be read.
    """
    from db.queries import stalled_jobs
    from db.session import session_factory

    if not _take_lease(redis_url, lease_s):
        return []
    with session_factory(database_url)() as session:
        stalled = stalled_jobs(session, quiet_since=datetime.now(UTC) - timedelta(seconds=heal_after_s))
    busy = queued_job_ids(redis_url=redis_url, queues=queues) if stalled else None
    if busy is None:
        return []
    actions = [_heal(job, database_url=database_url, redis_url=redis_url, queue=queues[0],
                     heal_after_s=heal_after_s, max_heals=max_heals, chunk_size=chunk_size)
               for job in stalled if job["job_id"] not in busy]
    return [a for a in actions if a is not None]


def _heal(job: dict[str, Any], *, database_url: str, redis_url: str, queue: str, heal_after_s: float,
          max_heals: int, chunk_size: int | None) -> dict[str, Any] | None:
    """Heal one stalled job, or fail it; None when another worker healed it first."""
    from db import crud
    from db.session import session_factory
    from worker.submit import SubmitError, resume_job

    sessions = session_factory(database_url)
    job_id, missing = job["job_id"], job["total"] - job["done"]
    quiet = f"{missing:,} image(s) without a row, nothing queued, no new row for {heal_after_s:.0f} s"
    if job["heals"] >= max_heals:
        error = (f"stalled again after {job['heals']} heal(s): {quiet}; see the workers' logs, then submit the "
                 "folder again")
    else:
        with sessions() as session, session.begin():
            if not crud.claim_heal(session=session, job_id=job_id, heals=job["heals"]):
                return None
        try:
            resumed = resume_job(job_id, chunk_size=chunk_size, database_url=database_url, redis_url=redis_url,
                                 queue=queue, check_broker=False)
        except SubmitError as exc:
            error = f"cannot heal: {exc}"
        else:
            if resumed["queued"]:
                log.warning("healed job %s (heal %d of %d): %s; queued %d file(s) in %d chunk(s)", job_id,
                            job["heals"] + 1, max_heals, quiet, resumed["queued"], resumed["chunks"])
                return {"job_id": job_id, "action": "healed", "queued": resumed["queued"], "error": None}
            error = (f"cannot heal: {missing:,} image(s) have no row and are not in the job's file list; "
                     "submit the folder again")
    with sessions() as session, session.begin():
        crud.fail_job(session=session, job_id=job_id, error=error, worker=worker_name())
    log.error("job %s failed: %s", job_id, error)
    return {"job_id": job_id, "action": "failed", "queued": 0, "error": error}


class Healer:
    """A daemon thread of the worker's main process that calls `heal_stalled_jobs` every `interval_s` seconds."""

    def __init__(self, *, database_url: str, redis_url: str, queues: Sequence[str], heal_after_s: float,
                 interval_s: float, max_heals: int, chunk_size: int | None = None):
        self.interval_s = interval_s
        self._kwargs = {"database_url": database_url, "redis_url": redis_url, "queues": list(queues),
                        "heal_after_s": heal_after_s, "max_heals": max_heals, "lease_s": interval_s,
                        "chunk_size": chunk_size}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healer", daemon=True)

    def start(self) -> Healer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from db.session import dispose_engines

        failing = None
        while not self._stop.wait(self.interval_s):
            try:
                heal_stalled_jobs(**self._kwargs)
                if failing:
                    log.warning("healing works again")
                failing = None
            except Exception as exc:  # noqa: BLE001 - the database or broker is down: try again next time
                if failing is not type(exc):  # once per outage, not every interval
                    log.warning("healing skipped until it works again: %s: %s", type(exc).__name__, exc)
                failing = type(exc)
            finally:
                # No pool kept open in the parent of the prefork children between sweeps.
                dispose_engines()
