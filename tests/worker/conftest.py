"""worker/ fixtures: the shared Redis's test database, and a redis-server of a module's own.

Worker processes themselves are started by the modules (tests.helpers.processes.WorkerProcess): each module
needs them with its own command, queue, database and lifetime.
"""

from __future__ import annotations

import pytest

from tests.helpers.processes import TEST_REDIS_URL, PrivateRedis


@pytest.fixture(scope="module")
def shared_redis_url() -> str:
    """Redis database 14 of the running server (make services starts it), flushed: no chunk of an earlier run."""
    import redis

    from worker.broker import RedisBroker

    if not RedisBroker(TEST_REDIS_URL).available(timeout=1.0):
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL} (make services starts it)")
    assert int(TEST_REDIS_URL.rsplit("/", 1)[-1] or 0) != 0, "never flush Redis database 0"
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    """A redis-server without persistence on a free port, for tests that kill or flush it."""
    try:
        server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()
