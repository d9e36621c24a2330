"""Compare the results of two jobs on the same images (typically an old model and a new one): `diff_jobs`.

Images are matched by content (sha256), not by path, so a job on a copy of the folder, or on the same folder
moved, still matches; a file edited between the runs is a different image and counts as only in one job.
Files that could not be read have no hash and are matched by their path relative to the job's folder.
Identical files within a job are paired in path order (their labels are the same anyway: same bytes, same model).

Where a reviewer labelled a matched image (in either job; the later review wins), the diff counts how often each
model agrees with the reviewer. "None of these" reviews are left out of that count: no label could agree.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, Prediction
from db.results import find_job
from db.reviews import job_reviews

ERROR_LABEL = "(error)"  # how an image that was not classified shows in the from-to table


def _rows(session: Session, job: Job) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The job's rows grouped by match key, each group in relative-path order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    stmt = select(Prediction.path, Prediction.content_hash, Prediction.label, Prediction.confidence).where(
        Prediction.job_id == job.id)
    for path, content_hash, label, confidence in session.execute(stmt):
        rel = os.path.relpath(path, job.folder)
        key = ("sha256", content_hash) if content_hash else ("path", rel)
        groups[key].append({"path": path, "rel": rel, "content_hash": content_hash,
                            "label": label or ERROR_LABEL, "confidence": confidence})
    for rows in groups.values():
        rows.sort(key=lambda r: r["rel"])
    return groups


def _verdict(a: dict, b: dict, reviews_a: dict, reviews_b: dict) -> str | None:
    """The reviewed label of a matched pair: the later of the two jobs' reviews; None if none or none of these."""
    found = [r for r in (reviews_a.get(a["path"]), reviews_b.get(b["path"])) if r]
    # Compared as datetimes: PostgreSQL may hand them back in the session time zone, not UTC.
    return max(found, key=lambda r: datetime.fromisoformat(r["reviewed_at"]))["reviewed_label"] if found else None


def _agreement(pairs: list[tuple[dict, dict, str | None]], name_a: str, name_b: str) -> dict[str, Any]:
    judged = [(a, b, v) for a, b, v in pairs if v is not None]
    agree_a = sum(a["label"] == v for a, _, v in judged)
    agree_b = sum(b["label"] == v for _, b, v in judged)
    if not judged:
        better, text = None, "no reviewed labels on these images"
    else:
        better = "a" if agree_a > agree_b else "b" if agree_b > agree_a else "tie"
        verdict = {"a": f"{name_a} agrees more", "b": f"{name_b} agrees more", "tie": "a tie"}[better]
        text = (f"on {len(judged)} reviewed images the reviewer agrees with {name_a} on {agree_a} "
                f"and with {name_b} on {agree_b}: {verdict}")
    return {"reviewed": len(judged), "agree_a": agree_a, "agree_b": agree_b, "better": better, "text": text}


def _job_brief(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "model_version": job.model_version, "folder": job.folder}


def diff_jobs(session: Session, job_a: str, job_b: str) -> dict[str, Any]:
    """How the labels of job B differ from job A's on the images both classified.

    Returns plain data: `matched`, `only_in_a`, `only_in_b`, `changed`, `unchanged`, `transitions` (the from-to
    table of changed labels, most frequent first: [{"from", "to", "count"}]), `changes` (one dict per changed
    image: path_a, path_b, content_hash, label_a, confidence_a, label_b, confidence_b, reviewed_label) and
    `reviewer` (agree_a, agree_b, reviewed, better: "a" | "b" | "tie" | None, text). LookupError for an
    unknown job.
    """
    ja, jb = find_job(session, job_a), find_job(session, job_b)
    rows_a, rows_b = _rows(session, ja), _rows(session, jb)
    reviews_a, reviews_b = job_reviews(session, ja.id), job_reviews(session, jb.id)
    pairs = []
    for key in rows_a.keys() & rows_b.keys():
        for a, b in zip(rows_a[key], rows_b[key], strict=False):
            pairs.append((a, b, _verdict(a, b, reviews_a, reviews_b)))
    n_a, n_b = sum(map(len, rows_a.values())), sum(map(len, rows_b.values()))
    changed = sorted((p for p in pairs if p[0]["label"] != p[1]["label"]), key=lambda p: (p[0]["rel"], p[0]["path"]))
    counts = Counter((a["label"], b["label"]) for a, b, _ in changed)
    transitions = [{"from": f, "to": t, "count": n}
                   for (f, t), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    changes = [{"path_a": a["path"], "path_b": b["path"], "content_hash": a["content_hash"],
                "label_a": a["label"], "confidence_a": a["confidence"],
                "label_b": b["label"], "confidence_b": b["confidence"], "reviewed_label": v}
               for a, b, v in changed]
    return {
        "job_a": _job_brief(ja),
        "job_b": _job_brief(jb),
        "matched": len(pairs),
        "only_in_a": n_a - len(pairs),
        "only_in_b": n_b - len(pairs),
        "changed": len(changed),
        "unchanged": len(pairs) - len(changed),
        "transitions": transitions,
        "changes": changes,
        "reviewer": _agreement(pairs, f"A ({ja.model_version})", f"B ({jb.model_version})"),
        "text": f"{len(changed)} of {len(pairs)} matched images changed label",
    }
