"""A folder cache of ONNX conversions, framework-free: it stores bytes and knows nothing of what made them.

A conversion is `model-<model_version>-<size>px[-variant].onnx` with a JSON sidecar holding its sha256. It is
looked for in every given folder (a valid one anywhere, say shipped in a read-only image, is used as is), else
made under an exclusive `flock` in the first writable folder and written atomically (temp file + `os.replace`),
so a fleet of worker processes sharing a folder converts once. An entry of another model version, or whose hash
or load fails, is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from model.bundle import file_sha256

log = logging.getLogger(__name__)


def default_cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """The shared folder for conversions (a read-only bundle, or none): `configured`, else the user's cache."""
    if configured:
        return Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "densenet121-classifier" / "onnx"


def onnx_file_name(model_version: str, input_size: int, variant: str = "") -> str:
    # The input size is part of the key: the weights (and so model_version) of a DenseNet do not depend on it.
    return f"model-{model_version}-{int(input_size)}px{'-' + variant if variant else ''}.onnx"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def writable(folder: Path) -> bool:
    """Can files be created here? (os.access lies for root and on read-only mounts, so try it.)"""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def cache_problem(path: Path, model_version: str, input_size: int) -> str | None:
    """Why the cached file cannot be used as it is (None: the sidecar and the bytes agree)."""
    if not path.is_file():
        return "missing"
    try:
        meta = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return "no readable sidecar"
    if meta.get("model_version") != model_version or meta.get("input_size") != int(input_size):
        return f"stale (made for {meta.get('model_version')} at {meta.get('input_size')}px)"
    if meta.get("sha256") != file_sha256(path):
        return "corrupt (sha256 mismatch)"
    return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes; the kernel drops it if the holder dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, at worst two processes convert
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_cached(path: Path, data: bytes, model_version: str, input_size: int, **meta: Any) -> None:
    """Store a model file and then its sidecar (model version, input size, sha256), each atomically."""
    _atomic_write(path, data)
    meta = {"model_version": model_version, "input_size": int(input_size), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), **meta}
    _atomic_write(sidecar(path), (json.dumps(meta, indent=2) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; workers running as other users must read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_leftovers(folder: Path, name: str, model_version: str, own_folder: bool) -> None:
    """Temp files of a writer that died, and (in a model's own folder) conversions of older weights."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    if not own_folder:
        return  # the shared cache folder holds other bundles' conversions
    for old in folder.glob("model-*.onnx"):
        if not old.name.startswith(f"model-{model_version}-"):
            for stale in (old, sidecar(old)):
                with contextlib.suppress(OSError):
                    stale.unlink()


def _try_open(path: Path, model_version: str, input_size: int, open_file: Callable[[Path], Any]):
    """(what `open_file` made of a valid cached file, None), or (None, why not)."""
    problem = cache_problem(path, model_version, input_size)
    if problem:
        return None, problem
    try:
        return open_file(path), None
    except Exception as exc:  # noqa: BLE001 - any load failure means "rebuild it"
        return None, f"corrupt (cannot load it: {exc})"


def open_or_build(name: str, folders: Sequence[Path], model_version: str, input_size: int, *,
                  open_file: Callable[[Path], Any], build: Callable[[], tuple[bytes, Any, dict]],
                  own_folder: Path | None = None) -> Any:
    """`open_file(path)` of a valid cached `name` in any of `folders`; else `build()` -> (bytes, loaded, meta).

    The build runs under a lock in the first writable folder; its bytes are kept there with `meta` in the sidecar
    and its loaded form is returned. In `own_folder` (a bundle's), conversions of other weights are removed.
    """
    for folder in folders:
        loaded, _ = _try_open(folder / name, model_version, input_size, open_file)
        if loaded is not None:
            return loaded
    folder = next((f for f in folders if writable(f)), None)
    if folder is None:
        raise OSError(f"no writable folder for the ONNX conversion: {', '.join(map(str, folders)) or 'none given'}")
    path = folder / name
    with file_lock(folder / f".{name}.lock"):
        loaded, problem = _try_open(path, model_version, input_size, open_file)  # another process may have made it
        if loaded is not None:
            return loaded
        log.info("converting the model to ONNX (%s): %s", problem, path)
        _remove_leftovers(folder, name, model_version, own_folder=own_folder is not None and folder == own_folder)
        start = time.perf_counter()
        data, loaded, meta = build()
        seconds = round(time.perf_counter() - start, 1)
        write_cached(path, data, model_version, input_size, **meta, seconds=seconds)
        log.info("ONNX conversion written in %.1f s: %s", seconds, path)
        return loaded
