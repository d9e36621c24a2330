"""Submit a folder for batch classification: `python -m worker.submit DIR [--recursive] [--model BUNDLE] [--wait]`.

Scans the folder, records a job and its files, reuses stored results of files whose content (sha256) was
already classified by the same model version, sends the rest to the workers in chunks and prints the job id.
`--resume JOB_ID` queues again the files of a job that have no row (the workers also do it by themselves for a
stalled job: `worker.heal`); `--wait JOB_ID` watches a job that runs already, queuing nothing.
Python: `submit_folder(folder) -> job_id`, `resume_job(job_id) -> dict`; a job's progress is `worker.progress`,
the broker's `worker.status.broker_available`.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from db import crud
from db.content_hash import hash_files
from db.queries import find_job
from model.images import scan_folder
from worker.pipeline import chunked
from worker.progress import print_summary, watch_job
from worker.status import REDIS_HINT, broker_available

# How a recorded job's chunks get run: (job_id, chunks, model_dir). By default they are sent to the workers.
Send = Callable[[str, Sequence[list], str], None]


class SubmitError(Exception):
    """A submission that cannot go ahead; the message says what to do."""


class BrokerUnavailableError(SubmitError):
    pass


def _settings():
    from settings import get_settings

    return get_settings()


def _redacted(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def _sessions(database_url: str):
    from db.session import session_factory

    return session_factory(database_url)


def _read_bundle(model_dir: str | os.PathLike) -> tuple[Any, dict]:
    """The bundle's config and card, read from its JSON files (no TensorFlow needed to submit)."""
    from model.bundle import BundleConfig, read_card

    try:
        config = BundleConfig.read(model_dir)
    except FileNotFoundError as exc:
        raise SubmitError(f"{exc}. Pass --model BUNDLE_DIR (a folder with config.json and model.keras) "
                          "or set MODEL_DIR.") from exc
    if not config.model_version:
        raise SubmitError(f"the bundle's config.json has no model_version: {model_dir}")
    return config, read_card(model_dir)


def submit_folder(
    folder: str | os.PathLike,
    *,
    recursive: bool = False,
    model_dir: str | os.PathLike | None = None,
    chunk_size: int | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    queue: str | None = None,
    check_broker: bool = True,
    send: Send | None = None,
) -> str:
    """Record a job for every image in `folder`, queue the work and return the job id.

    The database must be at the latest schema (`db.migrate.upgrade`). Raises `SubmitError` for a missing folder,
    a folder without images or a missing model bundle, and `BrokerUnavailableError` when Redis does not answer
    (before anything is written). `send` runs the chunks some other way than on the workers (the inline
    benchmark); give it with `check_broker=False`.
    """
    settings = _settings()
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise SubmitError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise SubmitError(f"not a folder: {folder}")
    scan = scan_folder(folder, recursive=recursive)
    if not scan.images:
        what = f"{len(scan.skipped)} other file(s), none with an image extension" if scan.skipped else "it is empty"
        hint = "" if recursive else "; add --recursive to include subfolders"
        raise SubmitError(f"no images to classify in {scan.folder}: {what}{hint}")
    model_dir = str(Path(model_dir or settings.model_dir).expanduser().resolve())
    config, card = _read_bundle(model_dir)
    redis_url = redis_url or settings.redis_url
    if check_broker and not broker_available(redis_url=redis_url):
        raise BrokerUnavailableError(f"cannot reach the Redis broker at {_redacted(redis_url)}.\n{REDIS_HINT}")

    paths = [str(p) for p in scan.images]
    hashes = hash_files(paths)
    job_id = uuid.uuid4().hex[:16]
    sessions = _sessions(database_url or settings.database_url)
    with sessions() as session, session.begin():
        crud.upsert_model(session=session, version=config.model_version, labels=config.labels,
                          input_size=config.input_size, source=model_dir, card=card)
        crud.create_job(session=session, job_id=job_id, folder=str(scan.folder), recursive=recursive,
                        model_dir=model_dir, model_version=config.model_version, total=len(paths),
                        skipped=len(scan.skipped))
        crud.record_files(session=session, job_id=job_id, items=zip(paths, hashes, strict=True))
        stored = crud.reusable_results(session=session, model_version=config.model_version, hashes=hashes)
        crud.insert_predictions(session=session, rows=[
            {"job_id": job_id, "path": p, "model_version": config.model_version, "content_hash": h,
             "reused": True, **stored[h]}
            for p, h in zip(paths, hashes, strict=True) if h in stored
        ])
        todo = [[p, h] for p, h in zip(paths, hashes, strict=True) if h not in stored]
        chunks = chunked(todo, chunk_size or settings.chunk_size)
        crud.refresh_job(session=session, job_id=job_id, chunks=len(chunks))
    # The job is committed before its tasks exist, so a fast worker never looks for a job it cannot see.
    if chunks and send is not None:
        send(job_id, chunks, model_dir)
    elif chunks:
        _send_chunks(job_id, chunks, model_dir, redis_url=redis_url, queue=queue)
    return job_id


def _send_chunks(job_id: str, chunks: Sequence[list], model_dir: str, *, redis_url: str, queue: str | None) -> None:
    from kombu.common import maybe_declare

    from worker.celery_app import app
    from worker.tasks import classify_chunk

    options: dict[str, Any] = {"queue": queue} if queue else {}
    with app.connection_for_write(redis_url) as conn:
        producer = app.amqp.Producer(conn)
        # Declare the queue so messages are routed even before any worker has bound it.
        maybe_declare(app.amqp.queues[queue or app.conf.task_default_queue], conn.default_channel)
        for chunk in chunks:
            classify_chunk.apply_async(args=(job_id, chunk, model_dir), producer=producer, **options)


def resume_job(job_id: str, *, chunk_size: int | None = None, database_url: str | None = None,
               redis_url: str | None = None, queue: str | None = None, check_broker: bool = True) -> dict[str, Any]:
    """Queue again the job's files that have no row; returns {'job_id', 'queued', 'chunks'}.

    Safe to repeat, and while lost chunks come back by themselves: a file's row is written once whatever
    runs it (see db.crud), so the worst a duplicate costs is computing it twice.
    """
    settings = _settings()
    redis_url = redis_url or settings.redis_url
    if check_broker and not broker_available(redis_url=redis_url):
        raise BrokerUnavailableError(f"cannot reach the Redis broker at {_redacted(redis_url)}.\n{REDIS_HINT}")
    sessions = _sessions(database_url or settings.database_url)
    with sessions() as session, session.begin():
        try:
            job = find_job(session, job_id)
        except LookupError as exc:
            raise SubmitError(str(exc)) from exc
        if crud.count_files(session=session, job_id=job.id) == 0:
            raise SubmitError(f"job {job.id} has no file list (submitted before resume existed, or "
                              "deleted): "
                              f"submit its folder again: python -m worker.submit {job.folder}")
        todo = crud.files_without_row(session=session, job_id=job.id)
        chunks = chunked(todo, chunk_size or settings.chunk_size)
        crud.refresh_job(session=session, job_id=job.id, chunks=job.chunks + len(chunks))
        job_id, model_dir = job.id, job.model_dir
    if chunks:
        _send_chunks(job_id, chunks, model_dir, redis_url=redis_url, queue=queue)
    return {"job_id": job_id, "queued": len(todo), "chunks": len(chunks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.submit", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="folder of images")
    parser.add_argument("--resume", metavar="JOB_ID", help="queue again the files of this job that have no row")
    parser.add_argument("--recursive", "-r", action="store_true", help="include subfolders")
    parser.add_argument("--model", help="model bundle folder (default: MODEL_DIR, the shipped model)")
    parser.add_argument("--wait", nargs="?", const=True, default=False, metavar="JOB_ID",
                        help="show progress until the job ends, then a summary; with a JOB_ID alone, watch that job "
                             "without queuing anything (exit 0 done, 1 failed)")
    parser.add_argument("--chunk-size", type=int, help="images per task (default: CHUNK_SIZE)")
    parser.add_argument("--stall-after", type=float, metavar="S",
                        help="with --wait: explain a job with no progress for S seconds (default: STALL_WARNING_S)")
    args = parser.parse_args(argv)
    attach = args.wait if isinstance(args.wait, str) else None
    if attach is not None and args.folder is None and args.resume is None and Path(attach).is_dir():
        args.folder, attach = attach, None  # `--wait DIR`: the folder came after the flag
    if attach is not None and (args.folder or args.resume):
        parser.error("--wait JOB_ID watches an existing job: give no folder and no --resume with it")
    if attach is None and (args.folder is None) == (args.resume is None):
        parser.error("give a folder to submit, --resume JOB_ID, or --wait JOB_ID")
    from db.migrate import upgrade
    from settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    try:
        if attach is not None:
            job_id = _existing_job(attach, database_url=settings.database_url)
        elif args.resume:
            resumed = resume_job(args.resume, chunk_size=args.chunk_size)
            job_id = resumed["job_id"]
            print(f"job {job_id}: queued {resumed['queued']} file(s) without a row in {resumed['chunks']} chunk(s)",
                  file=sys.stderr)
        else:
            job_id = submit_folder(args.folder, recursive=args.recursive, model_dir=args.model,
                                   chunk_size=args.chunk_size)
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(job_id)
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        progress = watch_job(job_id, database_url=settings.database_url, redis_url=settings.redis_url,
                             stall_s=args.stall_after or settings.stall_warning_s)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the job goes on. Check it with: python -m db.report {job_id}", file=sys.stderr)
        return 130
    print_summary(job_id, database_url=settings.database_url)
    if progress["status"] == "failed":
        print(f"job {job_id} failed: {progress['error']}", file=sys.stderr)
        return 1
    return 0


def _existing_job(job_id: str, *, database_url: str) -> str:
    """The full id of a recorded job (a unique prefix will do); SubmitError for an unknown one."""
    with _sessions(database_url)() as session:
        try:
            return find_job(session, job_id).id
        except LookupError as exc:
            raise SubmitError(f"{exc}; list the jobs with: python -m db.report --list") from exc


if __name__ == "__main__":
    sys.exit(main())
