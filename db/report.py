"""Reports on batch jobs: a job's summary and predictions, the recent jobs, or two jobs compared.

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
accuracy on what was reviewed. `--diff` compares two jobs on the same images (matched by content, see `db.diffs`).
A unique prefix of a job id is enough.
"""

from __future__ import annotations

import sys
from typing import TextIO

import cli
from db.formats import FORMATS, JOB_COLUMNS, PREDICTION_COLUMNS, write_diff
from db.results import find_job, job_predictions, job_summary, list_jobs
from db.reviews import review_summary, with_reviews

LIST_HINT = "python -m db.report --list shows the jobs"


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    from settings import get_settings

    parser = cli.parser("python -m db.report", __doc__)
    parser.add_argument("job_id", nargs="?", help="job id (or a unique prefix)")
    parser.add_argument("--list", action="store_true", help="list recent jobs")
    parser.add_argument("--diff", nargs=2, metavar=("JOB_A", "JOB_B"), help="compare two jobs' labels")
    parser.add_argument("--format", choices=sorted(FORMATS), default="table",
                        help="table (summary, then predictions), csv (predictions) or json (both); default table")
    parser.add_argument("--min-confidence", type=float, metavar="X", help="only predictions at or above confidence X")
    parser.add_argument("--label", help="only predictions with this top-1 label")
    flag = parser.add_mutually_exclusive_group()
    flag.add_argument("--unknown", dest="unknown", action="store_const", const=True,
                      help="only images the model flagged unknown (none of its classes)")
    flag.add_argument("--known", dest="unknown", action="store_const", const=False,
                      help="only classified images not flagged unknown")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N predictions or jobs (table default: 50)")
    cli.add_database_url(parser, get_settings())
    args = parser.parse_args(argv)
    if not args.list and not args.job_id and not args.diff:
        parser.error("give a JOB_ID, --list or --diff JOB_A JOB_B")
    out = out or sys.stdout

    from db.diffs import diff_jobs
    from db.migrate import upgraded_sessions

    with upgraded_sessions(args.database_url)() as session:
        if args.list:
            FORMATS[args.format](None, list_jobs(session, limit=args.limit or 50), JOB_COLUMNS, out)
            return 0
        try:
            if args.diff:
                write_diff(diff_jobs(session, *args.diff), args.format, out)
                return 0
            job = find_job(session, args.job_id)
        except LookupError as exc:
            cli.fail(f"{exc} ({LIST_HINT})")
        limit = args.limit if args.limit is not None else (50 if args.format == "table" else None)
        rows = job_predictions(session, job.id, min_confidence=args.min_confidence, label=args.label,
                               unknown=args.unknown, limit=limit)
        rows = with_reviews(session, job.id, rows)
        summary = ({**job_summary(session, job.id), "review": review_summary(session, job.id)}
                   if args.format != "csv" else None)
    FORMATS[args.format](summary, rows, PREDICTION_COLUMNS, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
