"""The batch path's logic as plain functions, testable without a broker: classify, store (chunks are made by
`jobs.submit.chunked`, files hashed by `db.content_hash`).

Tasks in `worker.tasks` only unpack arguments and call these. Decoding and resizing are the core's
(`Classifier.preprocess`); nothing here touches pixels. What is here is the order of the work: a `ChunkReader`
thread decodes the next batches while the network runs on this one, across chunk boundaries when the caller has
several chunks (`process_chunks`), so the next chunk's first batch is decoded while this chunk is stored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from db import crud
from jobs.failure import worker_name
from jobs.storage import read_sources
from model.predict import BATCH_SIZE, TOP_K

log = logging.getLogger(__name__)

Item = Sequence[str | None]  # (absolute path or URL, sha256 hex or None), as it travels in a task message (JSON)

# Decoded batches the reader may hold ahead of the network. 2: the next batch is always ready when the network
# finishes one, and at most 2 x 32 x 128 x 128 x 3 float32 (12 MB at the shipped size) waits in memory.
AHEAD = 2
_END = object()  # the reader's mark after the last batch of a chunk


class ChunkReader:
    """Decodes the batches of `chunks`, in order, in one thread, at most `ahead` batches ahead of its reader.

    `next_chunk()` yields the next chunk's batches as `Classifier.preprocess` gives them ((batch, errors)), or
    the exception that preprocessing raised. Use it as a context manager: leaving stops the thread.

    Why this shape, measured with `make bench-batch`'s workers on 2 cores at the shipped 128 px (docs/batch.md,
    "Benchmark"): the reader hands each batch to the core's decoding pool (`model.images.load_images`, 4 threads),
    and the network keeps ONNX Runtime's 2 intra-op threads. Decoding one image at a time in the reader instead
    gave 0.28x of the forward pass on phone photos against 0.40x; 1 intra-op thread (the other core left to
    decoding) gave 0.57x on small photos against 0.91x. Decoding is CPU work that shares the same 2 cores, so
    overlap only fills the network's idle moments: the pipeline cannot beat decoding and the network taking turns.
    """

    def __init__(self, classifier, chunks: Sequence[Sequence[Item]], batch_size: int = BATCH_SIZE,
                 ahead: int = AHEAD):
        self._classifier, self._chunks, self._size = classifier, chunks, max(1, int(batch_size))
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chunk-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in self._chunks:
            paths = [str(item[0]) for item in chunk]
            for start in range(0, len(paths), self._size):
                try:
                    decoded = fetch_and_decode(self._classifier.preprocess, paths[start:start + self._size])
                except Exception as exc:  # noqa: BLE001 - handed to the consumer, who redoes the chunk
                    decoded = exc
                if not self._put(decoded):
                    return
            if not self._put(_END):
                return

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next_chunk(self) -> Iterator[Any]:
        """The next chunk's decoded batches; read it to the end before asking for the chunk after it."""
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                raise RuntimeError("the decoding thread ended before its chunks did") from None
            if item is _END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_and_decode(decode: Callable[[list], Any], paths: list[str]):
    """`decode` (Classifier.preprocess) of a batch whose store URLs are read here first (`jobs.storage`): an object
    that cannot be read (gone, empty, access denied, too large) gets its reason as its error, in its place."""
    sources = read_sources(paths)
    failed = {i: str(s) for i, s in enumerate(sources) if isinstance(s, Exception)}
    if not failed:
        return decode(sources)
    batch, errors = decode([s for s in sources if not isinstance(s, Exception)])
    rest = iter(errors)
    return batch, [failed[i] if i in failed else next(rest) for i in range(len(sources))]


def _row(path: str, content_hash: str | None, prediction) -> dict[str, Any]:
    # An error row has no verdict to carry: not unknown, no score.
    ok = prediction.error is None
    score = prediction.unknown_score if ok else None
    return {
        "path": path,
        "content_hash": content_hash,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "top_k": [[label, float(conf)] for label, conf in prediction.top_k] if prediction.top_k else None,
        "error": prediction.error,
        "unknown": bool(prediction.unknown) and ok,
        "unknown_score": None if score is None else float(score),
    }


def classify_items(classifier, items: Sequence[Item], *, top_k: int = TOP_K,
                   batch_size: int = BATCH_SIZE) -> list[dict]:
    """One result row (without job fields) per item, in order; a bad image gives a row with its error.

    The core turns every decoding failure into a per-image error. Anything else it raises (an I/O error
    Pillow does not wrap, say) would fail the whole chunk, so the chunk is then redone one image at a time
    to pin the failure on the file that caused it.
    """
    with ChunkReader(classifier, [items], batch_size) as reader:
        return _classified(classifier, items, reader.next_chunk(), top_k)


def _classified(classifier, items: Sequence[Item], batches: Iterator[Any], top_k: int) -> list[dict]:
    """The rows of one chunk from its decoded batches (all consumed, so the reader moves on to the next chunk)."""
    predictions: list = []
    failed = False
    for decoded in batches:
        if failed:
            continue
        try:
            if isinstance(decoded, Exception):
                raise decoded
            batch, errors = decoded
            predictions += classifier.assemble(errors, classifier.postprocess(classifier.forward_outputs(batch),
                                                                              top_k))
        except Exception:  # noqa: BLE001 - isolate the culprit below
            log.warning("chunk failed as a whole; retrying image by image", exc_info=True)
            failed = True
    paths = [str(p) for p, _ in items]
    if failed:
        predictions = [_predict_one(classifier, p, top_k) for p in paths]
    return [_row(p, h, pred) for p, (_, h), pred in zip(paths, items, predictions, strict=True)]


def _predict_one(classifier, path: str, top_k: int):
    from model.predict import Prediction

    try:
        source = read_sources([path])[0]
        if isinstance(source, Exception):
            return Prediction(error=str(source), model_version=classifier.model_version)
        return classifier.predict([source], top_k=top_k)[0]
    except Exception as exc:  # noqa: BLE001 - one file's failure becomes that file's error row
        return Prediction(error=f"unreadable: {type(exc).__name__}: {exc}", model_version=classifier.model_version)


def store_rows(*, session: Session, job_id: str, model_version: str, rows: Sequence[dict[str, Any]],
               worker: str | None = None) -> None:
    """Insert a chunk's rows (idempotent) and recount the job, in the caller's transaction."""
    crud.insert_predictions(
        session=session,
        rows=[{**r, "job_id": job_id, "model_version": model_version, "worker": worker} for r in rows],
    )
    crud.refresh_job(session=session, job_id=job_id)


def _store(sessions: Callable[[], Session], classifier, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
    with sessions() as session, session.begin():
        store_rows(session=session, job_id=job_id, model_version=classifier.model_version, rows=rows,
                   worker=worker_name())


def process_chunk(*, sessions: Callable[[], Session], classifier, job_id: str, items: Sequence[Item],
                  top_k: int = TOP_K, batch_size: int = BATCH_SIZE) -> int:
    """Classify a chunk and store it with one commit; returns the number of rows written or kept."""
    with sessions() as session, session.begin():
        crud.mark_started(session=session, job_id=job_id)
    rows = classify_items(classifier, items, top_k=top_k, batch_size=batch_size)
    _store(sessions, classifier, job_id, rows)
    return len(rows)


def process_chunks(*, sessions: Callable[[], Session], classifier, job_id: str, chunks: Sequence[Sequence[Item]],
                   top_k: int = TOP_K, batch_size: int = BATCH_SIZE,
                   after_chunk: Callable[[int], None] | None = None) -> int:
    """`process_chunk` for each chunk in turn (one commit each), the next chunk decoded while this one runs the
    network and is stored; `after_chunk(rows so far)` after each commit. Returns the number of rows."""
    done = 0
    with ChunkReader(classifier, chunks, batch_size) as reader:
        with sessions() as session, session.begin():
            crud.mark_started(session=session, job_id=job_id)
        for items in chunks:
            rows = _classified(classifier, items, reader.next_chunk(), top_k)
            _store(sessions, classifier, job_id, rows)
            done += len(rows)
            if after_chunk is not None:
                after_chunk(done)
    return done
