"""What the benchmarks share: generated photos, a fresh untrained bundle, a real Celery worker process, RSS, free
ports for servers. The benchmarks import nothing from tests/ and the tests nothing from here."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from settings import ROOT


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Path]:
    """Distinct camera-sized JPEGs (smooth colour fields plus noise, so decoding costs what a photo costs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    paths = []
    for i in range(n):
        base = rng.uniform(0, 255, 3) + 60 * np.sin(xx[..., None] / rng.uniform(10, 60) + rng.uniform(0, 6, 3))
        img = np.clip(base + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def fresh_bundle(folder: Path, input_size: int, classes: int = 10) -> Path:
    """An untrained DenseNet121 saved as a bundle: same cost per image as a trained one."""
    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    model = build_model(classes, input_size, weights=None)
    save_bundle(model, folder, BundleConfig(labels=[f"class_{i}" for i in range(classes)], input_size=input_size))
    return folder


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def bench_worker(bundle: Path, db_url: str, log_path: Path, runtime: str | None) -> Iterator[tuple[Any, str]]:
    """A real Celery worker process (the README's command) for the duration of the block: (process, queue)."""
    from worker.dev import worker_command

    queue = f"bench-{uuid.uuid4().hex[:8]}"  # never mixes with a running fleet's queue
    env = {**os.environ, "DATABASE_URL": db_url, "MODEL_DIR": str(bundle)}
    if runtime:
        env["RUNTIME"] = runtime
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(worker_command() + ["-Q", queue, "-n", f"{queue}@%h", "--without-gossip",
                                                    "--without-mingle"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, queue
    finally:
        proc.terminate()
        proc.wait(60)


def alive_check(proc: Any, log_path: Path):
    """An `on_poll` for `jobs.progress.wait_for_job` that stops the wait when the worker process exited."""
    def check(_progress: dict) -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited; see {log_path}")

    return check
