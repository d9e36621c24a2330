"""The fleet at a glance, as plain data and lines: what `python -m worker.status` prints and the demo's Batch tab
shows.

`fleet_status()` gathers the workers online, the queue, the running jobs (with `jobs.progress.job_rate`) and the
last worker errors; `status_line()` makes the one line; `watch_job()` is `submit --wait`'s progress bar, which prints
`stall_report()` when a job stops moving: why it may be stuck and how to recover. Every part degrades on its own:
an unreachable broker or database is reported, never raised.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from sqlalchemy import inspect, select

from db.models import Job, JobStatus
from db.results import job_dicts
from db.session import get_engine, session_factory
from jobs.broker import Broker
from jobs.progress import job_rate, wait_for_job

WORKER_COMMAND = "celery -A worker worker --pool prefork --concurrency 1 --loglevel INFO"


def running_jobs(*, database_url: str, limit: int = 10) -> list[dict[str, Any]]:
    """Jobs not finished yet, oldest first, with their `rate` (images/s) added."""
    if not inspect(get_engine(database_url)).has_table(Job.__tablename__):
        return []  # a database no entry point has migrated yet: no job was ever submitted to it
    with session_factory(database_url)() as session:
        jobs = session.scalars(select(Job).where(Job.status.not_in(JobStatus.FINISHED))
                               .order_by(Job.created_at).limit(limit)).all()
        return [{**d, "rate": job_rate(d)} for d in job_dicts(session, list(jobs))]


def fleet_status(*, broker: Broker, database_url: str, queue: str | None = None,
                 timeout: float = 1.0) -> dict[str, Any]:
    """Workers, queue and running jobs; `jobs` is None (and `db_error` set) when the database cannot be read."""
    status: dict[str, Any] = {"workers": broker.workers_online(timeout), "queue": broker.queue_length(queue),
                              "errors": broker.recent_errors(limit=3), "jobs": None, "db_error": None}
    try:
        status["jobs"] = running_jobs(database_url=database_url)
    except Exception as exc:  # noqa: BLE001 - reported in the line
        status["db_error"] = f"{type(exc).__name__}: {exc}"
    return status


def _queue_text(q: dict[str, int] | None) -> str:
    return "broker unreachable" if q is None else f"{q['queued']} chunks queued, {q['in_flight']} in flight"


def status_line(status: dict[str, Any]) -> str:
    """"2 workers online · 3 chunks queued, 1 in flight · job ab12 running: 64/200 (32%), 9.5 img/s"."""
    n = len(status["workers"])
    parts = [f"{n} worker{'s' if n != 1 else ''} online", _queue_text(status["queue"])]
    if status["jobs"] is None:
        parts.append(f"database unreachable ({status['db_error']})")
    elif not status["jobs"]:
        parts.append("no running jobs")
    for job in status["jobs"] or []:
        rate = f", {job['rate']:.1f} img/s" if job["rate"] else ""
        unknown = f", {job['unknown']:,} unknown" if job["unknown"] else ""
        parts.append(f"job {job['job_id']} {job['status']}: {job['done']:,}/{job['total']:,} "
                     f"({job['fraction']:.0%}){rate}{unknown}{heal_note(job)}")
    return " · ".join(parts)


def heal_note(job: dict[str, Any]) -> str:
    """", healed 2x (last 12:03:04 UTC)" for a job the workers queued again (jobs.heal); "" for the others."""
    if not job.get("heals"):
        return ""
    last = f" (last {job['healed_at'][11:19]} UTC)" if job.get("healed_at") else ""
    return f", healed {job['heals']}x{last}"


def stall_report(job_id: str, progress: dict[str, Any], stalled_s: float, *, broker: Broker, heal_after_s: float,
                 queue: str | None = None) -> str:
    """Why a job that made no progress for `stalled_s` seconds may be stuck, and what to do about it."""
    workers = broker.workers_online()
    q = broker.queue_length(queue)
    errors = broker.recent_errors(job_id=job_id, limit=1)
    lines = [f"job {job_id}: no progress for {stalled_s:.0f} s ({progress['done']:,} of {progress['total']:,} "
             f"images have a row). Workers online: {len(workers)}; {_queue_text(q)}.",
             "  last worker error: " + (f"{errors[0]['time']} {errors[0]['worker']}: {errors[0]['error']}"
                                        if errors else "none reported")]
    if q is None:
        lines.append(f"  {broker.unreachable()}; then run: python -m worker.submit --resume {job_id}")
    elif not workers:
        lines.append(f"  No worker answers: start one ({WORKER_COMMAND}, or make batch-up).")
    if q is not None and q["queued"] == 0 and q["in_flight"] == 0:
        lines.append("  Nothing is queued for it: its chunks were lost (Redis restarted without persistence, the "
                     "queue flushed, a worker machine gone, retries run out while the database was down). The "
                     f"workers queue its files without a row again by themselves after {heal_after_s:.0f} s without "
                     f"progress (HEAL_AFTER_S; healed {progress.get('heals', 0)}x so far); to do it now: "
                     f"python -m worker.submit --resume {job_id}")
    elif workers:
        lines.append("  Workers are online and chunks are queued: they may be busy with other jobs "
                     "(python -m worker.status), or failing (see their logs).")
    return "\n".join(lines)


def watch_job(job_id: str, *, database_url: str, broker: Broker, stall_s: float, heal_after_s: float,
              poll_s: float = 0.5, queue: str | None = None, out: TextIO = sys.stderr) -> dict[str, Any]:
    """`wait_for_job` with a progress bar; returns the final progress.

    Whenever `stall_s` seconds pass without a new row, it prints why the job may be stuck and how to recover
    (`stall_report`), then keeps waiting.
    """
    from tqdm import tqdm

    last = {"done": -1, "change": time.monotonic()}
    with tqdm(total=0, unit="img", desc=f"job {job_id}", file=out, dynamic_ncols=True) as bar:
        def show(progress: dict[str, Any]) -> None:
            bar.total, bar.n = progress["total"], progress["done"]
            bar.set_postfix(errors=progress["errors"], reused=progress["reused"], refresh=False)
            bar.refresh()
            now = time.monotonic()
            if progress["done"] != last["done"]:
                last.update(done=progress["done"], change=now)
            elif not progress["finished"] and now - last["change"] >= stall_s:
                bar.write(stall_report(job_id, progress, now - last["change"], broker=broker,
                                       heal_after_s=heal_after_s, queue=queue), file=out)
                last["change"] = now  # the next report after another stall_s without progress

        return wait_for_job(job_id, database_url=database_url, poll_s=poll_s, on_poll=show)
