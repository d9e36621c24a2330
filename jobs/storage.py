"""Where a job's images live: a local folder, or any fsspec URL (`s3://bucket/prefix`, `gs://`, `az://`, ...).

- `list_images(location, recursive=)`: the one lister the job service uses. A plain path goes to
  `model.images.scan_folder`, as always; a URL is listed by the store (names, sizes and checksums, nothing
  downloaded), with the same rules: image extensions only, hidden names skipped, a stable order.
- `read_sources(paths)`: what a worker decodes. Local paths are passed on as they are; a URL's bytes are read by the
  worker itself (no shared filesystem), or replaced by the `ImageError` that says why not (empty, gone, access
  denied, too large), so a bad object gets one error row like a bad file does.
- `local_bundle(location)`: a model bundle at a URL, fetched once into a local cache keyed by its model_version.

Credentials and endpoints come from each store's standard variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`, ... read by botocore; `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_*`), never from a job row:
a job records only the URL.

Reuse by content for object storage uses the store's own checksum (`source_key`): sha256 of the URL, the size and
the ETag (or md5Hash/crc32c) the listing gave. Any change to an object changes its ETag, so an unchanged object maps
to the row computed for it before, without downloading it again. See docs/batch.md, "Folders in object storage".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.images import ImageError, is_image_file, scan_folder

# Bytes a worker reads of one object at most; a bigger one gets the error row "too large" (64 MP of uncompressed
# RGB TIFF is 192 MB). The worker reads the environment: the limit is a property of the worker's memory.
DEFAULT_MAX_OBJECT_BYTES = 256_000_000
# Checksums of a listing entry by store, the first one present is used: s3fs ETag, gcsfs md5Hash/crc32c/etag,
# adlfs etag/content_md5. A store that gives none (a plain HTTP server) gets no source key: always computed.
CHECKSUM_FIELDS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5")


class StorageError(ValueError):
    """A location that cannot be listed or read; one line for the user (the CLI exits 2 with it)."""


@dataclass
class Listing:
    folder: str  # the folder or URL as the job records it
    images: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names without an image extension
    keys: list[str | None] = field(default_factory=list)  # one per image: the store's source key, None for files


def is_url(location: str | os.PathLike) -> bool:
    """True for `scheme://...` other than `file://`: the store, not this machine's filesystem, holds it."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() != "file" and len(scheme) > 1


def _local(location: str | os.PathLike) -> Path:
    text = str(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def _fs(url: str, **options: Any):
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:  # no such protocol, or its package (s3fs, gcsfs, adlfs) not installed
        raise StorageError(f"cannot open {url}: {exc}") from exc


def source_key(url: str, info: dict[str, Any]) -> str | None:
    """sha256 of (URL, size, checksum) of a listing entry; None when the store gives no checksum."""
    checksum = next((str(info[f]) for f in CHECKSUM_FIELDS if info.get(f)), None)
    if checksum is None:
        return None
    return hashlib.sha256(f"{url}\n{info.get('size')}\n{checksum}".encode()).hexdigest()


def listing_error(url: str, exc: BaseException) -> StorageError:
    """The one line that says why `url` cannot be listed: no bucket, no credentials, access denied, no endpoint."""
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        what = f"not found (no such bucket or container?): {exc}"
    elif isinstance(exc, PermissionError):
        what = f"access denied: {exc}"
    elif "Credential" in name:
        what = (f"no credentials ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the store's own "
                "variables)")
    elif "Endpoint" in name or "Connect" in name:
        what = f"store not reachable ({exc}); check AWS_ENDPOINT_URL"
    else:
        what = f"{name}: {exc}"
    return StorageError(f"cannot list {url}: {what}")


def list_images(location: str | os.PathLike, *, recursive: bool = False) -> Listing:
    """The images under a folder or URL (see the module docstring); StorageError when it cannot be listed."""
    if not is_url(location):
        folder = _local(location)
        if not folder.exists():
            raise StorageError(f"folder not found: {folder}")
        if not folder.is_dir():
            raise StorageError(f"not a folder: {folder}")
        scan = scan_folder(folder, recursive=recursive)
        return Listing(str(scan.folder), [str(p) for p in scan.images], [str(p) for p in scan.skipped],
                       [None] * len(scan.images))
    url = str(location).rstrip("/")
    # No listings cache: a submitter lists once, and the cache would keep a second copy of every entry.
    fs, root = _fs(url, use_listings_cache=False)
    root = root.rstrip("/")
    try:
        entries = fs.find(root, maxdepth=None if recursive else 1, withdirs=False, detail=True)
        bucket = root.split("/", 1)[0]
        if not entries and bucket:
            # A one-level listing of a missing bucket is just empty (s3fs): ask the bucket, which says "no such".
            fs.ls(bucket)
    except Exception as exc:  # noqa: BLE001 - every store raises its own types: one line whatever it was
        raise listing_error(url, exc) from exc
    listing = Listing(fs.unstrip_protocol(root))
    for name in sorted(entries):
        info = entries[name]
        rel = name[len(root):].strip("/").split("/") if name.startswith(root) else [name]
        if info.get("type", "file") != "file" or any(part.startswith(".") for part in rel):
            continue
        full = fs.unstrip_protocol(name)
        if is_image_file(name):
            listing.images.append(full)
            listing.keys.append(source_key(full, info))
        else:
            listing.skipped.append(full)
    return listing


def max_object_bytes() -> int:
    return int(os.environ.get("MAX_OBJECT_BYTES") or DEFAULT_MAX_OBJECT_BYTES)


def read_error(url: str, exc: BaseException, limit: int) -> ImageError:
    """An object read that failed, as the per-image error its row carries."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return ImageError(f"object gone: deleted or renamed between listing and reading ({url})")
    if isinstance(exc, PermissionError):
        return ImageError(f"access denied reading {url}: {text}")
    if isinstance(exc, OSError) and "range is not satisfiable" in text.lower():
        return ImageError("empty object (0 bytes)")  # S3 answers 416 to a ranged read of an empty object
    return ImageError(f"cannot read object {url}: {type(exc).__name__}: {text}")


def read_sources(paths: Sequence[str], max_bytes: int | None = None) -> list[str | bytes | ImageError]:
    """Each path as `model.images` decodes it: a local path unchanged, a URL's bytes, or why they are not there.

    The URLs of one store are read concurrently (s3fs, gcsfs and adlfs are async), each with a ranged read of at
    most `max_bytes` + 1 bytes, so an oversized object costs no more than the limit to refuse.
    """
    limit = max_object_bytes() if max_bytes is None else int(max_bytes)
    out: list[str | bytes | ImageError] = [str(p) for p in paths]
    urls = [i for i, p in enumerate(out) if is_url(p)]
    if not urls:
        return out
    by_protocol: dict[str, list[int]] = {}
    for i in urls:
        by_protocol.setdefault(str(out[i]).split("://", 1)[0], []).append(i)
    for indices in by_protocol.values():
        try:
            fs, _ = _fs(str(out[indices[0]]))
            stripped = [fs._strip_protocol(str(out[i])) for i in indices]
            data = fs.cat_ranges(stripped, [0] * len(indices), [limit + 1] * len(indices), on_error="return")
        except Exception as exc:  # noqa: BLE001 - no store at all: every image of it gets the reason
            data = [exc] * len(indices)
        for i, got in zip(indices, data, strict=True):
            url = str(out[i])
            if isinstance(got, BaseException):
                out[i] = read_error(url, got, limit)
            elif not got:
                out[i] = ImageError("empty object (0 bytes)")
            elif len(got) > limit:
                out[i] = ImageError(f"object too large: over {limit:,} bytes (set MAX_OBJECT_BYTES to raise it)")
            else:
                out[i] = bytes(got)
    return out


def bundle_cache_dir() -> Path:
    """Where bundles fetched from URLs are kept: env BUNDLE_CACHE_DIR, else the user's cache folder."""
    configured = os.environ.get("BUNDLE_CACHE_DIR")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "densenet121-classifier" / "bundles"
    return Path(configured).expanduser() if configured else base


def local_bundle(location: str | os.PathLike) -> str:
    """A bundle folder on this machine: a local path as it is, a URL fetched once into the cache.

    The cache is keyed by the bundle's model_version (read from its config.json first), so every job and every
    worker process of this host shares one copy, and a new version is a new folder. The copy is made in a
    temporary folder and renamed into place, so concurrent processes never load a half-written bundle.
    """
    if not is_url(location):
        return str(location)
    import json

    url = str(location).rstrip("/")
    fs, root = _fs(url)
    try:
        config = json.loads(fs.cat_file(f"{root}/config.json"))
    except Exception as exc:  # noqa: BLE001 - one line whatever the store raised
        raise StorageError(f"cannot read the bundle's config.json at {url}: {type(exc).__name__}: {exc}") from exc
    version = str(config.get("model_version") or "")
    if not version or "/" in version or version.startswith("."):
        raise StorageError(f"the bundle at {url} has no usable model_version in its config.json")
    target = bundle_cache_dir() / version
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        fs.get(f"{root}/", f"{staging}/", recursive=True)
        try:
            staging.rename(target)
        except OSError:  # another process renamed its copy first: use that one
            if not (target / "config.json").exists():
                raise
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot fetch the bundle at {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
