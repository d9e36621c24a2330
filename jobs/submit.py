"""Submitting a folder, and resuming a job: `submit_folder(folder, ...) -> job_id`, `resume_job(job_id, ...)`.

Submitting lists the folder (a local path, or an fsspec URL such as `s3://bucket/prefix`: `jobs.storage`), records a
job and its files, reuses stored results of files whose content (sha256) was already classified by the same model
version (for an object in a store: of the same object unchanged since, by its URL, size and ETag; nothing is
downloaded to submit), and has the broker queue the rest in chunks. Resuming queues
again the files of a job that have no row (the fleet does it by itself for a stalled job: `jobs.heal`). Both take
plain values: the entry points (`python -m worker.submit`, the demo's Batch tab) read them from the settings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import crud
from db.content_hash import hash_files
from db.models import Job
from db.results import find_job
from db.session import session_factory
from jobs.broker import Broker
from jobs.storage import StorageError, is_url, list_images, local_bundle
from model.bundle import BundleConfig, read_card


class SubmitError(Exception):
    """A submission that cannot go ahead; the message says what to do."""


class BrokerUnavailableError(SubmitError):
    pass


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    """`items` in lists of `size` (at least 1), in order: the chunks one task each runs."""
    size = max(1, int(size))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _read_bundle(model_dir: str) -> tuple[BundleConfig, dict]:
    """The bundle's config and card, read from its JSON files (no TensorFlow needed to submit); a bundle URL is
    fetched into this machine's cache first (`jobs.storage.local_bundle`)."""
    try:
        model_dir = local_bundle(model_dir)
    except StorageError as exc:
        raise SubmitError(str(exc)) from exc
    try:
        config = BundleConfig.read(model_dir)
    except FileNotFoundError as exc:
        raise SubmitError(f"{exc}. Pass --model BUNDLE_DIR (a folder with config.json and model.keras) "
                          "or set MODEL_DIR.") from exc
    if not config.model_version:
        raise SubmitError(f"the bundle's config.json has no model_version: {model_dir}")
    return config, read_card(model_dir)


def _check(broker: Broker) -> None:
    if not broker.available():
        raise BrokerUnavailableError(broker.unreachable())


def submit_folder(folder: str | os.PathLike, *, broker: Broker, database_url: str, model_dir: str | os.PathLike,
                  chunk_size: int, recursive: bool = False, queue: str | None = None,
                  check_broker: bool = True) -> str:
    """Record a job for every image in `folder` (a path or a store URL), queue the work and return the job id.

    The database must be at the latest schema (`db.migrate.upgrade`). Raises `SubmitError` for a missing folder,
    a folder without images or a missing model bundle, and `BrokerUnavailableError` when the broker does not
    answer (before anything is written). `check_broker=False` skips that check: a broker that runs the chunks in
    this process (the inline benchmark) has nothing to reach.
    """
    try:
        scan = list_images(folder, recursive=recursive)
    except StorageError as exc:
        raise SubmitError(str(exc)) from exc
    if not scan.images:
        what = f"{len(scan.skipped)} other file(s), none with an image extension" if scan.skipped else "it is empty"
        hint = "" if recursive else "; add --recursive to include subfolders"
        raise SubmitError(f"no images to classify in {scan.folder}: {what}{hint}")
    # A bundle URL is recorded as it is: each worker host fetches it into its own cache.
    model_dir = str(model_dir) if is_url(model_dir) else str(Path(model_dir).expanduser().resolve())
    config, card = _read_bundle(model_dir)
    if check_broker:
        _check(broker)

    paths, keys = scan.images, scan.keys
    # Objects in a store are not read here (their hash would mean downloading them all): their key is the store's.
    hashes = [None] * len(paths) if is_url(scan.folder) else hash_files(paths)
    job_id = uuid.uuid4().hex[:16]
    with session_factory(database_url)() as session, session.begin():
        crud.upsert_model(session=session, version=config.model_version, labels=config.labels,
                          input_size=config.input_size, source=model_dir, card=card)
        crud.create_job(session=session, job_id=job_id, folder=str(scan.folder), recursive=recursive,
                        model_dir=model_dir, model_version=config.model_version, total=len(paths),
                        skipped=len(scan.skipped))
        crud.record_files(session=session, job_id=job_id, items=zip(paths, hashes, keys, strict=True))
        by_hash = crud.reusable_results(session=session, model_version=config.model_version, hashes=hashes)
        by_key = crud.reusable_by_source(session=session, model_version=config.model_version, keys=keys)
        stored = [by_hash.get(h) if h else by_key.get(k) for h, k in zip(hashes, keys, strict=True)]
        crud.insert_predictions(session=session, rows=[
            {"job_id": job_id, "path": p, "model_version": config.model_version, "content_hash": h,
             "reused": True, **s}
            for p, h, s in zip(paths, hashes, stored, strict=True) if s is not None
        ])
        todo = [[p, h] for p, h, s in zip(paths, hashes, stored, strict=True) if s is None]
        chunks = chunked(todo, chunk_size)
        crud.refresh_job(session=session, job_id=job_id, chunks=len(chunks))
    # The job is committed before its tasks exist, so a fast worker never looks for a job it cannot see.
    if chunks:
        broker.send_chunks(job_id, chunks, model_dir, queue=queue)
    return job_id


def resume_job(job_id: str, *, broker: Broker, database_url: str, chunk_size: int, queue: str | None = None,
               check_broker: bool = True) -> dict[str, Any]:
    """Queue again the job's files that have no row; returns {'job_id', 'queued', 'chunks'}.

    Safe to repeat, and while lost chunks come back by themselves: a file's row is written once whatever
    runs it (see db.crud), so the worst a duplicate costs is computing it twice.
    """
    if check_broker:
        _check(broker)
    with session_factory(database_url)() as session, session.begin():
        job = existing_job(session, job_id)
        if crud.count_files(session=session, job_id=job.id) == 0:
            raise SubmitError(f"job {job.id} has no file list (submitted before resume existed, or deleted): "
                              f"submit its folder again: python -m worker.submit {job.folder}")
        todo = crud.files_without_row(session=session, job_id=job.id)
        chunks = chunked(todo, chunk_size)
        crud.refresh_job(session=session, job_id=job.id, chunks=job.chunks + len(chunks))
        job_id, model_dir = job.id, job.model_dir
    if chunks:
        broker.send_chunks(job_id, chunks, model_dir, queue=queue)
    return {"job_id": job_id, "queued": len(todo), "chunks": len(chunks)}


def existing_job(session: Session, job_id: str) -> Job:
    """The recorded job with this id (a unique prefix will do); SubmitError, saying how to list them, otherwise."""
    try:
        return find_job(session, job_id)
    except LookupError as exc:
        raise SubmitError(f"{exc}; list the jobs with: python -m db.report --list") from exc
