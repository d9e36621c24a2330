"""demo/ fixtures: the running demo on the tiny bundle (default settings), shared by the HTTP API and browser tests,
and a second one on settings of its own (no broker, small limits)."""

from __future__ import annotations

import pytest

from tests.helpers.images import write_good_images
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


# The configured demo's upload limits: small enough that a test reaches each one with a few tiny files.
UPLOAD_LIMITS = dict(demo_upload_max_files=4, demo_upload_max_bytes=300_000, demo_upload_max_pixels=20_000,
                     demo_upload_max_zip_entries=6, demo_upload_max_zip_bytes=5_000_000, demo_upload_max_zip_ratio=20)


@pytest.fixture(scope="session")
def configured_demo(tiny_bundle, tmp_path_factory):
    """A second server, on settings of its own: no reachable broker, one folder open to batch jobs, small limits
    (kept sessions, file size, uploads)."""
    import demo
    from settings import Settings

    root = tmp_path_factory.mktemp("allowed-root")
    write_good_images(root / "photos", 1)
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", demo_allowed_roots=str(root),
                        demo_session_capacity=3, demo_max_file_size="100kb", **UPLOAD_LIMITS)
    app = demo.build_demo(tiny_bundle, max_batch_size=8, settings=settings)
    demo.launch(app, settings, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                quiet=True)
    yield app
    app.close()
