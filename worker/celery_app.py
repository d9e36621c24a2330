"""The Celery app, and only the app: `celery -A worker worker --pool prefork --concurrency 1` (see worker/__init__).

Reliability comes from configuration: a task is acknowledged after it ran (acks_late), requeued when the
process running it dies (reject_on_worker_lost), and each process reserves one task at a time (prefetch 1),
so a killed worker loses nothing and a busy one does not sit on work another could do. Result writes are
idempotent (see db.crud), which is what makes running a chunk twice harmless.
"""

from __future__ import annotations

from typing import Any

from celery import Celery


def _from_settings() -> dict[str, Any]:
    # Read when Celery first needs its configuration, not at import: importing the app reads no settings.
    from settings import get_settings

    settings = get_settings()
    return {
        "broker_url": settings.redis_url,
        # A redelivered-after-timeout chunk must be rare: chunks finish in seconds to minutes, well inside this.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
    }


app = Celery("worker", include=["worker.tasks", "worker.lifecycle"])
app.add_defaults(_from_settings)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Results live in the SQL database, not in a Celery result backend.
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    # Children fork fast (the model loads on the first task, not at start), but a loaded machine can be slow
    # to schedule them; the 4 s default kills healthy children there.
    worker_proc_alive_timeout=60.0,
    worker_max_tasks_per_child=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
