"""Batch throughput benchmark (not a test): `python -m worker.bench [--images 512] [--input-size 224]`.

On the same images and the same model, in one run, prints images per second for
  forward   the bare compiled forward pass on pre-decoded batches (the ceiling),
  pipeline  folder -> database: scan, hash, queue, decode + resize overlapped with batched inference in a
            Celery worker process, rows written to SQLite (in-process without Redis: --pipeline inline),
  naive     a per-image loop of decode + `model.predict(x[None])`,
and their ratios. The forward pass is measured for every installed runtime (tf, onnx: model/runtimes.py);
the pipeline and the naive loop use the default runtime (--runtime, else RUNTIME / settings.runtime) and
Keras `model.predict` respectively. Model: --model BUNDLE, else the shipped model if present, else a fresh
(untrained) DenseNet121 at --input-size (224 by default).

--scale N adds a memory check: one job of N small generated images through one worker, whose resident memory
(VmRSS of the process that runs the tasks) is sampled at image 1,000 and at the end; the growth is printed
against a 50 MB budget. --images 0 runs the scale check alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from settings import ROOT, SHIPPED_MODEL_DIR, get_settings


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
    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    model = build_model(classes, input_size, weights=None)
    save_bundle(model, folder, BundleConfig(labels=[f"class_{i}" for i in range(classes)], input_size=input_size))
    return folder


def runtime_classifiers(clf, bundle: Path) -> dict[str, object]:
    """One classifier per installed runtime on the same Keras model (a conversion, when needed, happens here)."""
    from model.predict import Classifier
    from model.runtimes import available_runtimes

    out = {}
    for name in available_runtimes():
        start = time.perf_counter()
        out[name] = Classifier(clf.model, clf.config, card=clf.card, runtime=name, cache_dir=bundle)
        print(f"  [{name}: ready in {time.perf_counter() - start:.1f} s]", flush=True)
    return out


def bench_forward(clf, paths: list[Path], batch_size: int) -> float:
    batch, errors = clf.preprocess(paths)
    assert not any(errors), errors
    for _ in range(2):  # trace (TF) / size the memory arena (ORT) outside the measurement
        clf.forward(batch[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(batch), batch_size):
        clf.forward(batch[i:i + batch_size])
    return len(batch) / (time.perf_counter() - start)


def bench_naive(clf, paths: list[Path]) -> float:
    from model.images import load_image

    def one(p: Path) -> None:
        clf.model.predict(load_image(p, clf.input_size)[None].astype(np.float32), verbose=0)

    one(paths[0])
    start = time.perf_counter()
    for p in paths:
        one(p)
    return len(paths) / (time.perf_counter() - start)


def inline_job(clf, folder: Path, db_url: str):
    """What `submit_folder` records, done in this process for a run without a broker: scan, hash, job row.
    Returns (session factory, job id, [path, sha256] items)."""
    from db import crud
    from db.migrate import ensure_schema
    from db.session import session_factory
    from worker.pipeline import hash_files, scan_folder

    ensure_schema(db_url)
    sessions = session_factory(db_url)
    paths = [str(p) for p in scan_folder(folder).images]
    items = [[p, h] for p, h in zip(paths, hash_files(paths), strict=True)]
    job_id = uuid.uuid4().hex[:16]
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=clf.model_version, labels=clf.labels, input_size=clf.input_size)
        crud.create_job(session=session, job_id=job_id, folder=str(folder), recursive=False, model_dir="",
                        model_version=clf.model_version, total=len(items))
    return sessions, job_id, items


def bench_pipeline_inline(clf, folder: Path, db_url: str, batch_size: int, chunk_size: int) -> float:
    """The worker's code path in this process, without a broker: scan, hash, chunks, classify, store."""
    from worker.pipeline import chunked, process_chunk

    start = time.perf_counter()
    sessions, job_id, items = inline_job(clf, folder, db_url)
    for chunk in chunked(items, chunk_size):
        process_chunk(sessions=sessions, classifier=clf, job_id=job_id, items=chunk, batch_size=batch_size)
    return len(items) / (time.perf_counter() - start)


@contextlib.contextmanager
def bench_worker(bundle: Path, db_url: str, log_path: Path, runtime: str | None) -> Iterator[tuple[Any, str]]:
    """A real Celery worker process for the duration of the block: (process, its queue name)."""
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


def bench_pipeline_celery(bundle: Path, folder: Path, warmup: Path, db_url: str, chunk_size: int,
                          log_path: Path, runtime: str | None = None) -> float:
    """Submit the folder to a real worker process (already warmed up on other images) and time it to the end."""
    from worker.submit import job_progress, submit_folder

    with bench_worker(bundle, db_url, log_path, runtime) as (proc, queue):
        def run(path: Path) -> float:
            start = time.perf_counter()
            job_id = submit_folder(path, model_dir=bundle, database_url=db_url, queue=queue, chunk_size=chunk_size)
            while not (p := job_progress(job_id, database_url=db_url))["finished"]:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited; see {log_path}")
                time.sleep(0.05)
            assert p["errors"] == 0 and p["reused"] == 0, p
            return p["done"] / (time.perf_counter() - start)

        run(warmup)  # model load and tracing happen here, not in the measurement
        rate = run(folder)
        kids = child_pids(proc.pid)
        if kids:
            print(f"  [worker process RSS {rss_mb(kids[0]):.0f} MB]", flush=True)
        return rate


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def bench_scale(n: int, input_size: int, tmp: Path, chunk_size: int, runtime: str | None, mode: str,
                batch_size: int, budget_mb: float = 50.0) -> bool:
    """One job of n small images; the worker's RSS at image 1,000 and at image n. True when within budget."""
    from model.predict import load_classifier

    bundle = fresh_bundle(tmp / f"scale-bundle-{input_size}", input_size)
    load_classifier(bundle, runtime=runtime)  # any conversion happens here, not inside the measured worker
    start = time.perf_counter()
    write_images(tmp / "scale", n, size=(48, 40), seed=50_000)
    print(f"scale check: {n} JPEGs 48x40 written in {time.perf_counter() - start:.0f} s; fresh DenseNet121 at "
          f"{input_size}px, chunk {chunk_size}, pipeline {mode}", flush=True)
    db_url = f"sqlite:///{tmp / 'scale.db'}"
    mark = min(1000, n)
    samples: dict[str, float] = {}
    start = time.perf_counter()
    if mode == "celery":
        from worker.submit import job_progress, submit_folder

        with bench_worker(bundle, db_url, tmp / "scale-worker.log", runtime) as (proc, queue):
            job_id = submit_folder(tmp / "scale", model_dir=bundle, database_url=db_url, queue=queue,
                                   chunk_size=chunk_size)
            submitted = time.perf_counter()
            while not (p := job_progress(job_id, database_url=db_url))["finished"]:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited; see {tmp / 'scale-worker.log'}")
                kids = child_pids(proc.pid)
                if kids and "first" not in samples and p["done"] >= mark:
                    samples["first"], samples["first_at"] = rss_mb(kids[0]), p["done"]
                time.sleep(0.2)
            kids = child_pids(proc.pid)
            samples["last"], samples["last_at"] = rss_mb(kids[0]), p["done"]
            parent = rss_mb(proc.pid)
            assert p["errors"] == 0, p
        who = f"worker child process (parent {parent:.0f} MB)"
    else:
        from worker.pipeline import chunked, process_chunk

        clf = load_classifier(bundle, runtime=runtime)
        sessions, job_id, items = inline_job(clf, tmp / "scale", db_url)
        submitted, done = time.perf_counter(), 0
        for chunk in chunked(items, chunk_size):
            done += process_chunk(sessions=sessions, classifier=clf, job_id=job_id, items=chunk,
                                  batch_size=batch_size)
            if "first" not in samples and done >= mark:
                samples["first"], samples["first_at"] = rss_mb(os.getpid()), done
        samples["last"], samples["last_at"] = rss_mb(os.getpid()), done
        who = "this process (inline pipeline)"
    elapsed = time.perf_counter() - submitted
    growth = samples["last"] - samples["first"]
    print(f"  {n} images in {time.perf_counter() - start:.0f} s ({n / elapsed:.0f} img/s after submit); RSS of the "
          f"{who}: {samples['first']:.0f} MB at image {samples['first_at']:.0f}, {samples['last']:.0f} MB at image "
          f"{samples['last_at']:.0f}: growth {growth:+.1f} MB (budget {budget_mb:.0f} MB: "
          f"{'ok' if growth <= budget_mb else 'OVER'})", flush=True)
    return growth <= budget_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder (default: the shipped model, else a fresh DenseNet121)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--input-size", type=int,
                        help="benchmark a fresh DenseNet121 at this size (default: the shipped model, else 224)")
    parser.add_argument("--batch-size", type=int, default=get_settings().batch_size)
    parser.add_argument("--chunk-size", type=int, default=get_settings().chunk_size)
    parser.add_argument("--pipeline", choices=["auto", "celery", "inline"], default="auto",
                        help="auto: a real Celery worker when Redis answers, else in-process")
    parser.add_argument("--runtime", default=None,
                        help="runtime of the pipeline: auto | tf | onnx (default: RUNTIME, else auto)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also run one job of N small images and report the worker's memory growth")
    parser.add_argument("--scale-input-size", type=int, default=32, help="network input size for --scale")
    args = parser.parse_args(argv)

    from worker.submit import broker_available

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    mode = args.pipeline
    if mode == "auto":
        mode = "celery" if broker_available() else "inline"
    ok = True
    if args.images > 0:
        bench_throughput(args, tmp, mode)
    if args.scale:
        ok = bench_scale(args.scale, args.scale_input_size, tmp, args.chunk_size, args.runtime, mode,
                         args.batch_size)
    return 0 if ok else 1


def bench_throughput(args: argparse.Namespace, tmp: Path, mode: str) -> None:
    from model.predict import load_classifier
    from model.runtimes import resolve_runtime

    if args.model:
        bundle = Path(args.model)
    elif args.input_size is None and (SHIPPED_MODEL_DIR / "config.json").is_file():
        bundle = SHIPPED_MODEL_DIR
    else:
        bundle = fresh_bundle(tmp / "bundle", args.input_size or 224)
    default = resolve_runtime(args.runtime, can_cache=True)
    clf = load_classifier(bundle, runtime="tf")
    paths = write_images(tmp / "images", args.images)
    write_images(tmp / "warmup", max(args.batch_size, 8), seed=10_000)
    db_url = f"sqlite:///{tmp / 'bench.db'}"

    print(f"model {bundle} (version {clf.model_version}, {clf.input_size}px), {len(paths)} JPEGs 320x240, "
          f"batch {args.batch_size}, chunk {args.chunk_size}, pipeline {mode} on runtime {default}, "
          f"{len(os.sched_getaffinity(0))} cores; temp files in {tmp}", flush=True)
    classifiers = runtime_classifiers(clf, bundle)
    forward = {}
    for name, runtime_clf in classifiers.items():
        forward[name] = bench_forward(runtime_clf, paths, args.batch_size)
        print(f"  forward {name:<6} {forward[name]:8.1f} img/s", flush=True)
    if mode == "celery":
        pipeline = bench_pipeline_celery(bundle, tmp / "images", tmp / "warmup", db_url, args.chunk_size,
                                         tmp / "worker.log", runtime=default)
    else:
        pipeline = bench_pipeline_inline(classifiers[default], tmp / "images", db_url, args.batch_size,
                                         args.chunk_size)
    print(f"  pipeline ({default}) {pipeline:8.1f} img/s", flush=True)
    naive = bench_naive(clf, paths)
    print(f"  naive (Keras predict per image) {naive:8.1f} img/s", flush=True)
    tf_forward = forward["tf"]
    print("ratios vs the bare TensorFlow forward pass: "
          + ", ".join(f"forward {n} {v / tf_forward:.2f}x" for n, v in forward.items())
          + f", pipeline {pipeline / tf_forward:.2f}x (target 1.25x), naive {naive / tf_forward:.2f}x")
    print(f"pipeline/forward({default}) {pipeline / forward[default]:.2f}x, pipeline/naive {pipeline / naive:.1f}x",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
