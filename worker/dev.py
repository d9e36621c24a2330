"""The batch path on one machine with no external service: a local Redis if needed, the database, one worker.

    python -m worker.dev [--background | --stop] [--concurrency N]

Starts a local `redis-server` when no Redis answers at REDIS_URL (and the binary exists; otherwise it says
how to get one), brings the database (SQLite under data/ by default) to the latest schema, and runs one
Celery worker: in the foreground, or with --background detached, logging to data/worker.log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import cli
from settings import ROOT
from worker.broker import RedisBroker

DATA = ROOT / "data"
WORKER_PID = DATA / "worker.pid"
WORKER_LOG = DATA / "worker.log"
REDIS_DIR = DATA / "redis"


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def ensure_redis(redis_url: str, timeout: float = 10.0) -> bool:
    """True when Redis answers, starting a local redis-server for a localhost URL if needed."""
    broker = RedisBroker(redis_url)
    if broker.available():
        return True
    url = urlparse(redis_url)
    binary = shutil.which("redis-server")
    if url.hostname not in ("localhost", "127.0.0.1", "::1") or binary is None:
        why = "redis-server is not installed" if binary is None else f"{url.hostname} is not this machine"
        print(f"{broker.unreachable()} (it cannot be started here: {why})", file=sys.stderr)
        return False
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port = str(url.port or 6379)
    print(f"starting redis-server on 127.0.0.1:{port} (data in {REDIS_DIR})", file=sys.stderr)
    # Append-only file: queued chunks survive a restart of this embedded broker.
    subprocess.run([binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--dir", str(REDIS_DIR),
                    "--appendonly", "yes", "--save", "", "--pidfile", str(REDIS_DIR / "redis.pid"),
                    "--logfile", str(REDIS_DIR / "redis.log")], check=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.available():
            return True
        time.sleep(0.2)
    print(f"redis-server did not come up; see {REDIS_DIR / 'redis.log'}", file=sys.stderr)
    return False


def worker_command(concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    """The README's worker command: the `celery` console script of this environment, as docker-compose runs it."""
    celery = Path(sys.executable).with_name("celery")
    return [str(celery), "-A", "worker", "worker", "--pool", "prefork", "--concurrency", str(concurrency),
            "--loglevel", loglevel, "-n", "dev@%h"]


def child_pids(pid: int) -> list[int]:
    """The children of a process (Linux /proc): a prefork worker's pool processes, which run the tasks."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def stop() -> int:
    stopped = False
    for name, pidfile in (("worker", WORKER_PID), ("redis-server", REDIS_DIR / "redis.pid")):
        pid = _alive(pidfile)
        if pid:
            os.kill(pid, signal.SIGTERM)  # warm shutdown: a running chunk finishes, queued ones stay queued
            print(f"stopped {name} (pid {pid})", file=sys.stderr)
            stopped = True
        pidfile.unlink(missing_ok=True)
    if not stopped:
        print("nothing to stop", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from settings import get_settings

    settings = get_settings()
    parser = cli.parser("python -m worker.dev", __doc__)
    parser.add_argument("--background", action="store_true", help="detach; log to data/worker.log")
    parser.add_argument("--stop", action="store_true", help="stop the background worker (and a Redis it started)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="worker processes (each loads the model; default 1)")
    args = parser.parse_args(argv)
    if args.stop:
        return stop()

    from db.migrate import upgrade

    # The worker it starts reads REDIS_URL and DATABASE_URL from the environment (the settings), as compose's
    # workers do: no --redis-url/--database-url here, which only this process would see.
    if not ensure_redis(settings.redis_url):
        return 1
    upgrade(settings.database_url)
    cmd = worker_command(args.concurrency)
    if not args.background:
        os.execv(cmd[0], cmd)
    pid = _alive(WORKER_PID)
    if pid:
        print(f"worker already running (pid {pid}); log: {WORKER_LOG}", file=sys.stderr)
        return 0
    DATA.mkdir(parents=True, exist_ok=True)
    with open(WORKER_LOG, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    WORKER_PID.write_text(f"{proc.pid}\n")
    print(f"worker started (pid {proc.pid}); log: {WORKER_LOG}; stop: python -m worker.dev --stop\n"
          f"submit a folder: python -m worker.submit DIR --wait", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
