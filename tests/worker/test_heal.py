"""Jobs that heal themselves (jobs/heal.py, started by worker/lifecycle.py): the sweep on its own.

Fast: the shared Redis's test database, SQLite and PostgreSQL, no worker. What counts as stalled, one heal however
many sweep, the bound on heals, a job that cannot be healed. The fleet as a user runs it: test_heal_fleet.py.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest
import redis
from sqlalchemy import delete, select, update

from db import crud
from db.models import Job, JobFile, JobStatus, Prediction, utcnow
from tests.helpers.processes import (
    TEST_REDIS_URL,
)

VERSION = "abc123def456"
FILES = [["/f/a.jpg", "h1"], ["/f/b.jpg", "h2"], ["/f/c.jpg", None]]
QUEUE = "heal-test"  # no worker consumes it: what the sweep queues stays there


@pytest.fixture
def stalled(database_url, shared_redis_url):
    """(url, sessions) of job "j" over FILES: one row, nothing queued, created and last written 10 minutes ago."""
    from db.session import session_factory

    client = redis.Redis.from_url(shared_redis_url)
    client.flushdb()
    client.close()
    sessions = session_factory(database_url)
    long_ago = utcnow() - timedelta(minutes=10)
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=VERSION, labels=["apple"], input_size=32)
        crud.create_job(session=session, job_id="j", folder="/f", recursive=False, model_dir="/m",
                        model_version=VERSION, total=len(FILES))
        crud.record_files(session=session, job_id="j", items=FILES)
        crud.insert_predictions(session=session, rows=[{
            "job_id": "j", "path": FILES[0][0], "model_version": VERSION, "content_hash": "h1", "label": "apple",
            "confidence": 0.9, "created_at": long_ago}])
        crud.refresh_job(session=session, job_id="j")
        session.execute(update(Job).where(Job.id == "j").values(created_at=long_ago))
    return database_url, sessions


def _sweep(url: str, max_heals: int = 3, **kw) -> list[dict]:
    from jobs.heal import SWEEP_KEY, heal_stalled_jobs
    from worker.broker import RedisBroker

    redis.Redis.from_url(TEST_REDIS_URL).delete(SWEEP_KEY)  # as if the last sweep's lease had run out
    return heal_stalled_jobs(database_url=url, broker=RedisBroker(TEST_REDIS_URL), queues=[QUEUE], heal_after_s=60,
                             max_heals=max_heals, lease_s=30, chunk_size=1, **kw)


def test_a_stalled_job_is_healed_once(stalled):
    from worker.broker import RedisBroker

    queued_job_ids = RedisBroker(TEST_REDIS_URL).queued_jobs
    url, sessions = stalled
    assert queued_job_ids([QUEUE]) == set()
    assert _sweep(url) == [{"job_id": "j", "action": "healed", "queued": 2, "error": None}]
    assert queued_job_ids([QUEUE]) == {"j"}
    with sessions() as session:
        job = session.get(Job, "j")
        assert (job.heals, job.status, job.chunks) == (1, JobStatus.RUNNING, 2) and job.healed_at is not None
    # Its chunks are queued, and it was healed just now: nothing to do, however often the fleet looks.
    assert _sweep(url) == []
    from worker.celery_app import app

    with app.connection_for_read(TEST_REDIS_URL) as conn:  # a worker takes both chunks: in flight, not queued
        queue = conn.SimpleQueue(QUEUE)
        held = [queue.get(timeout=5) for _ in range(2)]
        assert redis.Redis.from_url(TEST_REDIS_URL).llen(QUEUE) == 0
        assert queued_job_ids([QUEUE]) == {"j"}
        for message in held:
            message.ack()  # and loses their work
    assert queued_job_ids([QUEUE]) == set()
    assert _sweep(url) == []  # lost again, but healed less than HEAL_AFTER_S ago


def test_many_workers_that_saw_the_same_job_heal_it_once(stalled):
    from db.results import stalled_jobs
    from jobs.heal import heal_job
    from worker.broker import RedisBroker

    url, sessions = stalled
    with sessions() as session:
        seen = stalled_jobs(session, quiet_since=utcnow() - timedelta(seconds=60))
    assert [j["job_id"] for j in seen] == ["j"]
    results = [heal_job(seen[0], database_url=url, broker=RedisBroker(TEST_REDIS_URL), queue=QUEUE, heal_after_s=60,
                        max_heals=3, chunk_size=1) for _ in range(5)]  # five workers, the same reading
    assert [r["action"] if r else None for r in results] == ["healed", None, None, None, None]
    with sessions() as session:
        assert session.get(Job, "j").heals == 1


def test_heals_are_bounded_then_the_job_fails_with_the_reason(stalled):
    url, sessions = stalled
    with sessions() as session, session.begin():
        session.execute(update(Job).where(Job.id == "j").values(heals=2))
    [action] = _sweep(url, max_heals=2)
    assert action["action"] == "failed" and action["error"].startswith("stalled again after 2 heal(s): 2 image(s)")
    with sessions() as session:
        job = session.get(Job, "j")
        rows = session.scalars(select(Prediction).where(Prediction.job_id == "j")).all()
    assert (job.status, job.done, job.errors, job.heals, job.error) == ("failed", 3, 2, 2, action["error"])
    assert Counter(r.path for r in rows) == Counter(p for p, _ in FILES)  # every image has one row, the reason
    assert {r.error for r in rows if r.path != FILES[0][0]} == {action["error"]}


def test_a_job_without_its_file_list_cannot_be_healed(stalled):
    url, sessions = stalled
    with sessions() as session, session.begin():
        session.execute(delete(JobFile).where(JobFile.job_id == "j"))
    [action] = _sweep(url)
    assert action["action"] == "failed" and "cannot heal: job j has no file list" in action["error"]
    with sessions() as session:
        job = session.get(Job, "j")
    assert (job.status, job.done, job.heals) == ("failed", 1, 1) and job.error == action["error"]


def test_status_and_batch_tab_show_the_heals(stalled):
    from jobs.fleet import heal_note, status_line
    from jobs.progress import job_progress

    url, _ = stalled
    _sweep(url)
    job = job_progress("j", database_url=url)
    assert job["heals"] == 1 and re.fullmatch(r", healed 1x \(last \d\d:\d\d:\d\d UTC\)", heal_note(job))
    line = status_line({"workers": [], "queue": {"queued": 2, "in_flight": 0}, "jobs": [{**job, "rate": None}]})
    assert line.endswith(f"job j running: 1/3 (33%){heal_note(job)}")
    from webui.batch import fleet_markdown

    assert fleet_markdown(TEST_REDIS_URL, url).endswith(heal_note(job))  # after the rate
