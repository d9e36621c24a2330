"""A job's progress, read from the database: `job_progress`, `wait_for_job` (the one poll-until-done loop, used by
`submit --wait`, the tests and the benchmarks), `watch_job` (its progress bar and stall reports) and
`print_summary`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def job_progress(job_id: str, *, database_url: str) -> dict[str, Any]:
    """The job's status and counters (see `db.queries.job_dict`); raises LookupError for an unknown id."""
    from db.queries import find_job, job_dicts
    from db.session import session_factory

    with session_factory(database_url)() as session:
        return job_dicts(session, [find_job(session, job_id)])[0]


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


def watch_job(job_id: str, *, database_url: str, redis_url: str, stall_s: float, poll_s: float = 0.5,
              queue: str | None = None, out: TextIO = sys.stderr) -> dict[str, Any]:
    """`wait_for_job` with a progress bar; returns the final progress.

    Whenever `stall_s` seconds pass without a new row, it prints why the job may be stuck and how to recover
    (`worker.status.stall_report`), then keeps waiting.
    """
    from tqdm import tqdm

    from worker.status import stall_report

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
                bar.write(stall_report(job_id, progress, now - last["change"], redis_url=redis_url, queue=queue),
                          file=out)
                last["change"] = now  # the next report after another stall_s without progress

        return wait_for_job(job_id, database_url=database_url, poll_s=poll_s, on_poll=show)


def print_summary(job_id: str, *, database_url: str, out: TextIO = sys.stdout) -> None:
    from db.queries import job_summary
    from db.session import session_factory

    with session_factory(database_url)() as session:
        summary = job_summary(session, job_id)
    job = summary["job"]
    rate = job["done"] - job["reused"]
    secs = job["elapsed_s"] or 0.0
    print(f"job {job_id}: {job['status']}, {job['done']}/{job['total']} images in {secs:.1f} s"
          + (f" ({rate / secs:.1f} img/s computed)" if secs and rate else ""), file=out)
    print(f"  reused {job['reused']}, errors {job['errors']}, unknown (none of the model's classes) {job['unknown']}, "
          f"skipped (not images) {job['skipped']}", file=out)
    if job["error"]:
        print(f"  failed: {job['error']}", file=out)
    for row in summary["labels"][:10]:
        print(f"  {row['label']:<24} {row['count']:>7}  mean confidence {row['mean_confidence']:.3f}", file=out)
    if job["unknown"]:
        print(f"  {'(unknown)':<24} {job['unknown']:>7}  list them: python -m db.report {job_id} --unknown", file=out)
    print(f"details: python -m db.report {job_id}", file=out)
