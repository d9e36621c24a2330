"""Submit a folder for batch classification on the workers, resume a job, or watch one; prints the job id.

    python -m worker.submit DIR [--recursive] [--model BUNDLE] [--wait]
    python -m worker.submit s3://BUCKET/PREFIX --recursive --wait      (any fsspec URL: gs://, az://, ...)
    python -m worker.submit --resume JOB_ID [--wait]
    python -m worker.submit --wait JOB_ID

Scans the folder, records a job and its files, reuses stored results of files whose content (sha256) was
already classified by the same model version (objects in a store: the same object unchanged, by its ETag),
sends the rest to the workers in chunks and prints the job id.
`--resume JOB_ID` queues again the files of a job that have no row (the workers also do it by themselves for a
stalled job); `--wait JOB_ID` watches a job that runs already, queuing nothing. Exit status: 0 done, 1 the job
failed, 2 an error before it ran, 130 stopped waiting (the job goes on). The Python API is `jobs.submit`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cli
from jobs.fleet import watch_job
from jobs.progress import print_summary
from jobs.storage import is_url
from jobs.submit import SubmitError, existing_job, resume_job, submit_folder
from worker.broker import RedisBroker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from settings import get_settings

    settings = get_settings()
    parser = cli.parser("python -m worker.submit", __doc__)
    parser.add_argument("folder", nargs="?",
                        help="folder of images, or a store URL (s3://bucket/prefix, gs://..., any fsspec URL; "
                             "credentials and endpoint from the store's variables, e.g. AWS_ENDPOINT_URL)")
    parser.add_argument("--resume", metavar="JOB_ID", help="queue again the files of this job that have no row")
    parser.add_argument("--recursive", "-r", action="store_true", help="include subfolders")
    parser.add_argument("--model", default=settings.model_dir, metavar="BUNDLE",
                        help="model bundle folder or URL (s3://.../bundle: fetched once per host into a cache) "
                             "(default: env MODEL_DIR, else the shipped model)")
    parser.add_argument("--wait", nargs="?", const=True, default=False, metavar="JOB_ID",
                        help="show progress until the job ends, then a summary; with a JOB_ID alone, watch that job "
                             "without queuing anything (exit 0 done, 1 failed)")
    parser.add_argument("--chunk-size", type=int, default=settings.chunk_size, metavar="N",
                        help="images per task (default: env CHUNK_SIZE, else %(default)s)")
    parser.add_argument("--stall-after", type=float, default=settings.stall_warning_s, metavar="S",
                        help="with --wait: explain a job with no progress for S seconds (default: env "
                             "STALL_WARNING_S, else %(default)s)")
    cli.add_database_url(parser, settings)
    cli.add_redis_url(parser, settings)
    args = parser.parse_args(argv)
    args.attach = args.wait if isinstance(args.wait, str) else None
    folder_after_wait = args.attach is not None and (Path(args.attach).is_dir() or is_url(args.attach))
    if folder_after_wait and args.folder is None and args.resume is None:
        args.folder, args.attach = args.attach, None  # `--wait DIR`: the folder came after the flag
    if args.attach is not None and (args.folder or args.resume):
        parser.error("--wait JOB_ID watches an existing job: give no folder and no --resume with it")
    if args.attach is None and (args.folder is None) == (args.resume is None):
        parser.error("give a folder to submit, --resume JOB_ID, or --wait JOB_ID")
    args.heal_after_s = settings.heal_after_s
    return args


def start(args: argparse.Namespace, broker: RedisBroker) -> str:
    """The job to follow: the one submitted, resumed or named by --wait; SubmitError when there is none."""
    from db.session import session_factory

    if args.attach is not None:
        with session_factory(args.database_url)() as session:
            return existing_job(session, args.attach).id
    if args.resume:
        resumed = resume_job(args.resume, broker=broker, database_url=args.database_url, chunk_size=args.chunk_size)
        print(f"job {resumed['job_id']}: queued {resumed['queued']} file(s) without a row in {resumed['chunks']} "
              "chunk(s)", file=sys.stderr)
        return resumed["job_id"]
    return submit_folder(args.folder, broker=broker, database_url=args.database_url, model_dir=args.model,
                         chunk_size=args.chunk_size, recursive=args.recursive)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from db.migrate import upgrade

    upgrade(args.database_url)
    broker = RedisBroker(args.redis_url)
    try:
        job_id = start(args, broker)
    except SubmitError as exc:
        cli.fail(str(exc))
    print(job_id)
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        progress = watch_job(job_id, database_url=args.database_url, broker=broker, stall_s=args.stall_after,
                             heal_after_s=args.heal_after_s)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the job goes on. Check it with: python -m db.report {job_id}", file=sys.stderr)
        return 130
    print_summary(job_id, database_url=args.database_url)
    if progress["status"] == "failed":
        print(f"job {job_id} failed: {progress['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
