"""Reports on stored results.

    python -m db.report JOB_ID [--format table|csv|json] [--min-confidence X] [--label L] [--unknown|--known]
                               [--limit N]
    python -m db.report --list [--format ...]
    python -m db.report --diff JOB_A JOB_B [--format ...]

`table` prints the job's summary (counts per label, images the model flagged unknown, confidence histogram,
errors, least confident images) and then its predictions, lowest confidence first; `csv` writes the predictions;
`json` writes both. Each prediction has `unknown` (True: not one of the classes the model knows; `label` is then
only the closest class) and `unknown_score` (empty for a model without unknown statistics). `--unknown` lists only
the images flagged unknown, `--known` only the classified images that are not.
Rows carry the reviewed label beside the model's (see `python -m db.review`), and the summary the model's
accuracy on what was reviewed. `--diff` compares two jobs on the same images (matched by content, see `db.diff`).
A unique prefix of a job id is enough.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from db.formats import write_csv_rows as _csv
from db.formats import write_table_rows as _table
from db.queries import find_job, job_predictions, job_summary, list_jobs
from db.review_queries import review_summary, with_reviews

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
        _table(summary["labels"], ["label", "count", "mean_confidence"], out)
        print(file=out)
    if summary["unknown_count"]:
        print(f"unknown: {summary['unknown_count']} images look like none of the model's classes "
              f"(python -m db.report {job['job_id']} --unknown lists them)", file=out)
        _table(summary["unknown"], ["path", "closest", "confidence", "unknown_score"], out)
        print(file=out)
    peak = max([h["count"] for h in summary["histogram"]] + [1])
    print("confidence", file=out)
    for h in summary["histogram"]:
        bar = "#" * round(40 * h["count"] / peak)
        print(f"  {h['from']:.1f}-{h['to']:.1f} {h['count']:>7} {bar}", file=out)
    print(file=out)
    if summary["errors"]:
        print(f"errors ({len(summary['errors'])})", file=out)
        _table(summary["errors"], ["path", "error"], out)
        print(file=out)
    print(f"below {summary['low_confidence_below']:.2f} confidence: {summary['low_confidence_count']}\n", file=out)
    if "review" in summary:
        review = summary["review"]
        print(f"review: {review['progress']['text']}; model {review['accuracy']['text']}\n", file=out)


def write_table(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    if summary is not None:
        _summary_table(summary, out)
        print("predictions (lowest confidence first)", file=out)
    _table(rows, columns, out)


def write_csv(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    _csv(rows, columns, out)


def write_json(summary: dict | None, rows: list[dict], columns: list[str], out: TextIO) -> None:
    data: Any = rows if summary is None else {"summary": summary, "predictions": rows}
    json.dump(data, out, indent=2, default=str)
    out.write("\n")


FORMATS: dict[str, Callable[[dict | None, list[dict], list[str], TextIO], None]] = {
    "table": write_table,
    "csv": write_csv,
    "json": write_json,
}


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.report", description="Reports on batch jobs.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_id", nargs="?", help="job id (or a unique prefix)")
    parser.add_argument("--list", action="store_true", help="list recent jobs")
    parser.add_argument("--diff", nargs=2, metavar=("JOB_A", "JOB_B"), help="compare two jobs' labels")
    parser.add_argument("--format", choices=sorted(FORMATS), default="table")
    parser.add_argument("--min-confidence", type=float, help="only predictions at or above this confidence")
    parser.add_argument("--label", help="only predictions with this top-1 label")
    flag = parser.add_mutually_exclusive_group()
    flag.add_argument("--unknown", dest="unknown", action="store_const", const=True,
                      help="only images the model flagged unknown (none of its classes)")
    flag.add_argument("--known", dest="unknown", action="store_const", const=False,
                      help="only classified images not flagged unknown")
    parser.add_argument("--limit", type=int, help="at most N predictions (table default: 50)")
    parser.add_argument("--database-url", help="default: DATABASE_URL / settings")
    args = parser.parse_args(argv)
    if not args.list and not args.job_id and not args.diff:
        parser.error("give a JOB_ID, --list or --diff JOB_A JOB_B")
    out = out or sys.stdout

    from db.migrate import upgraded_sessions

    with upgraded_sessions(args.database_url)() as session:
        if args.list:
            FORMATS[args.format](None, list_jobs(session, limit=args.limit or 50), JOB_COLUMNS, out)
            return 0
        if args.diff:
            return _diff(session, args.diff, args.format, out)
        try:
            job = find_job(session, args.job_id)
        except LookupError as exc:
            print(f"error: {exc} (python -m db.report --list shows the jobs)", file=sys.stderr)
            return 2
        limit = args.limit if args.limit is not None else (50 if args.format == "table" else None)
        rows = job_predictions(session, job.id, min_confidence=args.min_confidence, label=args.label,
                               unknown=args.unknown, limit=limit)
        rows = with_reviews(session, job.id, rows)
        summary = ({**job_summary(session, job.id), "review": review_summary(session, job.id)}
                   if args.format != "csv" else None)
    FORMATS[args.format](summary, rows, PREDICTION_COLUMNS, out)
    return 0


def _diff(session, job_ids: list[str], fmt: str, out: TextIO) -> int:
    from db.diff import diff_jobs
    from db.diff_report import write_diff

    try:
        diff = diff_jobs(session, *job_ids)
    except LookupError as exc:
        print(f"error: {exc} (python -m db.report --list shows the jobs)", file=sys.stderr)
        return 2
    write_diff(diff, fmt, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
