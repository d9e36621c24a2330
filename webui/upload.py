"""The Upload tab: a visitor's own photos, several at once or one .zip, classified in the demo process.

No broker and no database: the app's own classifier (the Classify tab's `model.explain.Explainer`) runs the
photos in batches, with a progress bar, and the page shows one row per file (a thumbnail from the same decode,
label, confidence, the "not one I know" flag, or the reason a file could not be used) and a CSV of them all.

What a public Space must survive is bounded by the limits in settings (`DEMO_UPLOAD_*`): files per upload, bytes
per upload, pixels per upload (read from the files' headers before anything is decoded), entries in a .zip and
what its entries expand to (in total, and against the .zip's own size). An upload over a limit is refused as a
whole, with the reason, before any work; a file that is not a usable image gets an error row and the rest are
classified. A .zip is read in memory, never extracted to disk; hidden entries (`.DS_Store`, `__MACOSX/`) are
skipped like hidden files in a folder job.
"""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr
import numpy as np

from model.bundle import BundleConfig
from model.explain import Explainer
from model.images import ImageError, image_size
from model.predict import Prediction
from settings import Settings
from webui.batch import thumb_tag
from webui.classify import label_words, model_problem, unknown_label
from webui.served import ServedModel

THUMB_SIDE = 56  # px, the thumbnails in the table
CSV_KEPT = 20  # the newest CSV files kept on disk (Gradio serves its own copy of each)
# `label`: the answer, or for a photo flagged unknown "not one of the 21 fruits I know (nearest: kiwi)"; `nearest`: the
# closest class either way. `confidence` stays for an unknown row in the CSV (the table leaves it blank): it is the
# softmax over the known classes, which says how the nearest compares with the others, not how sure the model is.
COLUMNS = ["file", "label", "nearest", "confidence", "unknown", "unknown_score", "top_k", "error"]


class UploadRefused(ValueError):
    """An upload over one of the limits: refused as a whole, and the message says which and why."""


@dataclass(frozen=True)
class UploadLimits:
    files: int
    bytes: int
    pixels: int
    zip_entries: int
    zip_bytes: int
    zip_ratio: float

    @classmethod
    def from_settings(cls, s: Settings) -> UploadLimits:
        return cls(files=s.demo_upload_max_files, bytes=s.demo_upload_max_bytes, pixels=s.demo_upload_max_pixels,
                   zip_entries=s.demo_upload_max_zip_entries, zip_bytes=s.demo_upload_max_zip_bytes,
                   zip_ratio=s.demo_upload_max_zip_ratio)


@dataclass
class Item:
    """One file of an upload: an uploaded file's path, or a .zip entry's bytes; or the error that stops it."""

    name: str
    source: str | bytes | None
    error: str | None = None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def zip_items(path: Path, limits: UploadLimits) -> list[Item]:
    """The entries of one .zip as items; UploadRefused when the archive is over a limit (checked on its
    directory, before any entry is read), an error item when it is not a readable .zip."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Item(path.name, None, f"not a readable .zip file ({exc})")]
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.zip_entries:
            raise UploadRefused(f"`{path.name}` has {len(infos):,} entries; this demo opens a .zip of at most "
                                f"{limits.zip_entries:,} (DEMO_UPLOAD_MAX_ZIP_ENTRIES).")
        entries = [i for i in infos if not i.is_dir() and not _hidden(i.filename)]
        expanded = sum(i.file_size for i in entries)
        if expanded > limits.zip_bytes:
            raise UploadRefused(f"`{path.name}` expands to {_mb(expanded)}; this demo opens a .zip of at most "
                                f"{_mb(limits.zip_bytes)} uncompressed (DEMO_UPLOAD_MAX_ZIP_BYTES).")
        ratio = expanded / max(1, path.stat().st_size)
        if ratio > limits.zip_ratio:
            raise UploadRefused(f"`{path.name}` expands {ratio:,.0f} times its own size (a zip bomb?); this demo "
                                f"opens a .zip that expands at most {limits.zip_ratio:,.0f} times "
                                "(DEMO_UPLOAD_MAX_ZIP_RATIO). Photos barely compress: zip them as they are.")
        return [_entry(archive, info, path.name) for info in entries]


def _entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, zip_name: str) -> Item:
    name = f"{zip_name}/{info.filename}"
    if info.filename.lower().endswith(".zip"):
        return Item(name, None, "a .zip inside the .zip: it is not opened (upload it on its own)")
    try:
        # zipfile stops at the size the directory declares (checked against the limits) and checks the CRC, so an
        # entry that lies about its size ends in an error, never in more bytes than were allowed.
        with archive.open(info) as f:
            return Item(name, f.read(info.file_size))
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        return Item(name, None, f"cannot read this entry of the .zip ({exc})")


def expand_upload(paths: list[str], limits: UploadLimits) -> list[Item]:
    """One item per file, a .zip's entries in its place; UploadRefused when the upload is over a limit."""
    if not paths:
        raise UploadRefused("No files: choose photos (or one .zip of photos) first.")
    if len(paths) > limits.files:
        raise UploadRefused(f"{len(paths):,} files: this demo classifies at most {limits.files:,} at a time "
                            "(DEMO_UPLOAD_MAX_FILES). Upload them in smaller groups.")
    sizes = [Path(p).stat().st_size for p in paths]
    if sum(sizes) > limits.bytes:
        raise UploadRefused(f"{_mb(sum(sizes))} in all: this demo takes at most {_mb(limits.bytes)} per upload "
                            "(DEMO_UPLOAD_MAX_BYTES). Upload them in smaller groups.")
    items: list[Item] = []
    for p in map(Path, paths):
        items += zip_items(p, limits) if p.suffix.lower() == ".zip" else [Item(p.name, str(p))]
    if len(items) > limits.files:
        raise UploadRefused(f"{len(items):,} files once the .zip is opened: this demo classifies at most "
                            f"{limits.files:,} at a time (DEMO_UPLOAD_MAX_FILES).")
    pixels = sum(_pixels(item) for item in items)
    if pixels > limits.pixels:
        raise UploadRefused(f"{pixels / 1e6:,.0f} megapixels in all: this demo takes at most "
                            f"{limits.pixels / 1e6:,.0f} megapixels per upload (DEMO_UPLOAD_MAX_PIXELS). "
                            "Upload fewer photos at a time, or smaller ones.")
    return items


def _pixels(item: Item) -> int:
    """Width x height from the file's header (nothing decoded); 0 for a file that is no image (its error row
    comes from the classifier's own decode)."""
    if item.source is None:
        return 0
    try:
        width, height = image_size(item.source)
    except ImageError:
        return 0
    return width * height


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def result_row(item: Item, p: Prediction | None, known: int = 0, things: str = "classes") -> dict[str, Any]:
    """One CSV row: the file, and its label (for a photo flagged unknown, that in words: none of the `known`
    `things`), nearest class, confidence, unknown flag and top-k, or its error."""
    if p is None or not p.ok:
        return {"file": item.name, "error": item.error or (p.error if p else "")}
    label = unknown_label(p.label, known, things) if p.unknown else p.label
    return {"file": item.name, "label": label, "nearest": p.label, "confidence": round(p.confidence, 4),
            "unknown": "" if p.unknown_score is None else str(p.unknown).lower(),
            "unknown_score": "" if p.unknown_score is None else round(p.unknown_score, 4),
            "top_k": "; ".join(f"{label} {conf:.4f}" for label, conf in p.top_k), "error": ""}


def table_row(row: dict[str, Any], thumb: np.ndarray | None) -> list:
    unknown = {"true": "yes", "false": "no"}.get(row.get("unknown", ""), "")
    confidence = None if unknown == "yes" else row.get("confidence")  # no percentage beside "not one I know"
    return [thumb_tag(thumb) if thumb is not None else "", row["file"], label_words(row.get("label") or ""),
            confidence, unknown, row["error"]]


class UploadTab:
    """The tab's handler, bound to one app's explainer (the Classify tab's: the served model) and settings."""

    def __init__(self, explainer: Explainer | ServedModel, settings: Settings):
        self.explainer, self.settings = explainer, settings
        self.limits = UploadLimits.from_settings(settings)
        self.csv_dir = Path(tempfile.mkdtemp(prefix="demo-uploads-"))
        atexit.register(shutil.rmtree, self.csv_dir, ignore_errors=True)

    def classify(self, files: list[str] | None, progress: gr.Progress = gr.Progress()
                 ) -> tuple[str, list[list], str | None]:
        """(summary, table rows, CSV file) for an upload; a refused upload gives the reason and nothing else."""
        try:
            items = expand_upload([str(f) for f in files or []], self.limits)
        except UploadRefused as exc:
            return f"**Not classified:** {exc}", [], None
        except OSError as exc:  # an uploaded file vanished from Gradio's cache
            return f"**Not classified:** cannot read the upload ({exc}).", [], None
        if problem := model_problem(self.explainer.model_dir):
            raise gr.Error(problem, print_exception=False)
        found: dict[int, tuple[Prediction, np.ndarray | None]] = {}
        usable = [i for i, item in enumerate(items) if item.error is None]
        progress((0, len(usable)), desc="Classifying", unit="images")
        for chunk in _chunks(usable, self.settings.batch_size):
            results = self.explainer.classify([items[i].source for i in chunk], self.settings.top_k, THUMB_SIDE)
            found.update(zip(chunk, results, strict=True))
            progress((len(found), len(usable)), desc="Classifying", unit="images")
        known = len(BundleConfig.read(self.explainer.model_dir).labels)
        rows = [result_row(item, found[i][0] if i in found else None, known, self.settings.demo_things)
                for i, item in enumerate(items)]
        table = [table_row(row, found[i][1] if i in found else None) for i, row in enumerate(rows)]
        return self.summary([found[i][0] for i in sorted(found)], len(items)), table, self.write_csv(rows)

    def summary(self, predictions: list[Prediction], total: int) -> str:
        labelled = [p for p in predictions if p.ok]
        unknown = sum(p.unknown for p in labelled)
        unsure = sum(not p.unknown and p.confidence < self.settings.demo_uncertain_below for p in labelled)
        parts = [f"{total - len(labelled):,} could not be used (see *error*)"] if total > len(labelled) else []
        if unknown:
            parts.append(f"{unknown:,} do not look like any of the {self.settings.demo_things} I know")
        if unsure:
            parts.append(f"{unsure:,} below {self.settings.demo_uncertain_below:.0%} confidence")
        return (f"**{total:,} files, {len(labelled):,} classified**" + (": " + "; ".join(parts) if parts else "")
                + ". The CSV has every row.")

    def write_csv(self, rows: list[dict[str, Any]]) -> str:
        path = self.csv_dir / f"upload-{uuid.uuid4().hex[:12]}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(rows)
        for old in sorted(self.csv_dir.glob("upload-*.csv"), key=os.path.getmtime)[:-CSV_KEPT]:
            old.unlink(missing_ok=True)
        return str(path)


def upload_tab(tab: UploadTab) -> None:
    limits = tab.limits
    gr.Markdown(f"Classify several photos at once: up to {limits.files:,} images, or one .zip of them "
                f"({_mb(limits.bytes)} in all). They are classified here, in this app, and kept only for this "
                "page: nothing is stored.")
    files = gr.File(label="Photos, or a .zip of photos", file_count="multiple", type="filepath",
                    elem_id="upload-files")
    run = gr.Button("Classify all", variant="primary")
    summary = gr.Markdown(elem_id="upload-summary")
    csv_file = gr.DownloadButton("Download CSV", value=None)
    table = gr.Dataframe(headers=["", "file", "label", "confidence", "unknown", "error"],
                         datatype=["html", "str", "str", "number", "str", "str"], interactive=False,
                         max_height=600, elem_id="upload-table")
    # One upload at a time in its own queue slot: a visitor's 50 photos never hold up the Classify tab's requests.
    run.click(tab.classify, files, [summary, table, csv_file], api_name="classify_upload",
              concurrency_id="upload", concurrency_limit=1)
