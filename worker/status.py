"""The fleet at a glance: `python -m worker.status` (workers online, queue length, running jobs, last errors).

`fleet_status()` gathers it as plain data, `status_line()` makes the one line the demo's Batch tab shows, and
`stall_report()` is what `worker.submit --wait` prints when a job stops moving: why it may be stuck and how to
recover. Every part degrades on its own: an unreachable broker or database is reported, never raised.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

WORKER_COMMAND = "celery -A worker worker --pool prefork --concurrency 1 --loglevel INFO"


REDIS_HINT = (
    "Start Redis with one of:\n"
    "  make batch-up                       (local redis-server + one worker, in the background)\n"
    "  redis-server --daemonize yes        (needs the redis-server package: apt-get install redis-server)\n"
    "  docker compose up -d redis\n"
    "or point REDIS_URL at a running Redis."
)


def _settings():
    from settings import get_settings

    return get_settings()


def broker_available(timeout: float = 1.0, *, redis_url: str | None = None) -> bool:
    """True when the Redis broker answers a PING within `timeout` seconds."""
    import redis

    url = redis_url or _settings().redis_url
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False


def workers_online(timeout: float = 1.0, *, redis_url: str | None = None) -> list[str]:
    """Names of the workers that answer a ping ([] means queued work waits, or the broker is down)."""
    from celery import Celery

    redis_url = redis_url or _settings().redis_url
    if not broker_available(redis_url=redis_url):  # fast, where kombu would retry a dead broker for seconds
        return []
    # An app of its own for this broker: the ping goes out through the app's producer pool, which would be the
    # configured broker's even when another connection is passed.
    probe = Celery("worker", broker=redis_url, set_as_current=False)
    try:
        replies = probe.control.ping(timeout=timeout) or []
    except Exception:  # noqa: BLE001 - an unreachable broker means no worker either
        return []
    finally:
        probe.close()
    return sorted(name for reply in replies for name in reply)


def queue_length(*, redis_url: str | None = None, queue: str | None = None) -> dict[str, int] | None:
    """{'queued': chunks waiting, 'in_flight': delivered, not yet acknowledged}; None when Redis is unreachable."""
    from worker.celery_app import app

    redis_url = redis_url or _settings().redis_url
    if not broker_available(redis_url=redis_url):  # fast, where kombu would retry a dead broker for seconds
        return None
    try:
        with app.connection_for_read(redis_url) as conn:
            channel = conn.default_channel
            queued = channel.queue_declare(queue=queue or app.conf.task_default_queue).message_count
            in_flight = channel.client.hlen(channel.unacked_key)
    except Exception:  # noqa: BLE001 - reported as unreachable
        return None
    return {"queued": int(queued), "in_flight": int(in_flight)}


def _rate(job: dict[str, Any]) -> float | None:
    """Images computed (not reused) per second since the first worker started on the job."""
    if not job.get("started_at"):
        return None
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else datetime.now(UTC)
    secs = (end - datetime.fromisoformat(job["started_at"])).total_seconds()
    computed = job["done"] - job["reused"]
    return computed / secs if secs > 0 and computed > 0 else None


def running_jobs(*, database_url: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """Jobs not finished yet, oldest first, with their rate (images/s) added."""
    from sqlalchemy import inspect, select

    from db.models import Job, JobStatus
    from db.queries import job_dict
    from db.session import get_engine, session_factory

    database_url = database_url or _settings().database_url
    if not inspect(get_engine(database_url)).has_table(Job.__tablename__):
        return []  # a database no entry point has migrated yet: no job was ever submitted to it
    with session_factory(database_url)() as session:
        jobs = session.scalars(select(Job).where(Job.status.not_in(JobStatus.FINISHED))
                               .order_by(Job.created_at).limit(limit)).all()
        return [{**(d := job_dict(j)), "rate": _rate(d)} for j in jobs]


def fleet_status(*, redis_url: str | None = None, database_url: str | None = None, queue: str | None = None,
                 timeout: float = 1.0) -> dict[str, Any]:
    """Workers, queue and running jobs; `jobs` is None (and `db_error` set) when the database cannot be read."""
    from worker.failsafe import recent_worker_errors

    redis_url = redis_url or _settings().redis_url
    status: dict[str, Any] = {"workers": workers_online(timeout, redis_url=redis_url),
                              "queue": queue_length(redis_url=redis_url, queue=queue),
                              "errors": recent_worker_errors(redis_url=redis_url, limit=3),
                              "jobs": None, "db_error": None}
    try:
        status["jobs"] = running_jobs(database_url=database_url)
    except Exception as exc:  # noqa: BLE001 - reported in the line
        status["db_error"] = f"{type(exc).__name__}: {exc}"
    return status


def status_line(status: dict[str, Any]) -> str:
    n = len(status["workers"])
    parts = [f"{n} worker{'s' if n != 1 else ''} online"]
    q = status["queue"]
    parts.append("broker unreachable" if q is None else f"{q['queued']} chunks queued, {q['in_flight']} in flight")
    if status["jobs"] is None:
        parts.append(f"database unreachable ({status['db_error']})")
    elif not status["jobs"]:
        parts.append("no running jobs")
    for job in status["jobs"] or []:
        rate = f", {job['rate']:.1f} img/s" if job["rate"] else ""
        parts.append(f"job {job['job_id']} {job['status']}: {job['done']:,}/{job['total']:,} "
                     f"({job['fraction']:.0%}){rate}{heal_note(job)}")
    return " · ".join(parts)


def heal_note(job: dict[str, Any]) -> str:
    """", healed 2x (last 12:03:04 UTC)" for a job the workers queued again (worker.heal); "" for the others."""
    if not job.get("heals"):
        return ""
    last = f" (last {job['healed_at'][11:19]} UTC)" if job.get("healed_at") else ""
    return f", healed {job['heals']}x{last}"


def fleet_line() -> str:
    """The status line for the configured broker and database (what the demo's Batch tab shows)."""
    return status_line(fleet_status())


def stall_report(job_id: str, progress: dict[str, Any], stalled_s: float, *, redis_url: str | None = None,
                 queue: str | None = None) -> str:
    """Why a job that made no progress for `stalled_s` seconds may be stuck, and what to do about it."""
    from worker.failsafe import recent_worker_errors

    redis_url = redis_url or _settings().redis_url
    workers = workers_online(redis_url=redis_url)
    q = queue_length(redis_url=redis_url, queue=queue)
    errors = recent_worker_errors(redis_url=redis_url, job_id=job_id, limit=1)
    queued = "broker unreachable" if q is None else f"{q['queued']} chunks queued, {q['in_flight']} in flight"
    lines = [f"job {job_id}: no progress for {stalled_s:.0f} s ({progress['done']:,} of {progress['total']:,} "
             f"images have a row). Workers online: {len(workers)}; {queued}.",
             "  last worker error: " + (f"{errors[0]['time']} {errors[0]['worker']}: {errors[0]['error']}"
                                        if errors else "none reported")]
    if q is None:
        lines.append("  Redis does not answer: start it (make batch-up, or redis-server --appendonly yes), "
                     f"then run: python -m worker.submit --resume {job_id}")
    elif not workers:
        lines.append(f"  No worker answers: start one ({WORKER_COMMAND}, or make batch-up).")
    if q is not None and q["queued"] == 0 and q["in_flight"] == 0:
        heal_after = _settings().heal_after_s
        lines.append("  Nothing is queued for it: its chunks were lost (Redis restarted without persistence, the "
                     "queue flushed, a worker machine gone, retries run out while the database was down). The "
                     f"workers queue its files without a row again by themselves after {heal_after:.0f} s without "
                     f"progress (HEAL_AFTER_S; healed {progress.get('heals', 0)}x so far); to do it now: "
                     f"python -m worker.submit --resume {job_id}")
    elif workers:
        lines.append("  Workers are online and chunks are queued: they may be busy with other jobs "
                     "(python -m worker.status), or failing (see their logs).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.status", description=__doc__.splitlines()[0])
    parser.add_argument("--queue", help="queue to measure (default: Celery's default queue)")
    args = parser.parse_args(argv)
    status = fleet_status(queue=args.queue)
    print(status_line(status))
    for worker in status["workers"]:
        print(f"  worker {worker}")
    for job in status["jobs"] or []:
        print(f"  job {job['job_id']}: {job['status']}, {job['done']:,}/{job['total']:,}, {job['errors']:,} errors"
              f"{heal_note(job)}, folder {job['folder']}")
    for err in status["errors"]:
        print(f"  recent worker error: {err['time']} {err['worker']} job {err['job_id']}: {err['error']}")
    return 0 if status["queue"] is not None and status["jobs"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
