"""The fleet heals stalled jobs by itself: no extra process, nothing to run by hand.

Each worker's main process runs one `Healer` thread (started by `worker.lifecycle` when the worker is ready). Every
`HEAL_CHECK_S` seconds one worker of the fleet (the one that takes the broker's lease) sweeps:

1. unfinished jobs with no new row, no heal and no submit for `HEAL_AFTER_S` (`db.results.stalled_jobs`);
2. of those, the ones with no chunk waiting in the worker's queues or delivered and unacknowledged (read from the
   broker, `Broker.queued_jobs`): a job whose chunks are only slow or waiting behind another job is left alone;
3. each is counted as healed with a compare-and-set on its row (`db.crud.claim_heal`), so of any number of workers
   that saw it exactly one goes on, and its files without a row are queued again by the idempotent resume
   (`jobs.submit.resume_job`, what `--resume` does);
4. a job that stalls again after `HEAL_MAX` heals, or that cannot be healed (no file list, images missing from
   it), ends `failed` with the reason, its files without a row getting an error row (`db.crud.fail_job`).

What this heals: chunks lost with a Redis that restarted without persistence, a purged queue, a chunk whose
retries ran out while the database was down (its failure could not be written either), a worker machine gone.
The lease only saves work (one sweep per interval); the compare-and-set is what makes a heal happen once, even
when Redis restarted and forgot the lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from db import crud
from db.results import stalled_jobs
from db.session import dispose_engines, session_factory
from jobs.broker import Broker
from jobs.failure import worker_name
from jobs.submit import SubmitError, resume_job

log = logging.getLogger(__name__)

SWEEP_KEY = "densenet121:heal-sweep"


def heal_stalled_jobs(*, database_url: str, broker: Broker, queues: Sequence[str], heal_after_s: float,
                      max_heals: int, lease_s: float, chunk_size: int) -> list[dict[str, Any]]:
    """One sweep (see the module's docstring); returns what it did: [{'job_id', 'action', 'queued', 'error'}].

    `action` is 'healed' (its files without a row were queued again to `queues[0]`) or 'failed'. Nothing is done
    when another worker holds the lease, or when the broker or the database cannot be read.
    """
    if not broker.take_lease(SWEEP_KEY, worker_name(), lease_s):
        return []
    with session_factory(database_url)() as session:
        stalled = stalled_jobs(session, quiet_since=datetime.now(UTC) - timedelta(seconds=heal_after_s))
    busy = broker.queued_jobs(queues) if stalled else None
    if busy is None:
        return []
    actions = [heal_job(job, database_url=database_url, broker=broker, queue=queues[0], heal_after_s=heal_after_s,
                        max_heals=max_heals, chunk_size=chunk_size)
               for job in stalled if job["job_id"] not in busy]
    return [a for a in actions if a is not None]


def heal_job(job: dict[str, Any], *, database_url: str, broker: Broker, queue: str, heal_after_s: float,
             max_heals: int, chunk_size: int) -> dict[str, Any] | None:
    """Heal one stalled job (a `stalled_jobs` entry), or fail it; None when another worker healed it first."""
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
            resumed = resume_job(job_id, broker=broker, database_url=database_url, chunk_size=chunk_size,
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

    def __init__(self, *, database_url: str, broker: Broker, queues: Sequence[str], heal_after_s: float,
                 interval_s: float, max_heals: int, chunk_size: int):
        self.interval_s = interval_s
        self._kwargs = {"database_url": database_url, "broker": broker, "queues": list(queues),
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
