"""Batch classification on a Celery worker fleet: `celery_app` (the app), `tasks` (thin tasks),
`pipeline` (the plain functions they call), `failsafe` (how a chunk that cannot run still ends), `submit`
(CLI and Python API, `--resume`), `progress` (a job's progress, waiting for it), `status` (the fleet at a
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
