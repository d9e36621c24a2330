"""Processes the tests start: `celery worker`s, a private `redis-server` and PostgreSQL, Chromium; free ports.

Workers are started with the environment's `celery` console script, as the README and docker-compose start them.
The tests import nothing from benchmarks/ (nor the benchmarks from tests/): benchmarks/common.py has its own
free_port and Chromium flags.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import ROOT, redis_db

__all__ = ["CELERY", "CHROMIUM", "CHROMIUM_ARGS", "TEST_REDIS_URL", "PrivateRedis", "WorkerProcess",
           "compose_worker_command", "free_port", "wait_job"]

CELERY = str(Path(sys.executable).with_name("celery"))  # the console script, not `python -m celery`
# Redis database 14 by default: tests flush only that one, never the database a developer's worker uses.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db(14)}")
CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/services.sh installs it), driven by Playwright
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now (the OS picks it; a server started next takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_worker_command() -> list[str]:
    """docker-compose's `worker` command (the README's), with `celery` resolved to this environment's script."""
    import yaml

    argv = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]["command"]
    assert argv[0] == "celery", argv
    return [CELERY, *argv[1:]]


class WorkerProcess:
    """One `celery worker` as a subprocess in its own process group.

    By default the documented command plus a queue and a node name of the test's own; `argv` replaces it whole.
    `cwd` is where it starts: Celery puts that folder on sys.path only while it loads the app, so a worker started
    elsewhere than the repo root imports the project only because it is installed.
    """

    def __init__(self, name: str, *, database_url: str, model_dir: str, log_dir: Path, queue: str | None = None,
                 app: str = "worker", extra_env: dict[str, str] | None = None, cwd: Path = ROOT,
                 redis_url: str = TEST_REDIS_URL, argv: list[str] | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "MODEL_DIR": model_dir,
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(extra_env or {})}
        cmd = argv or ["nice", "-n", "10", CELERY, "-A", app, "worker", "--pool", "prefork", "--concurrency", "1",
                       "--loglevel", "INFO", "-Q", queue, "-n", f"{name}@%h",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready after {timeout} s:\n{self.log()[-3000:]}")

    def children(self) -> list[int]:
        from worker.dev import child_pids

        return child_pids(self.proc.pid) if self.proc.poll() is None else []

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown of the worker and its child
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()


def wait_job(job_id: str, database_url: str, timeout: float = 120.0, workers: Sequence[WorkerProcess] = ()) -> dict:
    """`jobs.progress.wait_for_job`, failing fast when one of `workers` dies and with their logs on a timeout."""
    from jobs.progress import wait_for_job

    def alive(progress: dict) -> None:
        for w in workers:
            if not progress["finished"] and w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} died:\n{w.log()[-3000:]}")

    try:
        return wait_for_job(job_id, database_url=database_url, poll_s=0.2, timeout=timeout, on_poll=alive)
    except TimeoutError as exc:
        logs = "\n".join(w.log()[-2000:] for w in workers)
        raise TimeoutError(f"{exc}\n{logs}") from None


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence (the default of many installs)."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (make services installs it)")
        self.cmd = [binary, "--bind", "127.0.0.1", "--port", str(free_port()), "--save", "", "--appendonly", "no",
                    "--dir", str(workdir)]
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def port(self) -> int:
        return int(self.cmd[self.cmd.index("--port") + 1])

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):
        import redis

        return redis.Redis.from_url(self.url(db))

    def start(self, timeout: float = 20.0) -> None:
        from worker.broker import RedisBroker

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not RedisBroker(self.url()).available(timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: what a crash, the OOM killer or a power cut does; without persistence the data is gone."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl) on a free port, which a test may stop and start.

    initdb refuses to run as root: as root the cluster belongs to the `postgres` user (runuser), in a folder of
    its own under the system's temp folder (pytest's is private to root). fsync is off: the data outlives a stop,
    not a power cut, which no test makes. `close()` stops it and removes the folder.
    """

    def __init__(self):
        import glob
        import pwd
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found and shutil.which("pg_ctl") is None:
            raise FileNotFoundError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("pg_ctl")).parent
        self.as_user: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a restart or a failover."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
