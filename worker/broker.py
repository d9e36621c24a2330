"""All of the worker's Redis and kombu access: `RedisBroker`, the `jobs.broker.Broker` of this deployment.

Tasks are sent by name (`CLASSIFY_CHUNK`, the one place it is written; `worker.tasks` registers the task under
it), so sending needs neither the task module nor what it imports. Importing this module imports neither Celery
nor Redis: each method imports what it uses, and nothing reads the settings (the caller passes the URL).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

CLASSIFY_CHUNK = "worker.classify_chunk"
# The broker's Redis keeps the last worker errors, so a submitter waiting on a stuck job can show one.
ERRORS_KEY = "densenet121:worker-errors"
ERRORS_KEPT = 100
START_HINT = ("start it (make batch-up; redis-server --daemonize yes; docker compose up -d redis) or point "
              "REDIS_URL at a running Redis")


def job_of(payload: dict[str, Any]) -> str | None:
    """The job id of a classify_chunk message (protocol 2: headers name the task, the body is [args, kwargs, embed])."""
    if payload.get("headers", {}).get("task") != CLASSIFY_CHUNK:
        return None
    body = payload.get("body", "")
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return str(args[0]) if args else None


class RedisBroker:
    """The Celery app's Redis at `redis_url`; each call opens and closes what it needs (nothing held between)."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url

    def _client(self, timeout: float = 2.0):
        import redis

        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)

    def _call(self, what, default, timeout: float = 2.0):
        """`what(client)` on a fresh client, closed after; `default` when Redis is unreachable or the URL bad."""
        import redis

        try:
            client = self._client(timeout)
            try:
                return what(client)
            finally:
                client.close()
        except (redis.exceptions.RedisError, OSError, ValueError):
            return default

    def available(self, timeout: float = 1.0) -> bool:
        return bool(self._call(lambda c: c.ping(), False, timeout))

    def unreachable(self) -> str:
        from kombu.utils.url import maybe_sanitize_url

        return f"cannot reach the Redis broker at {maybe_sanitize_url(self.redis_url)}: {START_HINT}"

    def send_chunks(self, job_id: str, chunks: Sequence[list], model_dir: str, *, queue: str | None = None) -> None:
        from kombu.common import maybe_declare

        from worker.celery_app import app

        name = queue or app.conf.task_default_queue
        with app.connection_for_write(self.redis_url) as conn:
            producer = app.amqp.Producer(conn)
            # Declare the queue so messages are routed even before any worker has bound it.
            maybe_declare(app.amqp.queues[name], conn.default_channel)
            for chunk in chunks:
                app.send_task(CLASSIFY_CHUNK, args=(job_id, chunk, model_dir), producer=producer, queue=name)

    def queued_jobs(self, queues: Sequence[str]) -> set[str] | None:
        from worker.celery_app import app

        if not self.available():  # fast, where kombu would retry a dead broker for seconds
            return None
        try:
            with app.connection_for_read(self.redis_url) as conn:
                channel = conn.default_channel
                # kombu has no public way to read a queue without taking from it. Its Redis transport keeps a queue
                # as one list per priority step, named from its documented options `sep` and `priority_steps`
                # (what the private Channel._q_for_pri builds), and the delivered, unacknowledged messages in the
                # hash named by the documented option `unacked_key`: [message, exchange, routing key] per tag.
                keys = [q if not pri else f"{q}{channel.sep}{pri}" for q in queues for pri in channel.priority_steps]
                waiting = [(m, False) for key in keys for m in channel.client.lrange(key, 0, -1)]
                delivered = [(m, True) for m in channel.client.hvals(channel.unacked_key)]
        except Exception:  # noqa: BLE001 - an unreadable broker: the caller acts on nothing this time
            log.warning("could not read the queues from the broker", exc_info=True)
            return None
        jobs = set()
        for item, is_delivery in waiting + delivered:
            try:
                payload = json.loads(item)
                job_id = job_of(payload[0] if is_delivery else payload)
            except (ValueError, TypeError, KeyError, IndexError):
                continue  # not a message of ours
            if job_id:
                jobs.add(job_id)
        return jobs

    def queue_length(self, queue: str | None = None) -> dict[str, int] | None:
        from worker.celery_app import app

        if not self.available():  # fast, where kombu would retry a dead broker for seconds
            return None
        try:
            with app.connection_for_read(self.redis_url) as conn:
                channel = conn.default_channel
                queued = channel.queue_declare(queue=queue or app.conf.task_default_queue).message_count
                in_flight = channel.client.hlen(channel.unacked_key)
        except Exception:  # noqa: BLE001 - reported as unreachable
            return None
        return {"queued": int(queued), "in_flight": int(in_flight)}

    def workers_online(self, timeout: float = 1.0) -> list[str]:
        from celery import Celery

        if not self.available():  # fast, where kombu would retry a dead broker for seconds
            return []
        # An app of its own for this broker: the ping goes out through the app's producer pool, which would be the
        # configured broker's even when another connection is passed.
        probe = Celery("worker", broker=self.redis_url, set_as_current=False)
        try:
            replies = probe.control.ping(timeout=timeout) or []
        except Exception:  # noqa: BLE001 - an unreachable broker means no worker either
            return []
        finally:
            probe.close()
        return sorted(name for reply in replies for name in reply)

    def take_lease(self, key: str, holder: str, seconds: float) -> bool:
        return bool(self._call(lambda c: c.set(key, holder, nx=True, ex=max(1, round(seconds))), False))

    def note_error(self, error: str, *, worker: str, job_id: str | None = None) -> None:
        entry = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"), "worker": worker,
                            "job_id": job_id, "error": error})
        noted = self._call(lambda c: c.pipeline().lpush(ERRORS_KEY, entry).ltrim(ERRORS_KEY, 0, ERRORS_KEPT - 1)
                           .execute(), None)
        if noted is None:
            log.warning("could not note the worker error in Redis: %s", error)

    def recent_errors(self, *, job_id: str | None = None, limit: int = 5) -> list[dict[str, Any]]:
        found = []
        for item in self._call(lambda c: c.lrange(ERRORS_KEY, 0, ERRORS_KEPT - 1), []):
            try:
                entry = json.loads(item)
            except ValueError:
                continue
            if job_id is None or entry.get("job_id") in (job_id, None):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found
