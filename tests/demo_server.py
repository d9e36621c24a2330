"""Transitional: moved to tests/helpers/processes.py (the running demo is tests/demo/conftest.py's `demo_server`
fixture). Kept only while the review tests under tests/demo/ (being written in parallel) import it from here;
delete this file once they import tests.helpers.processes."""

from tests.helpers.processes import CHROMIUM, CHROMIUM_ARGS, free_port

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "free_port"]
