"""Thin Celery tasks: unpack arguments, get this process's classifier, call `worker.pipeline`.

Everything a task needs beyond Celery is imported inside it; what records a chunk that cannot run
(`jobs.failure`, and the broker's note of the error) is imported here, at the top, so it is loaded before the first
task and does not depend on what may be broken. The worker's signal handlers are `worker.lifecycle`.

The classifier is loaded on the first task a child process runs, never in the parent before the fork
(TensorFlow is not fork-safe) and never in `worker_process_init` (Celery kills a child that blocks there
for more than a few seconds; DenseNet121 takes longer to build).
"""

from __future__ import annotations

import logging
import os
import random
import threading

import redis.exceptions
import sqlalchemy.exc
from celery import Task

from jobs.failure import record_chunk_failure, worker_name
from settings import get_settings
from worker.broker import CLASSIFY_CHUNK, RedisBroker
from worker.celery_app import app

log = logging.getLogger(__name__)

# Worth retrying: the database or broker went away or was busy (SQLite "database is locked", a PostgreSQL
# failover or deadlock). Anything else is a bug or a bad model and retrying would only repeat it.
TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def enable_gpu_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as needed, rather than all of it at once (one process per GPU)."""
    try:
        import tensorflow as tf
    except ImportError:  # another Keras backend
        return
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised, or a virtual device: keep its setting
            pass


class ClassifierTask(Task):
    """Base task holding one classifier per process, loaded on first use."""

    _lock = threading.Lock()
    _loaded: tuple[int, str, object] | None = None  # (pid, model_dir, classifier)

    def classifier(self, model_dir: str):
        """This process's classifier for `model_dir`; reloaded only if a job asks for another bundle."""
        with self._lock:
            loaded = ClassifierTask._loaded
            if loaded is None or loaded[0] != os.getpid() or loaded[1] != model_dir:
                from jobs.storage import local_bundle
                from model.predict import load_classifier

                enable_gpu_memory_growth()
                log.info("loading classifier from %s (pid %d)", model_dir, os.getpid())
                # A bundle URL (`--model s3://...`) is fetched once per host into the cache keyed by model_version.
                clf = load_classifier(local_bundle(model_dir), **get_settings().classifier_options())
                ClassifierTask._loaded = loaded = (os.getpid(), model_dir, clf)
            return loaded[2]

    @staticmethod
    def sessions():
        from db.session import session_factory

        return session_factory(get_settings().database_url)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Out of retries or a permanent error: the chunk's images get error rows, so the job can end."""
        if self.name != CLASSIFY_CHUNK:
            return
        job_id, items = (list(args) + [kwargs.get("job_id"), kwargs.get("items")])[:2]
        settings = get_settings()
        error = f"worker failed: {type(exc).__name__}: {exc}"
        RedisBroker(settings.redis_url).note_error(error, worker=worker_name(), job_id=job_id)
        try:
            record_chunk_failure(database_url=settings.database_url, job_id=job_id, items=items or [], error=error)
        except Exception:  # noqa: BLE001 - the database itself is down: Redis and the log have the reason
            log.exception("could not record the failure of job %s's chunk", job_id)


def retry_delay(retries: int, max_s: float) -> float:
    """Seconds before retry number `retries` + 1: 2, 4, 8 ... at most `max_s`, cut by up to half at random."""
    return min(2.0 ** (retries + 1), max_s) * random.uniform(0.5, 1.0)


@app.task(bind=True, base=ClassifierTask, name=CLASSIFY_CHUNK, max_retries=None)
def classify_chunk(self: ClassifierTask, job_id: str, items: list[list[str | None]], model_dir: str) -> int:
    """Classify one chunk of a job: `items` are [path, sha256] pairs; returns the number of rows.

    Database and broker errors are retried with backoff for TASK_MAX_RETRIES times (minutes in all: a database
    restart); then `on_failure` records the chunk, or, with the database still down, the fleet heals it.
    """
    from worker.pipeline import process_chunk

    settings = get_settings()
    try:
        return process_chunk(sessions=self.sessions(), classifier=self.classifier(model_dir), job_id=job_id,
                             items=items, top_k=settings.top_k, batch_size=settings.batch_size)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= settings.task_max_retries:
            raise
        delay = retry_delay(self.request.retries, settings.task_retry_max_s)
        log.warning("job %s: %s: %s; retry %d of %d in %.1f s", job_id, type(exc).__name__, exc,
                    self.request.retries + 1, settings.task_max_retries, delay)
        raise self.retry(exc=exc, countdown=delay) from exc
