"""What the job service needs from a task broker, as a Protocol: `worker.broker.RedisBroker` is the one in use.

The service (`jobs.submit`, `jobs.heal`, `jobs.fleet`, `jobs.progress`) knows jobs, chunks and queues, never Redis,
kombu or Celery: each call below is one thing the service asks, and the broker's module is the only place that
knows how it is done. Every method but `send_chunks` degrades instead of raising (an unreachable broker is a
status to report, not a crash): see each one's return value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Broker(Protocol):
    def available(self, timeout: float = 1.0) -> bool:
        """True when the broker answers within `timeout` seconds."""

    def unreachable(self) -> str:
        """One line for the user when it does not answer: where it was looked for, and how to start one."""

    def send_chunks(self, job_id: str, chunks: Sequence[list], model_dir: str, *, queue: str | None = None) -> None:
        """Queue one classification task per chunk ([path, sha256] pairs) of a recorded job."""

    def queued_jobs(self, queues: Sequence[str]) -> set[str] | None:
        """Jobs with a chunk waiting in one of `queues` or delivered and unacknowledged; None when unreadable."""

    def queue_length(self, queue: str | None = None) -> dict[str, int] | None:
        """{'queued': chunks waiting, 'in_flight': delivered, not acknowledged}; None when unreachable."""

    def workers_online(self, timeout: float = 1.0) -> list[str]:
        """Names of the workers that answer; [] when none does or the broker is down."""

    def take_lease(self, key: str, holder: str, seconds: float) -> bool:
        """Hold `key` for `seconds` unless someone holds it already; False when taken or unreachable."""

    def note_error(self, error: str, *, worker: str, job_id: str | None = None) -> None:
        """Keep a worker error where a waiting submitter and the status line can read it; never raises."""

    def recent_errors(self, *, job_id: str | None = None, limit: int = 5) -> list[dict[str, Any]]:
        """The newest noted errors (of `job_id` when given, with job-less ones), newest first; [] when unreachable."""
