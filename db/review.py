"""Review a job's results: list the next images to review, or set the right label of one.

    python -m db.review JOB_ID                           progress, accuracy so far, the next images to review
                                                         (flagged unknown first, then lowest confidence first)
    python -m db.review JOB_ID --set PATH LABEL [--by NAME]   PATH as stored for the job, LABEL one of the model's
    python -m db.review JOB_ID --skip PATH [--by NAME]        none of the labels fits (or cannot tell)

Reviewing an image again replaces its review. The reviewer defaults to the OS user. A unique prefix of a job id
is enough. Exit status 2 on any error (unknown job or path, a label the model does not have), with nothing written.
"""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from sqlalchemy.orm import Session

import cli
from db.results import find_job
from db.reviews import ReviewError, next_to_review, review_progress, reviewed_accuracy, set_review, to_review


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _top_k(row: dict) -> str:
    return ", ".join(f"{label} {conf:.2f}" for label, conf in row["top_k"])


def print_status(session: Session, job_id: str, limit: int, out: TextIO) -> None:
    progress, accuracy = review_progress(session, job_id), reviewed_accuracy(session, job_id)
    print(f"job {progress['job_id']}: {progress['text']}; model {accuracy['text']}", file=out)
    rows = to_review(session, job_id, limit=limit)
    if not rows:
        print("nothing left to review", file=out)
        return
    print("next to review (unknown first, then lowest confidence first):", file=out)
    for row in rows:
        flag = "  unknown" if row["unknown"] else ""
        print(f"  {row['confidence']:.3f}{flag}  {row['path']}  [{_top_k(row)}]", file=out)
    print(f"set one: python -m db.review {progress['job_id']} --set PATH LABEL   (or --skip PATH)", file=out)


def _describe(review: dict) -> str:
    verdict = review["reviewed_label"] if review["reviewed_label"] is not None else "none of these"
    agreement = "agrees with" if review["agrees"] else "corrects"
    return (f"{review['path']}: {verdict} ({agreement} the model's {review['model_label']} "
            f"at {review['confidence']:.3f}), by {review['reviewer']}")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    from settings import get_settings

    parser = cli.parser("python -m db.review", __doc__)
    parser.add_argument("job_id", help="job id (or a unique prefix)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--set", nargs=2, metavar=("PATH", "LABEL"), help="review PATH as LABEL")
    action.add_argument("--skip", metavar="PATH", help="mark PATH as none of these")
    parser.add_argument("--by", default=None, help="reviewer name (default: the OS user)")
    parser.add_argument("--limit", type=int, default=10, metavar="N", help="images to list (default 10)")
    cli.add_database_url(parser, get_settings())
    args = parser.parse_args(argv)
    out = out or sys.stdout

    from db.migrate import upgraded_sessions

    with upgraded_sessions(args.database_url)() as session:
        try:
            job_id = find_job(session, args.job_id).id
            if args.set is None and args.skip is None:
                print_status(session, job_id, args.limit, out)
                return 0
            path, label = args.set if args.set else (args.skip, None)
            review = set_review(session, job_id, path, label, args.by or default_reviewer())
            session.commit()
        except (LookupError, ReviewError) as exc:
            cli.fail(str(exc))
        print(_describe(review), file=out)
        print(review_progress(session, job_id)["text"], end="", file=out)
        following = next_to_review(session, job_id)
        print(f"; next: {following['path']}" if following else "; all reviewed", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
