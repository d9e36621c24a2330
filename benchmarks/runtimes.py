"""Forward-pass speed of every installed inference runtime (model/runtimes.py) on one model, and the naive loop.

Used by `python -m benchmarks.batch`, which prints them beside the folder-to-database pipeline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def runtime_classifiers(clf, bundle: Path, threads: int = 0) -> dict[str, object]:
    """One classifier per installed runtime on the same Keras model (a conversion, when needed, happens here)."""
    from model.predict import Classifier
    from model.runtimes import available_runtimes

    out = {}
    for name in available_runtimes():
        start = time.perf_counter()
        out[name] = Classifier(clf.model, clf.config, card=clf.card, runtime=name, cache_dir=bundle,
                               threads=threads)
        print(f"  [{name}: ready in {time.perf_counter() - start:.1f} s]", flush=True)
    return out


def bench_forward(clf, paths: list[Path], batch_size: int) -> float:
    """Images/s of the bare forward pass on pre-decoded batches (the ceiling of any pipeline)."""
    batch, errors = clf.preprocess(paths)
    assert not any(errors), errors
    for _ in range(2):  # trace (TF) / size the memory arena (ORT) outside the measurement
        clf.forward(batch[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(batch), batch_size):
        clf.forward(batch[i:i + batch_size])
    return len(batch) / (time.perf_counter() - start)


def bench_naive(clf, paths: list[Path]) -> float:
    """Images/s of a per-image loop of decode + Keras `model.predict(x[None])`."""
    from model.images import load_image

    def one(p: Path) -> None:
        clf.model.predict(load_image(p, clf.input_size)[None].astype(np.float32), verbose=0)

    one(paths[0])
    start = time.perf_counter()
    for p in paths:
        one(p)
    return len(paths) / (time.perf_counter() - start)
