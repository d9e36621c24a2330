"""`diff_jobs` and `python -m db.report --diff` (issue 11) on two jobs with known differences, on SQLite and
PostgreSQL. Job B ran a new model on a copy of job A's folder, so paths differ and content hashes match."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from db.diffs import ERROR_LABEL, diff_jobs
from db.reviews import set_review
from tests.helpers.databases import add_job, row

# name: (sha256, label from model A, label from model B); None hash: an unreadable file (an error row).
IMAGES = {
    "x1.jpg": ("h1", "apple", "apple"),
    "x2.jpg": ("h2", "apple", "banana"),
    "x3.jpg": ("h3", "banana", "apple"),
    "x4.jpg": ("h4", "apple", "banana"),
    "x5.jpg": ("h5", "cherry", "cherry"),
    "dup/d1.jpg": ("h6", "banana", "cherry"),  # two identical files
    "dup/d2.jpg": ("h6", "banana", "cherry"),
    "u.jpg": (None, None, None),
}
ONLY_A = {"onlya.jpg": ("h7", "apple"), "e.jpg": ("h9", "apple")}  # e.jpg was edited between the runs...
ONLY_B = {"onlyb.jpg": ("h8", "cherry"), "e.jpg": ("h10", "banana")}  # ...so it is another image


def _rows(folder, which, extra):
    out = []
    for name, (h, label_a, label_b) in IMAGES.items():
        label = label_a if which == "a" else label_b
        out.append(row(f"{folder}/{name}", label, None if label is None else 0.6, h,
                       error=None if label else "cannot identify image file"))
    out += [row(f"{folder}/{name}", label, 0.7, h) for name, (h, label) in extra.items()]
    return out


@pytest.fixture
def jobs(sessions):
    add_job(sessions, "joba", _rows("/data/photos", "a", ONLY_A), version="v-old", folder="/data/photos")
    add_job(sessions, "jobb", _rows("/copy/photos", "b", ONLY_B), version="v-new", folder="/copy/photos")
    early, late = datetime(2025, 12, 1, tzinfo=UTC), datetime(2025, 12, 2, tzinfo=UTC)
    with sessions() as session:
        set_review(session, "joba", "/data/photos/x2.jpg", "banana", "ann", when=early)  # B right
        set_review(session, "joba", "/data/photos/x3.jpg", "banana", "ann", when=early)  # A right
        set_review(session, "joba", "/data/photos/x4.jpg", "banana", "ann", when=early)  # B right
        set_review(session, "joba", "/data/photos/x1.jpg", None, "ann", when=early)  # none of these: not counted
        set_review(session, "jobb", "/copy/photos/dup/d1.jpg", "cherry", "bob", when=early)  # B right
        # Reviewed in both jobs: the later review wins (cherry: both right).
        set_review(session, "joba", "/data/photos/x5.jpg", "apple", "ann", when=early)
        set_review(session, "jobb", "/copy/photos/x5.jpg", "cherry", "bob", when=late)
        session.commit()
    return sessions


def test_diff_counts_table_and_changed_images(jobs):
    with jobs() as session:
        diff = diff_jobs(session, "joba", "jobb")
    assert (diff["matched"], diff["changed"], diff["unchanged"]) == (8, 5, 3)
    assert (diff["only_in_a"], diff["only_in_b"]) == (2, 2)
    assert diff["transitions"] == [
        {"from": "apple", "to": "banana", "count": 2},
        {"from": "banana", "to": "cherry", "count": 2},
        {"from": "banana", "to": "apple", "count": 1},
    ]
    assert [(c["path_a"], c["path_b"], c["label_a"], c["label_b"], c["reviewed_label"]) for c in diff["changes"]] == [
        ("/data/photos/dup/d1.jpg", "/copy/photos/dup/d1.jpg", "banana", "cherry", "cherry"),
        ("/data/photos/dup/d2.jpg", "/copy/photos/dup/d2.jpg", "banana", "cherry", None),
        ("/data/photos/x2.jpg", "/copy/photos/x2.jpg", "apple", "banana", "banana"),
        ("/data/photos/x3.jpg", "/copy/photos/x3.jpg", "banana", "apple", "banana"),
        ("/data/photos/x4.jpg", "/copy/photos/x4.jpg", "apple", "banana", "banana"),
    ]
    reviewer = diff["reviewer"]
    assert (reviewer["reviewed"], reviewer["agree_a"], reviewer["agree_b"], reviewer["better"]) == (5, 2, 4, "b")
    assert diff["text"] == "5 of 8 matched images changed label"
    assert (diff["job_a"]["model_version"], diff["job_b"]["model_version"]) == ("v-old", "v-new")


def test_diff_the_other_way_and_with_itself(jobs):
    with jobs() as session:
        back = diff_jobs(session, "jobb", "joba")
        same = diff_jobs(session, "joba", "joba")
        with pytest.raises(LookupError):
            diff_jobs(session, "joba", "nojob")
    assert back["changed"] == 5 and back["transitions"][-1] == {"from": "apple", "to": "banana", "count": 1}
    assert (back["reviewer"]["agree_a"], back["reviewer"]["agree_b"], back["reviewer"]["better"]) == (4, 2, "a")
    assert (same["matched"], same["changed"], same["only_in_a"], same["transitions"]) == (10, 0, 0, [])
    assert same["reviewer"]["better"] == "tie"


def test_error_rows_show_in_the_table(sessions):
    add_job(sessions, "a", [row("/f/x.jpg", "apple", 0.9, "hx")])
    add_job(sessions, "b", [row("/g/x.jpg", None, None, "hx", error="truncated")], folder="/g")
    with sessions() as session:
        diff = diff_jobs(session, "a", "b")
    assert diff["transitions"] == [{"from": "apple", "to": ERROR_LABEL, "count": 1}]
    assert diff["reviewer"] == {"reviewed": 0, "agree_a": 0, "agree_b": 0, "better": None,
                                "text": "no reviewed labels on these images"}


def test_report_diff_cli(jobs, database_url, fails):
    from db.report import main

    url = database_url
    out = io.StringIO()
    assert main(["--diff", "joba", "jobb", "--database-url", url], out=out) == 0
    lines = out.getvalue().splitlines()
    assert "5 of 8 matched images changed label (2 only in A, 2 only in B)" in lines
    assert ("reviewer: on 5 reviewed images the reviewer agrees with A (v-old) on 2 and with B (v-new) on 4: "
            "B (v-new) agrees more") in lines
    table = lines[lines.index("from -> to") + 1:lines.index("from -> to") + 5]
    assert [x.split() for x in table] == [["from", "to", "count"], ["apple", "banana", "2"],
                                          ["banana", "cherry", "2"], ["banana", "apple", "1"]]
    changed = lines[lines.index("changed images") + 2:]
    assert [x.split()[:4] for x in changed][2] == ["/data/photos/x2.jpg", "apple", "0.6000", "banana"]
    assert len(changed) == 5

    out = io.StringIO()
    assert main(["--diff", "joba", "jobb", "--format", "csv", "--database-url", url], out=out) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["label_a"], r["label_b"]) for r in rows] == [("banana", "cherry")] * 2 + [
        ("apple", "banana"), ("banana", "apple"), ("apple", "banana")]

    out = io.StringIO()
    assert main(["--diff", "joba", "jobb", "--format", "json", "--database-url", url], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["changed"] == 5 and data["reviewer"]["better"] == "b"

    assert "no job with id 'zzz'" in fails(main, ["--diff", "joba", "zzz", "--database-url", url])
