"""Who may write through the demo: folder jobs, reviews, teaching and switching the served model.

A demo that other machines can reach runs read-only unless someone is trusted to write: Classify, Upload and the
model card stay, and the write views (the Batch tab with its job listings, Review and Compare; Teach) are neither
on the page nor in the HTTP API, with `WRITES_OFF_NOTE` in their place. Reachable means bound beyond loopback
(`--host 0.0.0.0`, a LAN address), a `--share` link (public on the internet), or a Hugging Face Space (SPACE_ID set).
Writes are on where only this machine can reach the demo, where a login is required (DEMO_AUTH: Gradio then refuses
every anonymous request, the API's included), or where DEMO_OPEN_WRITES=1 says the network is private.

Every write is logged (`log_write`, logger `demo.writes`, on stderr unless logging is configured otherwise) with
the logged-in user, where there is one, and the client's address.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

__all__ = ["WRITES_OFF_NOTE", "is_loopback", "log_write", "writes_open"]

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
DEFAULT_HOST = "127.0.0.1"  # where Gradio binds when neither --host nor GRADIO_SERVER_NAME says otherwise

WRITES_OFF_NOTE = (
    "**Folder jobs, reviews and teaching are off on this demo:** it can be reached from other machines and has no "
    "login, so it only classifies (the Classify and Upload tabs; nothing is stored). To turn them on, start it with "
    "a login, `DEMO_AUTH=user:password` (or `--auth user:password`), or, on a private network where everyone who "
    "can reach it may write, with `DEMO_OPEN_WRITES=1`."
)

log = logging.getLogger("demo.writes")


def is_loopback(host: str | None) -> bool:
    """Whether a server bound to `host` is reachable from this machine only (None: Gradio's default host)."""
    host = (host if host is not None else os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST).strip().lower()
    if host in LOOPBACK_NAMES:
        return True
    try:  # 127.0.0.2 and friends are loopback too; "", "0.0.0.0", "::" and real addresses are not
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it resolves to whatever the network says


def writes_open(settings: Any, *, host: str | None, share: bool) -> bool:
    """True when the demo may serve its write views: a login (DEMO_AUTH), DEMO_OPEN_WRITES=1, or a demo only this
    machine can reach (bound to loopback, no --share link, not a Hugging Face Space)."""
    if getattr(settings, "demo_auth", None) or getattr(settings, "demo_open_writes", False):
        return True
    return is_loopback(host) and not share and not os.environ.get("SPACE_ID")


def log_write(request: Any, action: str, **details: Any) -> None:
    """Log one write (`action`: "submit_job", "review_set", "teach", ...) with who asked (the logged-in user, or
    "anonymous"), from where, and `details` as key=value."""
    user = getattr(request, "username", None) or "anonymous"
    client = getattr(getattr(request, "client", None), "host", None) or "?"
    if not log.hasHandlers():  # the demo configures no logging: without a handler INFO records would be dropped
        log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    # repr() keeps a name with a newline in it (a folder, a user) from forging a second log line.
    fields = " ".join(f"{key}={value!r}" for key, value in details.items())
    log.info("write %s by %r from %s%s", action, user, client, f": {fields}" if fields else "")
