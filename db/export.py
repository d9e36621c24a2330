"""Export a job's images as a folder-per-class training set.

    python -m db.export JOB_ID --out DIR [--reviewed-only] [--min-confidence X] [--copy]

Writes DIR/<label>/<file> and DIR/manifest.csv (file, label, source, sha256, model_label, reviewed_label,
confidence, reviewer, model_version, job_id). The label is the reviewed one where there is one, else the model's;
images reviewed as "none of these" and error rows are left out. `--min-confidence` drops model labels below X but
keeps reviewed images whatever the model's confidence (a person checked them); `--reviewed-only` keeps only
images a person labelled. Files are hard links to the sources where the filesystem allows, else copies (`--copy`:
always copies). Files of the same name in one class get a short content hash before the extension.

The result goes straight into `python -m train --data DIR` (or `--extra-data DIR`). Each source is hashed again
and left out, with a warning, when it is gone or its content changed since the job classified it. DIR is built
beside itself and renamed into place at the end, so a failed export leaves no half dataset; an existing
non-empty DIR is refused.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.content_hash import hash_files
from db.models import Prediction
from db.queries import find_job
from db.review_queries import job_reviews

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ["file", "label", "source", "sha256", "model_label", "reviewed_label", "confidence", "reviewer",
                    "model_version", "job_id"]


class ExportError(Exception):
    """An export that cannot go ahead; nothing was written."""


def _keep(confidence: float | None, review: dict | None, reviewed_only: bool, min_confidence: float | None) -> bool:
    if review is not None:
        return not review["none_of_these"]
    if reviewed_only:
        return False
    return min_confidence is None or (confidence or 0.0) >= min_confidence


def export_rows(session: Session, job_id: str, *, reviewed_only: bool = False,
                min_confidence: float | None = None) -> list[dict[str, Any]]:
    """The job's images as training examples (manifest columns but `file`), in path order; see the module doc."""
    job = find_job(session, job_id)
    reviews = job_reviews(session, job.id)
    stmt = (select(Prediction).where(Prediction.job_id == job.id, Prediction.error.is_(None))
            .order_by(Prediction.path))
    rows = []
    for p in session.scalars(stmt):
        review = reviews.get(p.path)
        if not _keep(p.confidence, review, reviewed_only, min_confidence):
            continue
        rows.append({
            "label": review["reviewed_label"] if review else p.label,
            "source": p.path,
            "sha256": p.content_hash,
            "model_label": p.label,
            "reviewed_label": review["reviewed_label"] if review else None,
            "confidence": p.confidence,
            "reviewer": review["reviewer"] if review else None,
            "model_version": p.model_version,
            "job_id": job.id,
        })
    return rows


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


def _confidence(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a confidence between 0 and 1")
    return value


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.export", description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_id", help="job id (or a unique prefix)")
    parser.add_argument("--out", required=True, help="dataset folder to create (absent or empty)")
    parser.add_argument("--reviewed-only", action="store_true", help="only images a person labelled")
    parser.add_argument("--min-confidence", type=_confidence, metavar="X",
                        help="drop model labels below X (reviewed images stay)")
    parser.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    parser.add_argument("--database-url", help="default: DATABASE_URL / settings")
    args = parser.parse_args(argv)
    out = out or sys.stdout

    from db.migrate import upgraded_sessions

    sessions = upgraded_sessions(args.database_url)
    try:
        with sessions() as session:
            rows = export_rows(session, args.job_id, reviewed_only=args.reviewed_only,
                               min_confidence=args.min_confidence)
        if not rows:
            raise ExportError(f"job {args.job_id} has no image to export with these filters")
        result = write_dataset(rows, args.out, link=not args.copy)
    except (LookupError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {result['images']} images in {len(result['classes'])} classes to {result['out']} "
          f"({result['linked']} hard links, {result['copied']} copies); manifest {result['manifest']}", file=out)
    for label, count in result["classes"].items():
        print(f"  {label:<24} {count:>6}", file=out)
    if len(result["classes"]) < 2:
        print("note: python -m train needs at least 2 classes", file=out)
    print(f"train on it: python -m train --data {result['out']}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
