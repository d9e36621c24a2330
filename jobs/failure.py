"""How a chunk that no worker can run still ends: error rows and the reason on the job (`record_chunk_failure`).

`worker.tasks` imports this at the top, before any task runs, so it is loaded while what a task needs may still be
missing: the pipeline does not import, the model does not load, the database stays unreachable through every
retry. It writes with `db`'s tables and rules (`db.crud.record_failure`, the finish rule of `db.crud.refresh_job`,
the engines of `db.session`), which import only SQLAlchemy: a worker whose `db` cannot be imported does not start.
What it cannot write (the database itself is down) is noted with the broker, and the fleet heals it (`jobs.heal`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from db import crud
from db.session import session_factory

log = logging.getLogger(__name__)


def worker_name() -> str:
    """This process as rows and notes name it: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_chunk_failure(*, database_url: str, job_id: str, items: Sequence[Sequence[str | None]], error: str,
                         worker: str | None = None) -> int:
    """Give each image of the chunk that has no row an error row, put `error` on the job and recount it.

    Rows an earlier delivery stored are kept. The job ends `failed` once every image has a row, and keeps the
    first reason it was given. Returns the number of images in the chunk (0 for an unknown job).
    """
    with session_factory(database_url)() as session, session.begin():
        job = crud.record_failure(session=session, job_id=job_id, items=items, error=error,
                                  worker=worker or worker_name())
    if job is None:
        log.error("job %s does not exist; dropping the failure of %d images", job_id, len(items))
        return 0
    return len(items)
