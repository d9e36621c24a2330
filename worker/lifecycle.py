"""The worker's signal handlers: what happens when a worker starts, is ready, stops, or receives an unknown task.

Connected when Celery imports this module (the app's `include`), in the worker's main process:
- at start, the database is brought to the latest schema, once, before the pool forks;
- once it consumes, a `jobs.heal.Healer` thread heals the fleet's stalled jobs (no process of its own);
- at shutdown, that thread stops;
- a message naming a task this worker does not have is noted with the broker, so its job does not wait silently.
"""

from __future__ import annotations

import logging

from celery import signals

from jobs.failure import worker_name
from jobs.heal import Healer
from settings import get_settings
from worker.broker import RedisBroker
from worker.celery_app import app

log = logging.getLogger(__name__)

_healers: list[Healer] = []


@signals.worker_init.connect
def _upgrade_database(**_kw) -> None:
    # A database still unreachable here is not fatal: each task retries it (worker.tasks.TRANSIENT_ERRORS).
    try:
        from db.migrate import upgrade

        upgrade(get_settings().database_url)
    except Exception as exc:  # noqa: BLE001 - logged; the tasks report what still fails
        log.warning("could not bring the database to the latest schema at start: %s: %s", type(exc).__name__, exc)


@signals.worker_ready.connect
def _start_healer(sender=None, **_kw) -> None:
    settings = get_settings()
    queues = list(sender.app.amqp.queues.consume_from) if sender is not None else []
    _healers.append(Healer(database_url=settings.database_url, broker=RedisBroker(settings.redis_url),
                           queues=queues or [app.conf.task_default_queue], heal_after_s=settings.heal_after_s,
                           interval_s=settings.heal_check_s, max_heals=settings.heal_max,
                           chunk_size=settings.chunk_size).start())


@signals.worker_shutdown.connect
def _stop_healer(**_kw) -> None:
    while _healers:
        _healers.pop().stop()


@signals.task_unknown.connect
def _note_unknown_task(name: str | None = None, **_kw) -> None:
    # Celery drops a message naming a task this worker does not have: its job would otherwise wait silently.
    RedisBroker(get_settings().redis_url).note_error(
        f"unknown task {name!r} dropped: this worker runs other code than the submitter", worker=worker_name())
