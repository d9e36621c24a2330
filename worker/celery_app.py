"""The Celery app, and only the app: `celery -A worker worker --pool prefork --concurrency 1` (see worker/__init__).

Reliability comes from configuration: a task is acknowledged after it ran (acks_late), requeued when the
process running it dies (reject_on_worker_lost), and each process reserves one task at a time (prefetch 1),
so a killed worker loses nothing and a busy one does not sit on work another could do. Result writes are
idempotent (see db.crud), which is what makes running a chunk twice harmless.
"""

from __future__ import annotations

from celery import Celery

from settings import get_settings

_settings = get_settings()

app = Celery("worker", broker=_settings.redis_url, include=["worker.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Results live in the SQL database, not in a Celery result backend.
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    # A redelivered-after-timeout chunk must be rare: chunks finish in seconds to minutes, well inside this.
    broker_transport_options={"visibility_timeout": _settings.visibility_timeout_s},
    # Children fork fast (the model loads on the first task, not at start), but a loaded machine can be slow
    # to schedule them; the 4 s default kills healthy children there.
    worker_proc_alive_timeout=60.0,
    worker_max_tasks_per_child=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
