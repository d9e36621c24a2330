"""The real Celery app for a worker that a test kills mid-chunk: every chunk first sleeps SLOW_CHUNK_S.

Run as `celery -A tests.worker.slow_worker worker ...` from the repo root; the tasks, configuration and pipeline
are the project's.
"""

from __future__ import annotations

import os
import time

from worker import pipeline
from worker.celery_app import app

_classify_items = pipeline.classify_items


def _slow_classify_items(*args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_CHUNK_S", "1.0")))
    return _classify_items(*args, **kwargs)


pipeline.classify_items = _slow_classify_items

__all__ = ["app"]
