"""The Docker side of `make compose-check` (benchmarks/compose_check.py): finding `docker compose`, the base images
(pulled, or built as stand-ins offline), one throw-away compose project whose every command shares its name, files
and variables, and the waits on it (the worker answers `worker.status`, the demo serves, chunks in a worker's log).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from settings import ROOT

OFFLINE_BUILD = Path(os.environ.get("OFFLINE_IMAGES_BUILD", ROOT.parent / "shared/tools/offline-images/build.sh"))


class CheckFailed(Exception):
    """A check of the stack failed: the message says which, with the logs that show why."""


class NoDocker(Exception):
    """No Docker to run the stack on (exit 2: the check cannot run here, which is not a failure)."""


def compose_program() -> list[str]:
    """`docker compose` where the v2 plugin exists, else `docker-compose` (v1); NoDocker when neither runs."""
    if shutil.which("docker") is None:
        raise NoDocker("docker is not installed (Debian: apt-get install docker.io docker-compose)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise NoDocker("the Docker daemon does not answer `docker info` (start dockerd)")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise NoDocker("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


def base_images() -> list[str]:
    """The images the build starts FROM and the third-party services run."""
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"].values()
    return sorted(set(froms) | {s["image"] for s in services if "build" not in s})


def ensure_base_images() -> None:
    missing = [i for i in base_images() if subprocess.run(["docker", "image", "inspect", i],
                                                          capture_output=True).returncode != 0]
    for image in list(missing):
        print(f"$ docker pull {image}", flush=True)
        try:
            if subprocess.run(["docker", "pull", image], capture_output=True, timeout=120).returncode == 0:
                missing.remove(image)
        except subprocess.TimeoutExpired:
            pass
    if missing:
        if not OFFLINE_BUILD.is_file():
            raise CheckFailed(f"cannot pull {', '.join(missing)} and no stand-in builder at {OFFLINE_BUILD}")
        print(f"cannot pull {', '.join(missing)}: building the stand-ins ({OFFLINE_BUILD})", flush=True)
        subprocess.run(["bash", str(OFFLINE_BUILD)], check=True)


class Stack:
    """One compose project: every command runs with the same project name, files and variables."""

    def __init__(self, program: list[str], env: dict[str, str]):
        self.program = program
        self.env = env
        self.files = ["docker-compose.yml"]

    def command(self, *args: str) -> list[str]:
        files = [a for f in self.files for a in ("-f", f)]
        return [*self.program, *files, "-p", self.env["COMPOSE_PROJECT_NAME"], *args]

    def run(self, *args: str, check: bool = True, capture: bool = False, timeout: float = 1800,
            echo: bool = True) -> str:
        if echo:
            shown = f"IMAGES_DIR={self.env['IMAGES_DIR']} " if args[0] in ("up", "run") else ""
            print(f"$ {shown}{' '.join(self.command(*args))}", flush=True)
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if capture else {}
        done = subprocess.run(self.command(*args), cwd=ROOT, env=self.env, text=True, timeout=timeout, **pipe)
        if check and done.returncode != 0:
            raise CheckFailed(f"`{' '.join(args)}` exited {done.returncode}:\n{(done.stdout or '')[-3000:]}")
        return done.stdout or ""

    def inside(self, *argv: str, check: bool = True, echo: bool = True) -> str:
        """A command run in the stack's first worker container (where `db.report` and `worker.status` run)."""
        return self.run("exec", "-T", "worker", *argv, check=check, capture=True, timeout=300, echo=echo)

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service, capture=True).split()

    def logs(self, tail: int = 40) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), check=False, capture=True)


def wait_until(what: str, ready, stack: Stack, timeout: float = 600) -> float:
    start = time.perf_counter()
    while not ready():
        if time.perf_counter() - start > timeout:
            raise CheckFailed(f"{what}: not ready after {timeout:.0f} s\n{stack.logs()}")
        time.sleep(3)
    return time.perf_counter() - start


def workers_online(stack: Stack) -> int:
    try:
        out = stack.inside("python", "-m", "worker.status", check=False, echo=False)
    except subprocess.TimeoutExpired:  # a starved machine: the caller's own deadline decides
        return 0
    match = re.search(r"(\d+) workers? online", out)
    return int(match.group(1)) if match else 0


def demo_serves(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def finished_chunks(container: str) -> int:
    logs = subprocess.run(["docker", "logs", container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True).stdout
    return len(re.findall(r"classify_chunk\[[^\]]+\] succeeded", logs))


def build_and_up(stack: Stack, timings: dict[str, float]) -> str:
    """`build`, `up -d`, and the wait until the worker and the demo answer; the demo's URL."""
    start = time.perf_counter()
    stack.run("build")
    timings["build"] = time.perf_counter() - start
    start = time.perf_counter()
    stack.run("up", "-d")
    demo_url = f"http://{stack.env['DEMO_BIND']}"
    wait_until("the worker", lambda: workers_online(stack) >= 1, stack)
    wait_until("the demo", lambda: demo_serves(demo_url), stack)
    timings["up"] = time.perf_counter() - start
    return demo_url
