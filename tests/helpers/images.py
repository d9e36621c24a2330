"""Small images for tests: good ones, every kind of bad file, and a folder-per-class dataset of plain colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import ROOT

SHARED_FRUITS = ROOT.parent / "shared" / "datasets" / "fruits"
# The classes of `write_colour_dataset`: one noisy plain colour each, so that they are linearly separable.
COLOUR_CLASSES = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def random_rgb(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    noise = rng.integers(-40, 40, (size[1], size[0], 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_good_images(folder: Path, n: int, prefix: str = "img", seed: int = 0) -> list[Path]:
    """n small JPEG/PNG images with distinct content."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ext = ".jpg" if i % 2 == 0 else ".png"
        path = folder / f"{prefix}_{i:04d}{ext}"
        Image.fromarray(random_rgb(seed + i)).save(path)
        paths.append(path)
    return paths


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file per failure kind; the key says which error the loader must report."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_source.jpg"
    Image.fromarray(random_rgb(99, (64, 64))).save(good, quality=90)
    data = good.read_bytes()
    good.unlink()
    files = {
        "empty": folder / "empty.jpg",
        "not_an_image": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
        "corrupt": folder / "corrupt.png",
        "too_large": folder / "huge.png",
    }
    files["empty"].write_bytes(b"")
    files["not_an_image"].write_text("this is a text file, not a picture\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    png = folder / "_ok.png"
    Image.fromarray(random_rgb(98, (32, 32))).save(png)
    raw = bytearray(png.read_bytes())
    png.unlink()
    raw[60:120] = b"\x00" * 60  # damage the compressed pixel data after the header
    files["corrupt"].write_bytes(bytes(raw))
    # 9000 x 8000 = 72M pixels: over the 64M default limit, yet only a few KB on disk (a decompression bomb).
    Image.new("1", (9000, 8000)).save(files["too_large"])
    return files


def fruit_samples(per_class: int = 2, classes: tuple[str, ...] = ("apple", "banana", "cherry")) -> list[Path]:
    """A few real photos from ../shared/datasets/fruits when present (not committed to the repo)."""
    out = []
    for c in classes:
        folder = SHARED_FRUITS / "val" / c
        if folder.is_dir():
            out += sorted(folder.iterdir())[:per_class]
    return out


def write_colour_dataset(root: Path, n_train: int = 6, n_val: int = 3) -> Path:
    """root/{train,val}/<colour>/src<i % 2>__<colour>_<i>.jpg: noisy plain colours; the `src0__`/`src1__` prefixes
    are the per-source groups the training report breaks its accuracy down by."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, colour in COLOUR_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"src{i % 2}__{name}_{i}.jpg")
    return root


def write_unknown_images(folder: Path, n: int, prefix: str = "odd", seed: int = 0) -> list[Path]:
    """n hard black-and-white stripe patterns: nothing like `write_good_images`' noisy plain colours, so the
    `honest_bundle` of the root conftest flags them unknown."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        period = int(rng.integers(2, 5))
        y, x = np.mgrid[0:40, 0:48]
        stripes = (((x + y * int(rng.integers(0, 2))) // period) % 2 * 255).astype(np.uint8)
        path = folder / f"{prefix}_{i:04d}.png"
        Image.fromarray(np.stack([stripes] * 3, axis=-1)).save(path)
        paths.append(path)
    return paths
