"""What the Teach view teaches, as the folder-per-class set `train.teach` reads (DIR/<class>/<photo>): an upload of
photos and .zip files of class folders, or a batch job's reviewed images (webui/teach.py has the view).

An upload goes through the Upload tab's checks (`webui.upload.expand_upload`: zip bombs, sizes, pixels, hidden
entries), with budgets for DEMO_TEACH_MAX_FILES photos instead of DEMO_UPLOAD_MAX_FILES. A typed or folder class name
becomes a label as the labels are written ("Passion fruit" -> "passion_fruit").
"""

from __future__ import annotations

import io
import re
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath

from settings import Settings
from webui.upload import UploadLimits, UploadRefused, expand_upload

MAX_CLASS_NAME = 64


def teach_limits(s: Settings) -> UploadLimits:
    """The Upload tab's limits, for DEMO_TEACH_MAX_FILES photos: files, bytes, pixels and .zip entries scaled by
    the same factor; what one .zip may expand to, and how much, stay as they are (zip bombs)."""
    base = UploadLimits.from_settings(s)
    scale = max(1.0, s.demo_teach_max_files / max(1, base.files))
    return UploadLimits(files=max(base.files, s.demo_teach_max_files), bytes=int(base.bytes * scale),
                        pixels=int(base.pixels * scale), zip_entries=int(base.zip_entries * scale),
                        zip_bytes=base.zip_bytes, zip_ratio=base.zip_ratio)


def class_name(text: str | None) -> str:
    """A typed or folder class name as a label: "Passion fruit" -> "passion_fruit" (the labels' own form);
    ValueError when it cannot be a class folder."""
    name = re.sub(r"[\s-]+", "_", (text or "").strip().lower())
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("train", "val", "unknown"):
        raise ValueError(f"{text!r} cannot be a class name")
    if len(name) > MAX_CLASS_NAME:
        raise ValueError(f"a class name has at most {MAX_CLASS_NAME} characters: {text!r}")
    return name


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", PurePosixPath(name).name)[-100:] or "photo"


def upload_dataset(paths: list[str], typed_class: str | None, limits: UploadLimits, out: Path
                   ) -> tuple[Counter, list[str]]:
    """Write an upload as out/<class>/<file>: (photos per class, [why each left-out file was left out]).
    UploadRefused when the upload is over a limit or names no class."""
    items = expand_upload(paths, limits)
    typed = None
    if (typed_class or "").strip():
        try:
            typed = class_name(typed_class)
        except ValueError as exc:
            raise UploadRefused(f"{exc}.") from None
    counts: Counter = Counter()
    skipped: list[str] = []
    for i, item in enumerate(items):
        parts = PurePosixPath(item.name).parts
        folder = parts[-2] if isinstance(item.source, bytes) and len(parts) > 2 else None
        if item.error:
            skipped.append(f"{item.name}: {item.error}")
            continue
        try:
            label = class_name(folder) if folder else typed
        except ValueError as exc:
            skipped.append(f"{item.name}: {exc}")
            continue
        if label is None:
            skipped.append(f"{item.name}: no class (type a class name, or put it in a class folder in the .zip)")
            continue
        dest = out / label / f"{i:04d}-{_safe_file_name(item.name)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(item.source, bytes):
            dest.write_bytes(item.source)
        else:
            shutil.copyfile(item.source, dest)
        counts[label] += 1
    if not counts:
        why = "; ".join(skipped[:3]) or "nothing in the upload"
        raise UploadRefused(f"No photo to teach ({why}). Type the class name of the photos, or upload a .zip "
                            "of class folders.")
    return counts, skipped


def review_dataset(database_url: str, job_id: str, out: Path) -> list[str]:
    """A job's reviewed images as out/<reviewed label>/<file> (db.datasets, reviewed only): [why each left-out
    image was left out]. LookupError for an unknown job, ValueError when it has no reviewed image to teach."""
    from db.datasets import ExportError, export_rows, write_dataset
    from db.migrate import upgraded_sessions

    job_id = (job_id or "").strip()
    if not job_id:
        raise ValueError("Enter the id of a batch job whose images you reviewed.")
    with upgraded_sessions(database_url)() as session:
        rows = export_rows(session, job_id, reviewed_only=True)
    if not rows:
        raise ValueError(f"job {job_id} has no reviewed image to teach (review it in Batch > Review first)")
    warnings = io.StringIO()
    try:
        write_dataset(rows, out, warn=warnings)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    return [line.removeprefix("warning: left out ") for line in warnings.getvalue().splitlines()]
