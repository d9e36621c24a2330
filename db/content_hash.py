"""Content hashes of image files (sha256): the key under which results are reused (`db.crud.reusable_results`) and
by which an export checks that a file did not change since its job (`db.export`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from model.bundle import file_sha256

HASH_THREADS = 8  # reading files is I/O-bound: more threads than cores


def sha256_file(path: str | os.PathLike) -> str | None:
    """Content hash, or None for a file that cannot be read (it still gets a row: the worker reports why)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def hash_files(paths: Sequence[str | os.PathLike]) -> list[str | None]:
    """sha256 of each file, in parallel threads (hashlib releases the GIL on large updates)."""
    if len(paths) <= 1:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return list(pool.map(sha256_file, paths))
