"""One running demo per test process (in a thread, on a free port) for the API and browser tests."""

from __future__ import annotations

import atexit
import socket
from functools import cache
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/services.sh installs it), driven by Playwright
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@cache
def running_demo(bundle: Path) -> tuple[str, object]:
    """(url, Blocks) of the demo serving `bundle`; the model is loaded before the first request."""
    import demo

    app = demo.build_demo(bundle, max_batch_size=8, load=True)
    demo.launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    atexit.register(app.close)
    return app.local_url, app
