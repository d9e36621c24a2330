"""A job's images as a folder-per-class training set: `export_rows` picks them, `write_dataset` writes them.

Writes DIR/<label>/<file> and DIR/manifest.csv (file, label, source, sha256, model_label, reviewed_label,
confidence, reviewer, model_version, job_id, unknown, unknown_score). The label is the reviewed one where there is
one, else the model's; images reviewed as "none of these" and error rows are left out. A minimum confidence drops
model labels below it but keeps reviewed images whatever the model's confidence (a person checked them);
`reviewed_only` keeps only images a person labelled. Files are hard links to the sources where the filesystem
allows, else copies. Files of the same name in one class get a short content hash before the extension.

Images the model flagged unknown (none of its classes) that nobody reviewed are left out by default: their label is
only the closest class, and training on it would teach the model that a milk carton is a banana. `unknown_dir`
puts them under DIR/unknown/ instead (all of them, whatever the minimum confidence; the manifest's model_label is
the closest class), to look through or to evaluate on. A reviewed image goes under its reviewed label, flagged or
not.

Each source is hashed again and left out, with a warning, when it is gone or its content changed since the job
classified it. DIR is built beside itself and renamed into place at the end, so a failed export leaves no half
dataset; an existing non-empty DIR is refused. Used by `python -m db.export` and the demo's Teach view.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from db.content_hash import hash_files
from db.models import Prediction, Review
from db.results import find_job
from db.reviews import job_labels, job_reviews

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["file", "label", "source", "sha256", "model_label", "reviewed_label", "confidence", "reviewer",
                    "model_version", "job_id", "unknown", "unknown_score"]
UNKNOWN_DIR = "unknown"  # the folder `--unknown-dir` puts the images flagged unknown in


class ExportError(Exception):
    """An export that cannot go ahead; nothing was written."""


def _keep(p: Prediction, review: dict | None, reviewed_only: bool, min_confidence: float | None,
          unknown_dir: bool) -> bool:
    if review is not None:
        return not review["none_of_these"]
    if reviewed_only:
        return False
    if p.unknown:
        return unknown_dir
    return min_confidence is None or (p.confidence or 0.0) >= min_confidence


def export_rows(session: Session, job_id: str, *, reviewed_only: bool = False, min_confidence: float | None = None,
                unknown_dir: bool = False) -> list[dict[str, Any]]:
    """The job's images as training examples (manifest columns but `file`), in path order; see the module doc."""
    job = find_job(session, job_id)
    if unknown_dir and UNKNOWN_DIR in job_labels(session, job):
        raise ExportError(f"the model has a class named {UNKNOWN_DIR!r}: --unknown-dir would mix the images it "
                          "flagged unknown into that class")
    reviews = job_reviews(session, job.id)
    stmt = (select(Prediction).where(Prediction.job_id == job.id, Prediction.error.is_(None))
            .order_by(Prediction.path))
    rows = []
    for p in session.scalars(stmt):
        review = reviews.get(p.path)
        if not _keep(p, review, reviewed_only, min_confidence, unknown_dir):
            continue
        rows.append({
            "label": review["reviewed_label"] if review else (UNKNOWN_DIR if p.unknown else p.label),
            "source": p.path,
            "sha256": p.content_hash,
            "model_label": p.label,
            "reviewed_label": review["reviewed_label"] if review else None,
            "confidence": p.confidence,
            "reviewer": review["reviewer"] if review else None,
            "model_version": p.model_version,
            "job_id": job.id,
            "unknown": p.unknown,
            "unknown_score": p.unknown_score,
        })
    return rows


def unreviewed_unknown(session: Session, job_id: str) -> int:
    """How many of the job's images the model flagged unknown and nobody reviewed (what --unknown-dir exports)."""
    job = find_job(session, job_id)
    reviewed = exists().where(Review.job_id == Prediction.job_id, Review.path == Prediction.path)
    return int(session.scalar(select(func.count()).where(
        Prediction.job_id == job.id, Prediction.unknown, Prediction.error.is_(None), ~reviewed)) or 0)


def _check_labels(labels: set[str]) -> None:
    # A class is a folder name to `python -m train`: hidden folders are ignored and a `train` folder switches
    # it to the train/ + val/ layout.
    bad = sorted(x for x in labels if not x or x.startswith(".") or "/" in x or "\\" in x or x == "train")
    if bad:
        raise ExportError(f"label(s) {bad} cannot be class folders for python -m train")


def file_names(rows: list[dict[str, Any]]) -> list[str]:
    """`label/name` for each row: the source's name, with `-<hash8>` added where names clash in a class.

    Clashes are found ignoring case (case-insensitive filesystems); identical files under one name get `-2`, ...
    """
    clashing = Counter((r["label"], Path(r["source"]).name.lower()) for r in rows)
    used: set[tuple[str, str]] = set()
    names = []
    for r in rows:
        src = Path(r["source"])
        stem = f"{src.stem}-{(r['sha256'] or '')[:8]}" if clashing[(r["label"], src.name.lower())] > 1 else src.stem
        name, n = f"{stem}{src.suffix}", 2
        while (r["label"], name.lower()) in used:
            name, n = f"{stem}-{n}{src.suffix}", n + 1
        used.add((r["label"], name.lower()))
        names.append(f"{r['label']}/{name}")
    return names


def _unchanged(rows: list[dict[str, Any]], warn: TextIO) -> list[dict[str, Any]]:
    kept = []
    for row, digest in zip(rows, hash_files([r["source"] for r in rows]), strict=True):
        if digest is None:
            print(f"warning: left out {row['source']}: it cannot be read any more", file=warn)
        elif row["sha256"] and digest != row["sha256"]:
            print(f"warning: left out {row['source']}: its content changed since the job", file=warn)
        else:
            kept.append({**row, "sha256": digest})
    return kept


def _place(source: str, dest: Path, link: bool) -> bool:
    """Hard link (True) or copy (False) `source` to `dest`."""
    if link:
        try:
            os.link(source, dest)
            return True
        except OSError:  # another filesystem, or one without hard links
            pass
    shutil.copy2(source, dest)
    return False


def _write(rows: list[dict[str, Any]], names: list[str], staging: Path, link: bool) -> int:
    linked = 0
    for row, name in zip(rows, names, strict=True):
        dest = staging / name
        dest.parent.mkdir(exist_ok=True)
        linked += _place(row["source"], dest, link)
    with open(staging / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "file": name} for row, name in zip(rows, names, strict=True))
    return linked


def write_dataset(rows: list[dict[str, Any]], out_dir: str | os.PathLike, *, link: bool = True,
                  warn: TextIO | None = None) -> dict[str, Any]:
    """Write `rows` (from `export_rows`) as out_dir/<label>/<file> + manifest; returns counts per class and mode."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder: choose another --out")
    _check_labels({r["label"] for r in rows})
    rows = _unchanged(rows, warn or sys.stderr)
    if not rows:
        raise ExportError("no image left to export")
    names = file_names(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        linked = _write(rows, names, staging, link)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    classes = Counter(r["label"] for r in rows)
    return {"out": str(out), "images": len(rows), "linked": linked, "copied": len(rows) - linked,
            "classes": dict(sorted(classes.items())), "manifest": str(out / MANIFEST)}
