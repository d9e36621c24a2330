"""Batch classification on a Celery worker fleet: Celery and Redis only, over the job service (`jobs`).

`celery_app` (the app), `tasks` (thin tasks), `lifecycle` (the worker's signal handlers: schema upgrade at start,
the healer thread), `pipeline` (the plain functions a task calls), `broker` (all Redis and kombu access: the
`jobs.broker.Broker` in use), and the command lines `submit` (submit, resume, watch), `status` (the fleet at a
glance) and `dev` (local Redis + one worker). Importing any of them neither imports TensorFlow nor reads the
settings. The throughput benchmark is `python -m benchmarks.batch`, outside the package.

`celery -A worker worker` finds the app as `worker.app`. It is resolved on first access (PEP 562), so importing
`worker.submit` or `worker.status` does not build a Celery app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
