"""demo/ fixtures: one running demo on the tiny bundle, shared by the HTTP API and browser tests."""

from __future__ import annotations

import pytest

from tests.helpers.processes import free_port


@pytest.fixture(scope="session")
def demo_server(tiny_bundle):
    """The demo serving the tiny bundle (in a thread, on a free port); the model loads before the first request.
    Yields its Blocks: `.local_url` is where it listens."""
    import demo

    app = demo.build_demo(tiny_bundle, max_batch_size=8, load=True)
    demo.launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield app
    app.close()
