"""A job's progress, read from the database: `job_progress`, `job_rate` (the one definition of a job's rate),
`wait_for_job` (the one poll-until-done loop, used by `submit --wait`, the tests and the benchmarks) and
`print_summary` (what `submit --wait` prints at the end); its progress bar with stall reports is `jobs.fleet.watch_job`.

A job's rate is the images the workers computed (reused ones left out) per second since the first worker started
on it (`started_at`), to its end or now. Not since it was submitted (`created_at`): time spent hashing at submit or
queued behind another job is no work done on this one, and would make a job that waited look slow. How long the
user waited is the job's `elapsed_s` (submitted to finished), shown beside the rate, not mixed into it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from db.results import find_job, job_dicts, job_summary
from db.session import session_factory


def job_rate(job: dict[str, Any]) -> float | None:
    """Images computed (not reused) per second since the first worker started on the job; None before that."""
    if not job.get("started_at"):
        return None
    end = datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else datetime.now(UTC)
    secs = (end - datetime.fromisoformat(job["started_at"])).total_seconds()
    computed = job["done"] - job["reused"]
    return computed / secs if secs > 0 and computed > 0 else None


def job_progress(job_id: str, *, database_url: str) -> dict[str, Any]:
    """The job's status and counters (see `db.results.job_dict`) and its `rate`; LookupError for an unknown id."""
    with session_factory(database_url)() as session:
        job = job_dicts(session, [find_job(session, job_id)])[0]
    return {**job, "rate": job_rate(job)}


def wait_for_job(job_id: str, *, database_url: str, poll_s: float = 0.5, timeout: float | None = None,
                 on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll the job until it finishes; returns its final progress.

    `on_poll(progress)` sees every reading, the final one included; an exception it raises stops the wait (a
    caller's check that its worker is still alive, say). TimeoutError after `timeout` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress = job_progress(job_id, database_url=database_url)
        if on_poll is not None:
            on_poll(progress)
        if progress["finished"]:
            return progress
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout} s: {progress}")
        time.sleep(poll_s)


def print_summary(job_id: str, *, database_url: str, out: TextIO = sys.stdout) -> None:
    """What `submit --wait` prints at the end: counts, time, rate, the reason of a failure, the top labels."""
    with session_factory(database_url)() as session:
        summary = job_summary(session, job_id)
    job = summary["job"]
    rate = job_rate(job)
    print(f"job {job_id}: {job['status']}, {job['done']}/{job['total']} images in {job['elapsed_s'] or 0.0:.1f} s"
          + (f" ({rate:.1f} img/s computed)" if rate else ""), file=out)
    print(f"  reused {job['reused']}, errors {job['errors']}, unknown (none of the model's classes) {job['unknown']}, "
          f"skipped (not images) {job['skipped']}", file=out)
    if job["error"]:
        print(f"  failed: {job['error']}", file=out)
    for row in summary["labels"][:10]:
        print(f"  {row['label']:<24} {row['count']:>7}  mean confidence {row['mean_confidence']:.3f}", file=out)
    if job["unknown"]:
        print(f"  {'(unknown)':<24} {job['unknown']:>7}  list them: python -m db.report {job_id} --unknown", file=out)
    print(f"details: python -m db.report {job_id}", file=out)
