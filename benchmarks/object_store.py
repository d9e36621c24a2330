"""Object-storage benchmark: `python -m benchmarks.object_store [--images 256] [--objects 100000]`.

Against an S3-compatible server on loopback (moto in server mode, in this process's threads), prints
  img/s   one Celery worker process (the README's command) classifying the same --images 320x240 JPEGs from
          the bucket (the worker reads the bytes itself) and from a local folder, alternately, twice each
          after a warm-up job; the rate is `jobs.progress.job_rate` (first chunk started -> last row);
  submit  listing and submitting a prefix of --objects small objects (a few bytes each: the listing is the cost,
          not the bytes) with `jobs.submit.submit_folder`, in a child process: its wall time and peak RSS
          (ru_maxrss), chunks queued to Redis on a queue of its own, which is deleted afterwards.
The objects are created inside the server (moto's backend, not PUT requests), which makes 100,000 quick.
Model: the shipped bundle (MODEL_DIR), else --input-size builds a fresh untrained one. Needs Redis (REDIS_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import alive_check, bench_worker, free_port, write_images
from settings import get_settings

BUCKET = "bench"
ACCOUNT = "123456789012"  # moto's default account


def start_store() -> tuple[object, dict[str, str]]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    os.environ.update(env)
    return server, env


def fill_small_objects(prefix: str, n: int) -> float:
    """n objects of a few bytes under s3://bench/PREFIX/, written straight into moto's backend; seconds taken."""
    from moto.s3.models import s3_backends

    backend = s3_backends[ACCOUNT]["aws"]
    start = time.perf_counter()
    for i in range(n):
        backend.put_object(BUCKET, f"{prefix}/d{i // 1000:03d}/img_{i:06d}.jpg", f"object {i}".encode())
    return time.perf_counter() - start


def submit_child(url: str, db_url: str, model_dir: str, queue: str) -> None:
    """(In the child process) list and submit `url`; print wall seconds and peak RSS as JSON."""
    import resource

    from db.migrate import upgrade
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker

    upgrade(db_url)
    start = time.perf_counter()
    job_id = submit_folder(url, broker=RedisBroker(get_settings().redis_url), database_url=db_url,
                           model_dir=model_dir, chunk_size=get_settings().chunk_size, recursive=True, queue=queue)
    seconds = time.perf_counter() - start
    from jobs.progress import job_progress

    print(json.dumps({"job_id": job_id, "seconds": seconds, "total": job_progress(job_id, database_url=db_url)["total"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_submit(n: int, db_url: str, model_dir: str) -> dict:
    prefix = f"small-{n}"
    fill_s = fill_small_objects(prefix, n)
    queue = f"bench-s3-{uuid.uuid4().hex[:8]}"
    code = ("from benchmarks.object_store import submit_child; import sys; "
            "submit_child(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])")
    done = subprocess.run([sys.executable, "-c", code, f"s3://{BUCKET}/{prefix}", db_url, model_dir, queue],
                          capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    import redis

    redis.Redis.from_url(get_settings().redis_url).delete(queue)  # no worker listens to it: drop its chunks
    return {"objects": n, "fill_s": fill_s, **result}


def bench_read(args, folder: Path, model_dir: str, tmp: Path) -> dict[str, list[float]]:
    """img/s of one worker on the photos from the bucket and from the local folder, alternately."""
    import fsspec

    from db.migrate import upgrade
    from jobs.progress import job_progress, wait_for_job
    from jobs.submit import submit_folder
    from worker.broker import RedisBroker

    fsspec.filesystem("s3").put(f"{folder}/", f"{BUCKET}/photos/", recursive=True)
    warm = write_images(tmp / "warm", 16, seed=999)[0].parent
    rates: dict[str, list[float]] = {"s3": [], "local": []}
    # The worker's DATABASE_URL is fixed for its life, and the same photos would be reused by the next run:
    # each run first deletes the earlier rows, so that every run computes every photo.
    db_url = f"sqlite:///{tmp / 'results.db'}"
    upgrade(db_url)
    with bench_worker(Path(model_dir), db_url, tmp / "worker.log", None) as (proc, queue):
        broker = RedisBroker(get_settings().redis_url)

        def run(location: str) -> float:
            from sqlalchemy import delete

            from db.models import Prediction
            from db.session import session_factory

            with session_factory(db_url)() as session, session.begin():
                session.execute(delete(Prediction))  # nothing to reuse: every run computes every photo
            job_id = submit_folder(location, broker=broker, database_url=db_url, model_dir=model_dir,
                                   chunk_size=args.chunk_size, queue=queue)
            wait_for_job(job_id, database_url=db_url, poll_s=0.2, timeout=1800,
                         on_poll=alive_check(proc, tmp / "worker.log"))
            return job_progress(job_id, database_url=db_url)["rate"]

        run(str(warm))  # the model loads in the worker's child on its first task
        for _ in range(args.rounds):
            rates["local"].append(run(str(folder)))
            rates["s3"].append(run(f"s3://{BUCKET}/photos"))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.object_store", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256, help="photos read by the worker per run (0: skip)")
    parser.add_argument("--objects", type=int, nargs="*", default=[10_000, 100_000],
                        help="prefix sizes to list and submit (default: 10000 100000)")
    parser.add_argument("--rounds", type=int, default=2, help="local/bucket run pairs (default 2)")
    parser.add_argument("--chunk-size", type=int, default=64)
    args = parser.parse_args(argv)
    settings = get_settings()
    server, _ = start_store()
    import fsspec

    fsspec.filesystem("s3").mkdir(BUCKET)
    model_dir = str(settings.model_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp_name:
            tmp = Path(tmp_name)
            if args.images:
                folder = write_images(tmp / "photos", args.images)[0].parent
                rates = bench_read(args, folder, model_dir, tmp)
                for where in ("local", "s3"):
                    print(f"{where:6s} one worker, {args.images} photos 320x240: "
                          + ", ".join(f"{r:.1f}" for r in rates[where]) + " img/s")
                best = max(rates["s3"]) / max(rates["local"])
                print(f"bucket/local (best of each): {best:.2f}")
            for n in args.objects:
                db_url = f"sqlite:///{tmp / f'submit-{n}.db'}"
                r = bench_submit(n, db_url, model_dir)
                print(f"submit {r['total']:,} objects: {r['seconds']:.1f} s listed+recorded+queued "
                      f"({n / r['seconds']:.0f} objects/s), submitter peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(objects created in the store in {r['fill_s']:.1f} s)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
