"""Photo sizes for `benchmarks.batch`: phone-size JPEGs, and the pipeline timed between two forward passes.

People's folders hold 3-12 MP phone photos. Even at the reduced scale `model.images` decodes a big JPEG at, its
entropy decoding costs several forward passes' worth of CPU at the shipped 128 px, so `make bench-batch` measures
the pipeline on 320x240 JPEGs and on 4000x3000 ones, and prints what decoding alone allows beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PHONE_SIZE = (4000, 3000)


def write_photos(folder: Path, n: int, size: tuple[int, int] = PHONE_SIZE, quality: int = 90,
                 seed: int = 20_000) -> list[Path]:
    """Distinct phone-size JPEGs: a colour wave plus per-pixel noise (sigma 12), about 4 MB each at 12 MP and quality
    90, as a phone's. One noise field, shifted per photo, makes hundreds in a minute (0.3 s each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    noise = rng.normal(0, 12, (height, width, 3)).astype(np.int16)
    x = np.arange(width)[:, None]
    paths = []
    for i in range(n):
        wave = rng.uniform(0, 255, 3) + 60 * np.sin(x / rng.uniform(100, 600) + rng.uniform(0, 6, 3))
        shift = (int(rng.integers(height)), int(rng.integers(width)))
        pixels = np.clip(np.roll(noise, shift, axis=(0, 1)) + wave.astype(np.int16), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
        paths.append(path)
    return paths


@dataclass
class SizeRun:
    """One photo size: images/s of decoding alone (every core), the forward pass and the pipeline."""

    name: str
    images: int
    mean_bytes: float
    decode: float
    forward: float
    pipeline: float

    @property
    def ratio(self) -> float:
        return self.pipeline / self.forward

    @property
    def ceiling(self) -> float:
        """pipeline/forward if decoding and the network, each at full speed on every core, merely took turns:
        where CPU time alone puts the pipeline once decoding is not free."""
        return self.decode / (self.decode + self.forward)

    def line(self, runtime: str) -> str:
        return (f"  {self.name}: {self.images} JPEGs, {self.mean_bytes / 1e6:.2f} MB each: decode {self.decode:.1f}, "
                f"forward {self.forward:.1f} img/s\n  pipeline ({runtime}) {self.pipeline:8.1f} img/s on {self.name}: "
                f"pipeline/forward {self.ratio:.2f}x (decode+forward taking turns: {self.ceiling:.2f}x)")


def forward_rate(clf, batch: np.ndarray, batch_size: int) -> float:
    """Images/s of the bare forward pass over a decoded batch (warmed up by the caller)."""
    start = time.perf_counter()
    for i in range(0, len(batch), batch_size):
        clf.forward(batch[i:i + batch_size])
    return len(batch) / (time.perf_counter() - start)


def measure_size(name: str, clf, paths: list[Path], run_pipeline: Callable[[], float], batch_size: int) -> SizeRun:
    """Decode the photos (timed), then the pipeline between two forward passes over them: the pipeline is compared
    with the mean of the two, so a neighbour's load on the cores moves both sides of the ratio."""
    start = time.perf_counter()
    batch, errors = clf.preprocess(paths)
    decode = len(paths) / (time.perf_counter() - start)
    assert not any(errors), errors
    clf.forward(batch[:batch_size])
    before = forward_rate(clf, batch, batch_size)
    pipeline = run_pipeline()
    after = forward_rate(clf, batch, batch_size)
    mean_bytes = sum(p.stat().st_size for p in paths) / len(paths)
    return SizeRun(name, len(paths), mean_bytes, decode, (before + after) / 2, pipeline)
