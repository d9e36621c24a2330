"""Output of `python -m db.report --diff JOB_A JOB_B` in the report's formats (table, csv, json)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from db.formats import write_csv_rows as _csv
from db.formats import write_table_rows as _table

CHANGE_COLUMNS = ["path_a", "label_a", "confidence_a", "label_b", "confidence_b", "reviewed_label", "path_b"]


def _diff_table(diff: dict[str, Any], out: TextIO) -> None:
    a, b = diff["job_a"], diff["job_b"]
    print(f"A: job {a['job_id']}  model {a['model_version']}  {a['folder']}", file=out)
    print(f"B: job {b['job_id']}  model {b['model_version']}  {b['folder']}", file=out)
    print(f"{diff['text']} ({diff['only_in_a']} only in A, {diff['only_in_b']} only in B)", file=out)
    print(f"reviewer: {diff['reviewer']['text']}\n", file=out)
    if diff["transitions"]:
        print("from -> to", file=out)
        _table(diff["transitions"], ["from", "to", "count"], out)
        print("\nchanged images", file=out)
        # path_b only where it differs: on the same folder it repeats path_a.
        rows = [{**c, "path_b": c["path_b"] if c["path_b"] != c["path_a"] else ""} for c in diff["changes"]]
        _table(rows, CHANGE_COLUMNS, out)


def write_diff(diff: dict[str, Any], fmt: str, out: TextIO) -> None:
    """table: summary, from-to table and changed images; csv: the changed images; json: everything."""
    if fmt == "json":
        json.dump(diff, out, indent=2, default=str)
        out.write("\n")
    elif fmt == "csv":
        _csv(diff["changes"], CHANGE_COLUMNS, out)
    else:
        _diff_table(diff, out)
