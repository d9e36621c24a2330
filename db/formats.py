"""How the report commands write: rows as an aligned text table, CSV or JSON, and the layouts of a job's report
(`FORMATS`: summary and predictions) and of a diff of two jobs (`write_diff`). `python -m db.report` prints them;
the demo's Batch tab writes its CSV with `write_csv`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import Any, TextIO


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_table_rows(rows: list[dict], columns: list[str], out: TextIO) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def write_csv_rows(rows: list[dict], columns: list[str], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


JOB_COLUMNS = ["job_id", "status", "total", "done", "errors", "unknown", "reused", "skipped", "model_version",
               "created_at", "elapsed_s", "folder"]
PREDICTION_COLUMNS = ["path", "label", "reviewed_label", "confidence", "unknown", "unknown_score", "error", "reused",
                      "content_hash", "model_version"]


def _summary_table(summary: dict, out: TextIO) -> None:
    job = summary["job"]
    print(f"job {job['job_id']}  {job['status']}  {job['done']}/{job['total']} images  errors {job['errors']}  "
          f"unknown {job['unknown']}  reused {job['reused']}  skipped {job['skipped']}  model {job['model_version']}  "
          f"{job['elapsed_s']:.1f} s", file=out)
    print(f"folder {job['folder']}\n", file=out)
    if summary["labels"]:
        print("label counts (images the model recognised)", file=out)
        write_table_rows(summary["labels"], ["label", "count", "mean_confidence"], out)
        print(file=out)
    if summary["unknown_count"]:
        print(f"unknown: {summary['unknown_count']} images look like none of the model's classes "
              f"(python -m db.report {job['job_id']} --unknown lists them)", file=out)
        write_table_rows(summary["unknown"], ["path", "closest", "confidence", "unknown_score"], out)
        print(file=out)
    peak = max([h["count"] for h in summary["histogram"]] + [1])
    print("confidence", file=out)
    for h in summary["histogram"]:
        bar = "#" * round(40 * h["count"] / peak)
        print(f"  {h['from']:.1f}-{h['to']:.1f} {h['count']:>7} {bar}", file=out)
    print(file=out)
    if summary["errors"]:
        print(f"errors ({len(summary['errors'])})", file=out)
        write_table_rows(summary["errors"], ["path", "error"], out)
        print(file=out)
    print(f"below {summary['low_confidence_below']:.2f} confidence: {summary['low_confidence_count']}\n", file=out)
    if "review" in summary:
        review = summary["review"]
        print(f"review: {review['progress']['text']}; model {review['accuracy']['text']}\n", file=out)


def write_table(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    if summary is not None:
        _summary_table(summary, out)
        print("predictions (lowest confidence first)", file=out)
    write_table_rows(rows, columns, out)


def write_csv(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    write_csv_rows(rows, columns, out)


def write_json(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    data: Any = rows if summary is None else {"summary": summary, "predictions": rows}
    json.dump(data, out, indent=2, default=str)
    out.write("\n")


FORMATS: dict[str, Callable[[dict | None, list[dict], list[str], TextIO], None]] = {
    "table": write_table,
    "csv": write_csv,
    "json": write_json,
}


CHANGE_COLUMNS = ["path_a", "label_a", "confidence_a", "label_b", "confidence_b", "reviewed_label", "path_b"]


def _diff_table(diff: dict[str, Any], out: TextIO) -> None:
    a, b = diff["job_a"], diff["job_b"]
    print(f"A: job {a['job_id']}  model {a['model_version']}  {a['folder']}", file=out)
    print(f"B: job {b['job_id']}  model {b['model_version']}  {b['folder']}", file=out)
    print(f"{diff['text']} ({diff['only_in_a']} only in A, {diff['only_in_b']} only in B)", file=out)
    print(f"reviewer: {diff['reviewer']['text']}\n", file=out)
    if diff["transitions"]:
        print("from -> to", file=out)
        write_table_rows(diff["transitions"], ["from", "to", "count"], out)
        print("\nchanged images", file=out)
        # path_b only where it differs: on the same folder it repeats path_a.
        rows = [{**c, "path_b": c["path_b"] if c["path_b"] != c["path_a"] else ""} for c in diff["changes"]]
        write_table_rows(rows, CHANGE_COLUMNS, out)


def write_diff(diff: dict[str, Any], fmt: str, out: TextIO) -> None:
    """table: summary, from-to table and changed images; csv: the changed images; json: everything."""
    if fmt == "json":
        json.dump(diff, out, indent=2, default=str)
        out.write("\n")
    elif fmt == "csv":
        write_csv_rows(diff["changes"], CHANGE_COLUMNS, out)
    else:
        _diff_table(diff, out)
