"""Export a job's images as a folder-per-class training set (DIR/<label>/<file> and DIR/manifest.csv).

    python -m db.export JOB_ID --out DIR [--reviewed-only] [--min-confidence X] [--unknown-dir] [--copy]

The label is the reviewed one where there is one, else the model's; images reviewed as "none of these", error rows
and, by default, the unreviewed images the model flagged unknown are left out (the rules: `db.datasets`). With
`--unknown-dir` those go under DIR/unknown/, to look through or to evaluate on
(`python -m train.evaluate --ood DIR/unknown`): move that folder out before training on DIR, or `unknown` becomes a
class. The result goes straight into `python -m train --data DIR` (or `--extra-data DIR`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import cli
from db.datasets import UNKNOWN_DIR, ExportError, export_rows, unreviewed_unknown, write_dataset


def _confidence(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a confidence between 0 and 1")
    return value


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    from settings import get_settings

    parser = cli.parser("python -m db.export", __doc__)
    parser.add_argument("job_id", help="job id (or a unique prefix)")
    parser.add_argument("--out", required=True, help="dataset folder to create (absent or empty)")
    parser.add_argument("--reviewed-only", action="store_true", help="only images a person labelled")
    parser.add_argument("--min-confidence", type=_confidence, metavar="X",
                        help="drop model labels below X (reviewed images stay)")
    parser.add_argument("--unknown-dir", action="store_true",
                        help=f"put the unreviewed images the model flagged unknown under DIR/{UNKNOWN_DIR}/ "
                             "(default: leave them out)")
    parser.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    cli.add_database_url(parser, get_settings())
    args = parser.parse_args(argv)
    out = out or sys.stdout

    from db.migrate import upgraded_sessions

    sessions = upgraded_sessions(args.database_url)
    try:
        with sessions() as session:
            rows = export_rows(session, args.job_id, reviewed_only=args.reviewed_only,
                               min_confidence=args.min_confidence, unknown_dir=args.unknown_dir)
            unknown = unreviewed_unknown(session, args.job_id)
        if not rows:
            raise ExportError(f"job {args.job_id} has no image to export with these filters")
        result = write_dataset(rows, args.out, link=not args.copy)
    except (LookupError, ExportError) as exc:
        cli.fail(str(exc))
    print(f"exported {result['images']} images in {len(result['classes'])} classes to {result['out']} "
          f"({result['linked']} hard links, {result['copied']} copies); manifest {result['manifest']}", file=out)
    for label, count in result["classes"].items():
        print(f"  {label:<24} {count:>6}", file=out)
    if args.unknown_dir and UNKNOWN_DIR in result["classes"]:
        print(f"note: {UNKNOWN_DIR}/ holds the images the model flagged unknown; move it out before training on "
              f"{result['out']}, or it becomes a class", file=out)
    elif unknown and not args.reviewed_only:
        print(f"left out {unknown} images the model flagged unknown (--unknown-dir puts them under "
              f"{UNKNOWN_DIR}/)", file=out)
    if len(result["classes"]) < 2:
        print("note: python -m train needs at least 2 classes", file=out)
    print(f"train on it: python -m train --data {result['out']}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
