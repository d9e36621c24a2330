"""Turning files (or arrays) into RGB uint8 arrays of the model's input size.

This is the only image-decoding code in the project: training, evaluation, the demo and the workers
all come through `load_image`, so what the model sees at serving time is exactly what it saw in training.
Normalisation is not done here: it is a layer inside the model (see `model.network`).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageInput = str | os.PathLike | bytes | np.ndarray | Image.Image

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)

# A truncated file must fail, not be padded with grey and classified as if it were whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """A file that cannot be used as an image; the message says why, in words a user can act on."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class Scan:
    folder: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files without an image extension


def scan_folder(folder: str | os.PathLike, *, recursive: bool = False) -> Scan:
    """Files under `folder` split by extension; hidden files and folders are ignored, the order is stable."""
    root = Path(folder).expanduser().resolve()
    scan = Scan(root)
    walker = root.rglob("*") if recursive else root.iterdir()
    for path in sorted(walker):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        (scan.images if is_image_file(path) else scan.skipped).append(path)
    return scan


def _open(source: ImageInput, max_pixels: int, size: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty file (0 bytes)")
        fp, name = io.BytesIO(source), "<bytes>"
    else:
        fp, name = _open_file(Path(source))
    try:
        img = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageError(f"not an image or unsupported format: {name}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels "
            f"(limit {max_pixels:,}; set MAX_IMAGE_PIXELS to raise it)"
        )
    if size is not None and img.format == "JPEG":
        # Let libjpeg decode big JPEGs at 1/2..1/8 scale (still >= 2x the target): a 12 MP photo costs a third of a full
        # decode, and the model input is within a grey level of the full decode resized (tests/model/test_images.py).
        # What is left is entropy decoding, which no scale skips: docs/batch.md#benchmark.
        img.draft("RGB", (2 * size, 2 * size))
    return img


def _open_file(path: Path) -> tuple[BinaryIO, str]:
    """The open file and its name, or the ImageError that says why it cannot be read."""
    if not path.exists():
        raise ImageError(f"file not found: {path}")
    if path.is_dir():
        raise ImageError(f"is a folder, not an image: {path}")
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)")
        return open(path, "rb"), path.name  # noqa: SIM115 - PIL takes ownership and closes it
    except PermissionError as exc:
        raise ImageError(f"cannot read file: permission denied ({path.name})") from exc
    except OSError as exc:  # I/O errors, stale NFS handles, names the OS refuses: a per-file error
        raise ImageError(f"cannot read file: {exc.strerror or exc} ({path.name})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (P, L, LA, RGBA, CMYK, I;16, F, ...) to RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: scale the actual range into 0..255 rather than clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite on white: transparent product cut-outs look like studio shots, not black blobs.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    source: ImageInput, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode one image to an RGB uint8 array, resized to `size` x `size` when given.

    Raises `ImageError` with a clear reason for empty, corrupt, truncated, non-image or oversized input.
    """
    return _model_input(_decoded(source, size, max_pixels), size)


def load_image_for_display(source: ImageInput, size: int, display_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
                           ) -> tuple[np.ndarray, np.ndarray]:
    """`load_image`'s array and a copy for display (aspect kept, longest side at most `display_side`), from one
    decode. The copy is made from the image as decoded for the model, so the model's input is exactly
    `load_image`'s; a big JPEG is decoded at reduced scale (>= 2x `size`), so the copy can be smaller than
    `display_side`."""
    img = _decoded(source, size, max_pixels)
    with _decode_errors():
        shown = img.copy()
        shown.thumbnail((display_side, display_side), Image.BILINEAR)
        return _model_input(img, size), np.asarray(shown, dtype=np.uint8)


def _decoded(source: ImageInput, size: int | None, max_pixels: int) -> Image.Image:
    """The whole image decoded to RGB (a big JPEG at the reduced scale that `size` allows)."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ImageError(f"array of shape {arr.shape} is not an image (expected HxWx3)")
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., :3] if arr.shape[-1] == 4 else arr, "RGB")
    else:
        img = _open(source, max_pixels, size)
    with _decode_errors():
        img = to_rgb(img)
        img.load()  # decoding errors surface here, inside _decode_errors
        return img


def _model_input(img: Image.Image, size: int | None) -> np.ndarray:
    with _decode_errors():
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def image_size(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels; the same errors as `load_image` for
    what cannot be opened (too large included)."""
    img = _open(source, max_pixels, None)
    with contextlib.closing(img):
        return img.size


def load_thumbnail(source: str | os.PathLike | bytes, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
                   ) -> np.ndarray:
    """Decode one image for display: RGB uint8, aspect kept, longest side at most `max_side`.

    Same checks and errors as `load_image`; a big JPEG is decoded at reduced scale, so showing a 12 MP
    phone photo costs what classifying it does, not a full-size decode.
    """
    img = _open(source, max_pixels, max_side)
    with _decode_errors():
        img = to_rgb(img)
        img.thumbnail((max_side, max_side), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


@contextlib.contextmanager
def _decode_errors() -> Iterator[None]:
    """Pillow's decoding failures as ImageError with a reason a person can act on."""
    try:
        yield
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            raise ImageError(f"truncated image file ({reason})") from exc
        raise ImageError(f"corrupt image file ({reason})") from exc


def load_images(
    sources: Iterable[ImageInput],
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    display_side: int | None = None,
) -> list[np.ndarray | tuple[np.ndarray, np.ndarray] | ImageError]:
    """Decode many images in parallel threads (Pillow releases the GIL while decoding).

    Returns one entry per input, in order: the array (with `display_side`, the pair of
    `load_image_for_display`), or the `ImageError` that explains the failure.
    """
    sources = list(sources)

    def one(src: ImageInput) -> np.ndarray | tuple[np.ndarray, np.ndarray] | ImageError:
        try:
            if display_side is not None:
                return load_image_for_display(src, size, display_side, max_pixels)
            return load_image(src, size, max_pixels)
        except ImageError as exc:
            return exc

    if len(sources) <= 1:
        return [one(s) for s in sources]
    return list(_decode_pool().map(one, sources))


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (owner pid, pool)
_POOL_LOCK = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    """One decoding pool per process, made on first use: a pool per call cost the demo a thread start and
    join for every batch of a few images. A forked child (a Celery prefork worker) inherits the pool object
    but not its threads, so a pool made by another pid is replaced."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2),
                                                     thread_name_prefix="decode"))
        return _POOL[1]
