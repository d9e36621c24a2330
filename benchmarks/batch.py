"""Batch throughput benchmark: `python -m benchmarks.batch [--images 512] [--input-size 224]`.

On the same images and the same model, in one run, prints images per second for
  forward   the bare compiled forward pass on pre-decoded batches (the ceiling),
  pipeline  folder -> database: `jobs.submit.submit_folder` (scan, hash, record), then decode + resize
            overlapped with batched inference in a Celery worker process, rows written to SQLite (in this
            process without Redis: --pipeline inline, the chunks run by the worker's own `process_chunks`),
  naive     a per-image loop of decode + `model.predict(x[None])`,
and their ratios. The pipeline runs on --images 320x240 JPEGs and on --phone-images 4000x3000 ones (quality 90,
made in the temp folder, removed after), each run between two forward passes over the same photos
(`benchmarks.photos`); the last line is pipeline/forward for both sizes. The forward pass is measured for
every installed runtime (tf, onnx: model/runtimes.py); the pipeline and the naive loop use the default runtime
(--runtime, else RUNTIME / settings.runtime) and Keras `model.predict` respectively. Model: --model BUNDLE, else
the shipped model if present, else a fresh (untrained) DenseNet121 at --input-size (224 by default).

--scale N adds a memory check: one job of N small generated images through one worker, whose resident memory
(VmRSS of the process that runs the tasks) is sampled at image 1,000 and at the end; the growth is printed
against a 50 MB budget. --images 0 runs the scale check alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import alive_check, bench_worker, fresh_bundle, rss_mb, write_images
from benchmarks.photos import PHONE_SIZE, measure_size, write_photos
from benchmarks.runtimes import bench_forward, bench_naive, runtime_classifiers
from settings import SHIPPED_MODEL_DIR, get_settings


class InlineBroker:
    """A broker for `submit_folder` that runs the chunks here, through the worker's `process_chunks`."""

    def __init__(self, clf, db_url: str, batch_size: int, after_chunk: Callable[[int], None] | None = None,
                 before: Callable[[], None] | None = None):
        self.clf, self.db_url, self.batch_size = clf, db_url, batch_size
        self.after_chunk, self.before = after_chunk, before

    def send_chunks(self, job_id: str, chunks, _model_dir: str, *, queue: str | None = None) -> None:
        from db.session import session_factory
        from worker.pipeline import process_chunks

        if self.before is not None:
            self.before()
        process_chunks(sessions=session_factory(self.db_url), classifier=self.clf, job_id=job_id, chunks=chunks,
                       batch_size=self.batch_size, after_chunk=self.after_chunk)


def bench_pipeline_inline(clf, bundle: Path, folder: Path, db_url: str, batch_size: int, chunk_size: int) -> float:
    """The submitter's and the worker's code in this process, without a broker: scan, hash, record, classify."""
    from jobs.progress import job_progress
    from jobs.submit import submit_folder

    start = time.perf_counter()
    job_id = submit_folder(folder, model_dir=bundle, database_url=db_url, chunk_size=chunk_size, check_broker=False,
                           broker=InlineBroker(clf, db_url, batch_size))
    elapsed = time.perf_counter() - start
    p = job_progress(job_id, database_url=db_url)
    assert p["finished"] and p["errors"] == 0 and p["reused"] == 0, p
    return p["done"] / elapsed


@contextlib.contextmanager
def celery_pipeline(bundle: Path, warmup: Path, db_url: str, chunk_size: int, log_path: Path,
                    runtime: str | None = None) -> Iterator[Callable[[Path], float]]:
    """A real worker process, warmed up on other images: yields `run(folder) -> img/s`, submit to last row."""
    from jobs.progress import wait_for_job
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker
    from worker.dev import child_pids

    broker = RedisBroker(get_settings().redis_url)
    with bench_worker(bundle, db_url, log_path, runtime) as (proc, queue):
        def run(path: Path) -> float:
            start = datetime.now(UTC)
            job_id = submit_folder(path, model_dir=bundle, database_url=db_url, broker=broker, queue=queue,
                                   chunk_size=chunk_size)
            # The end is the job's finished_at, so a slow poll costs no accuracy, and polls seldom: every poll is CPU
            # taken from the worker on a small machine.
            p = wait_for_job(job_id, database_url=db_url, poll_s=0.5, on_poll=alive_check(proc, log_path))
            assert p["errors"] == 0 and p["reused"] == 0, p
            return p["done"] / (datetime.fromisoformat(p["finished_at"]) - start).total_seconds()

        run(warmup)  # model load and tracing happen here, not in the measurement
        yield run
        kids = child_pids(proc.pid)
        if kids:
            print(f"  [worker process RSS {rss_mb(kids[0]):.0f} MB]", flush=True)


def _scale_celery(bundle: Path, folder: Path, db_url: str, tmp: Path, chunk_size: int, runtime: str | None,
                  mark: int, samples: dict[str, float]) -> str:
    from jobs.progress import wait_for_job
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker
    from worker.dev import child_pids

    log_path = tmp / "scale-worker.log"
    with bench_worker(bundle, db_url, log_path, runtime) as (proc, queue):
        alive = alive_check(proc, log_path)

        def sample(p: dict) -> None:
            alive(p)
            kids = child_pids(proc.pid)
            if kids and "first" not in samples and p["done"] >= mark:
                samples["first"], samples["first_at"] = rss_mb(kids[0]), p["done"]

        broker = RedisBroker(get_settings().redis_url)
        job_id = submit_folder(folder, model_dir=bundle, database_url=db_url, broker=broker, queue=queue,
                               chunk_size=chunk_size)
        samples["submitted"] = time.perf_counter()
        p = wait_for_job(job_id, database_url=db_url, poll_s=0.2, on_poll=sample)
        samples["last"], samples["last_at"] = rss_mb(child_pids(proc.pid)[0]), p["done"]
        parent = rss_mb(proc.pid)
        assert p["errors"] == 0, p
    return f"worker child process (parent {parent:.0f} MB)"


def _scale_inline(bundle: Path, folder: Path, db_url: str, chunk_size: int, runtime: str | None, batch_size: int,
                  mark: int, samples: dict[str, float]) -> str:
    from jobs.submit import submit_folder
    from model.predict import load_classifier

    def sample(done: int) -> None:
        if "first" not in samples and done >= mark:
            samples["first"], samples["first_at"] = rss_mb(os.getpid()), done
        samples["last"], samples["last_at"] = rss_mb(os.getpid()), done

    clf = load_classifier(bundle, runtime=runtime)
    def submitted() -> None:
        samples["submitted"] = time.perf_counter()  # recorded: from here on the chunks run

    broker = InlineBroker(clf, db_url, batch_size, after_chunk=sample, before=submitted)
    submit_folder(folder, model_dir=bundle, database_url=db_url, chunk_size=chunk_size, check_broker=False,
                  broker=broker)
    return "this process (inline pipeline)"


def bench_scale(n: int, input_size: int, tmp: Path, chunk_size: int, runtime: str | None, mode: str,
                batch_size: int, budget_mb: float = 50.0) -> bool:
    """One job of n small images; the worker's RSS at image 1,000 and at image n. True when within budget."""
    from db.migrate import upgrade
    from model.predict import load_classifier

    bundle = fresh_bundle(tmp / f"scale-bundle-{input_size}", input_size)
    load_classifier(bundle, runtime=runtime)  # any conversion happens here, not inside the measured worker
    start = time.perf_counter()
    write_images(tmp / "scale", n, size=(48, 40), seed=50_000)
    print(f"scale check: {n} JPEGs 48x40 written in {time.perf_counter() - start:.0f} s; fresh DenseNet121 at "
          f"{input_size}px, chunk {chunk_size}, pipeline {mode}", flush=True)
    db_url = f"sqlite:///{tmp / 'scale.db'}"
    upgrade(db_url)
    samples: dict[str, float] = {}
    start = time.perf_counter()
    if mode == "celery":
        who = _scale_celery(bundle, tmp / "scale", db_url, tmp, chunk_size, runtime, min(1000, n), samples)
    else:
        who = _scale_inline(bundle, tmp / "scale", db_url, chunk_size, runtime, batch_size, min(1000, n), samples)
    elapsed = time.perf_counter() - samples["submitted"]
    growth = samples["last"] - samples["first"]
    print(f"  {n} images in {time.perf_counter() - start:.0f} s ({n / elapsed:.0f} img/s after submit); RSS of the "
          f"{who}: {samples['first']:.0f} MB at image {samples['first_at']:.0f}, {samples['last']:.0f} MB at image "
          f"{samples['last_at']:.0f}: growth {growth:+.1f} MB (budget {budget_mb:.0f} MB: "
          f"{'ok' if growth <= budget_mb else 'OVER'})", flush=True)
    return growth <= budget_mb


def bench_throughput(args: argparse.Namespace, tmp: Path, mode: str) -> None:
    from db.migrate import upgrade
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
    upgrade(db_url)

    print(f"model {bundle} (version {clf.model_version}, {clf.input_size}px), {len(paths)} JPEGs 320x240, "
          f"batch {args.batch_size}, chunk {args.chunk_size}, pipeline {mode} on runtime {default}, "
          f"{len(os.sched_getaffinity(0))} cores; temp files in {tmp}", flush=True)
    classifiers = runtime_classifiers(clf, bundle, threads=get_settings().inference_threads)
    forward = {}
    for name, runtime_clf in classifiers.items():
        forward[name] = bench_forward(runtime_clf, paths, args.batch_size)
        print(f"  forward {name:<6} {forward[name]:8.1f} img/s", flush=True)
    if clf.unknown is not None:  # the bundle's statistics, as load_classifier gives them
        bench_unknown_cost(clf, paths, args.batch_size, forward[default])
    phone = args.images // 4 if args.phone_images is None else args.phone_images
    start = time.perf_counter()
    photos = write_photos(tmp / "phone", phone)
    print(f"  [{phone} phone photos {PHONE_SIZE[0]}x{PHONE_SIZE[1]} written in {time.perf_counter() - start:.0f} s]")
    sizes = [("small photos", paths)] + [("phone photos", photos)] * bool(photos)
    runs = []
    with contextlib.ExitStack() as stack:
        if mode == "celery":
            run = stack.enter_context(celery_pipeline(bundle, tmp / "warmup", db_url, args.chunk_size,
                                                      tmp / "worker.log", runtime=default))
        else:
            def run(folder: Path) -> float:
                return bench_pipeline_inline(classifiers[default], bundle, folder, db_url, args.batch_size,
                                             args.chunk_size)
        for name, size_paths in sizes:
            runs.append(measure_size(name, classifiers[default], size_paths, lambda p=size_paths: run(p[0].parent),
                                     args.batch_size))
            print(runs[-1].line(default), flush=True)
    shutil.rmtree(tmp / "phone", ignore_errors=True)  # hundreds of MB
    pipeline = runs[0].pipeline
    naive = bench_naive(clf, paths)
    print(f"  naive (Keras predict per image) {naive:8.1f} img/s", flush=True)
    tf_forward = forward["tf"]
    print("ratios vs the bare TensorFlow forward pass: "
          + ", ".join(f"forward {n} {v / tf_forward:.2f}x" for n, v in forward.items())
          + f", pipeline {pipeline / tf_forward:.2f}x (target 1.25x), naive {naive / tf_forward:.2f}x")
    print(f"pipeline/naive {pipeline / naive:.1f}x", flush=True)
    print(f"pipeline/forward({default}): " + ", ".join(f"{r.name} {r.ratio:.2f}x" for r in runs) + " (target 0.85x)",
          flush=True)


def bench_unknown_cost(clf, paths: list[Path], batch_size: int, forward_ips: float) -> None:
    """What the unknown score (model.unknown) adds to a batch: timed on the batch's own pooled features, against
    the forward pass measured just before."""
    batch, _ = clf.preprocess(paths[:batch_size])
    features = clf.forward_outputs(batch).features
    clf.unknown.score(features)
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        clf.unknown.score(features)
    score_s = (time.perf_counter() - start) / rounds
    forward_s = len(batch) / forward_ips
    print(f"  unknown score {1000 * score_s:.2f} ms per batch of {len(batch)} = {score_s / forward_s:.2%} of the "
          f"forward pass ({1000 * forward_s:.0f} ms; target <= 5%)", flush=True)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder (default: the shipped model, else a fresh DenseNet121)")
    parser.add_argument("--images", type=int, default=512, help="small photos (320x240 JPEGs)")
    parser.add_argument("--phone-images", type=int, metavar="N",
                        help=f"phone-size photos ({PHONE_SIZE[0]}x{PHONE_SIZE[1]} JPEGs, quality 90, about 4 MB "
                             "each; default: a quarter of --images; 0: none)")
    parser.add_argument("--input-size", type=int,
                        help="benchmark a fresh DenseNet121 at this size (default: the shipped model, else 224)")
    parser.add_argument("--batch-size", type=int, default=settings.batch_size)
    parser.add_argument("--chunk-size", type=int, default=settings.chunk_size)
    parser.add_argument("--pipeline", choices=["auto", "celery", "inline"], default="auto",
                        help="auto: a real Celery worker when Redis answers, else in-process")
    parser.add_argument("--runtime", default=settings.runtime,
                        help="runtime of the pipeline: auto | tf | onnx (default: RUNTIME, else auto)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also run one job of N small images and report the worker's memory growth")
    parser.add_argument("--scale-input-size", type=int, default=32, help="network input size for --scale")
    args = parser.parse_args(argv)

    from worker.broker import RedisBroker

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    mode = args.pipeline
    if mode == "auto":
        mode = "celery" if RedisBroker(settings.redis_url).available() else "inline"
    ok = True
    if args.images > 0:
        bench_throughput(args, tmp, mode)
    if args.scale:
        ok = bench_scale(args.scale, args.scale_input_size, tmp, args.chunk_size, args.runtime, mode,
                         args.batch_size)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
