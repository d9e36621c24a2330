"""Images flagged unknown on the batch path (issue 20), on SQLite and PostgreSQL: migration 0004 up, down and up
again, the job summary and reports (`db.report --unknown/--known`), the review queue's order, and content-hash
reuse carrying the flag (through `jobs.submit`'s own reuse, no broker)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from db import crud
from db.reviews import next_to_review, set_review, to_review
from tests.helpers.databases import add_job, alembic_command, row, url_of

# Two images the model flagged unknown (their label is only the closest class), three it recognised, one error.
ROWS = [
    row("/f/carton.jpg", "banana", 0.97, unknown=True, unknown_score=41.5),
    row("/f/tomato.jpg", "apple", 0.62, unknown=True, unknown_score=30.25),
    row("/f/apple.jpg", "apple", 0.9, unknown_score=3.5),
    row("/f/banana.jpg", "banana", 0.35, unknown_score=5.0),
    row("/f/cherry.jpg", "cherry", 0.55, unknown_score=4.0),
    row("/f/bad.jpg", None, None, error="cannot identify image file"),
]
UNKNOWN = {"/f/carton.jpg", "/f/tomato.jpg"}
KNOWN = {"/f/apple.jpg", "/f/banana.jpg", "/f/cherry.jpg"}


def _columns(engine, table="predictions") -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def _indexes(engine, table="predictions") -> set[str]:
    return {i["name"] for i in sa.inspect(engine).get_indexes(table)}


def _insert_as_of_now(conn, table: str, rows: list[dict]) -> None:
    """Insert through the table as it is in the database (the ORM models are the head revision's)."""
    conn.execute(sa.Table(table, sa.MetaData(), autoload_with=conn).insert(), rows)


def test_migration_0004_up_down_up(empty_database_url):
    """Rows written before 0004 get unknown = false and a NULL score; the columns go with a downgrade (results and
    reviews stay) and come back empty of flags; the schema at head is the models' again."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from db.migrate import current_revision, upgrade
    from db.models import Base, utcnow
    from db.session import make_engine, session_factory

    url = empty_database_url
    upgrade(url, "0003")
    engine = make_engine(url)
    try:
        assert current_revision(url) == "0003" and not {"unknown", "unknown_score"} & _columns(engine)
        now = utcnow()
        with engine.begin() as conn:  # an old job with a review, written by the old schema
            _insert_as_of_now(conn, "models", [{"version": "v-old", "labels": ["apple"], "input_size": 32,
                                                "source": "", "card": {}, "created_at": now}])
            _insert_as_of_now(conn, "jobs", [{
                "id": "old", "folder": "/f", "recursive": False, "model_dir": "/m", "model_version": "v-old",
                "status": "done", "total": 2, "done": 2, "errors": 0, "reused": 0, "skipped": 0, "chunks": 1,
                "created_at": now}])
            _insert_as_of_now(conn, "predictions", [
                {"job_id": "old", "path": f"/f/{n}.jpg", "model_version": "v-old", "label": "apple",
                 "confidence": 0.8, "reused": False, "created_at": now} for n in "ab"])
            reviewed = conn.execute(sa.text("SELECT id FROM predictions WHERE path = '/f/a.jpg'")).scalar()
            _insert_as_of_now(conn, "reviews", [{"job_id": "old", "path": "/f/a.jpg", "prediction_id": reviewed,
                                                 "reviewed_label": "apple", "reviewer": "ann", "reviewed_at": now}])

        upgrade(url)
        assert {"unknown", "unknown_score"} <= _columns(engine) and "ix_predictions_job_unknown" in _indexes(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.execute(sa.text("SELECT unknown, unknown_score FROM predictions")).all() == [(False, None)] * 2
        add_job(session_factory(url), "new", ROWS)
        with engine.connect() as conn:
            flagged = conn.execute(sa.text("SELECT path, unknown_score FROM predictions WHERE unknown")).all()
        assert sorted(flagged) == [("/f/carton.jpg", 41.5), ("/f/tomato.jpg", 30.25)]

        alembic_command(url, "downgrade", "0003")
        assert current_revision(url) == "0003"
        assert not {"unknown", "unknown_score"} & _columns(engine)
        assert "ix_predictions_job_unknown" not in _indexes(engine)

        def kept() -> tuple[int, int]:
            with engine.connect() as conn:
                return tuple(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                             for t in ("predictions", "reviews"))

        assert kept() == (2 + len(ROWS), 1)  # the results and the review outlive the round trip, the flags do not

        alembic_command(url, "upgrade", "head")
        assert "ix_predictions_job_unknown" in _indexes(engine) and kept() == (2 + len(ROWS), 1)
        with engine.connect() as conn:
            values = conn.execute(sa.text("SELECT DISTINCT unknown, unknown_score FROM predictions")).all()
            assert values == [(False, None)]
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_summary_counts_unknown_apart_from_labels(sessions):
    from db.results import job_summary, list_jobs

    add_job(sessions, "job1", ROWS)
    add_job(sessions, "job2", ROWS[2:])  # nothing flagged
    with sessions() as session:
        summary = job_summary(session, "job1")
        assert summary["unknown_count"] == summary["job"]["unknown"] == 2
        # The closest labels of the flagged images are not answers: apple 1 (not 2), banana 1 (not 2).
        assert sorted((r["label"], r["count"]) for r in summary["labels"]) == [("apple", 1), ("banana", 1),
                                                                               ("cherry", 1)]
        assert [(u["path"], u["closest"], u["unknown_score"]) for u in summary["unknown"]] == [
            ("/f/carton.jpg", "banana", 41.5), ("/f/tomato.jpg", "apple", 30.25)]  # most clearly unknown first
        assert {j["job_id"]: j["unknown"] for j in list_jobs(session)} == {"job1": 2, "job2": 0}
        assert job_summary(session, "job2")["unknown"] == []


def test_report_filters_and_columns(sessions, capsys):
    from db.report import main

    add_job(sessions, "job1", ROWS)
    url = url_of(sessions)

    def report(*args) -> str:
        out = io.StringIO()
        assert main(["job1", *args, "--database-url", url], out=out) == 0
        return out.getvalue()

    rows = list(csv.DictReader(io.StringIO(report("--format", "csv", "--unknown"))))
    assert {r["path"] for r in rows} == UNKNOWN
    assert {(r["unknown"], r["unknown_score"]) for r in rows} == {("True", "41.5"), ("True", "30.25")}
    rows = list(csv.DictReader(io.StringIO(report("--format", "csv", "--known"))))
    assert {r["path"] for r in rows} == KNOWN  # neither the flagged images nor the error row
    assert {r["unknown"] for r in rows} == {"False"}
    rows = list(csv.DictReader(io.StringIO(report("--format", "csv"))))
    assert len(rows) == len(ROWS)
    assert {r["path"]: (r["unknown"], r["unknown_score"]) for r in rows}["/f/bad.jpg"] == ("False", "")
    rows = list(csv.DictReader(io.StringIO(report("--format", "csv", "--unknown", "--label", "apple"))))
    assert [r["path"] for r in rows] == ["/f/tomato.jpg"]

    data = json.loads(report("--format", "json", "--unknown"))
    assert data["summary"]["unknown_count"] == 2 and data["summary"]["job"]["unknown"] == 2
    assert {p["path"]: p["unknown_score"] for p in data["predictions"]} == {"/f/carton.jpg": 41.5,
                                                                           "/f/tomato.jpg": 30.25}
    assert all(p["unknown"] is True for p in data["predictions"])

    text = report()
    assert "unknown 2" in text.splitlines()[0]
    assert "unknown: 2 images look like none of the model's classes" in text
    assert "python -m db.report job1 --unknown" in text

    jobs = list(csv.DictReader(io.StringIO(_list(main, url))))
    assert [(j["job_id"], j["unknown"]) for j in jobs] == [("job1", "2")]

    with pytest.raises(SystemExit) as exc:
        main(["job1", "--unknown", "--known", "--database-url", url])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def _list(main, url) -> str:
    out = io.StringIO()
    assert main(["--list", "--format", "csv", "--database-url", url], out=out) == 0
    return out.getvalue()


def test_review_queue_puts_unknown_first(sessions):
    from db.review import main

    add_job(sessions, "job1", ROWS)
    with sessions() as session:
        # Flagged images first whatever their confidence (0.62 before 0.97), then the rest lowest confidence first.
        order = ["/f/tomato.jpg", "/f/carton.jpg", "/f/banana.jpg", "/f/cherry.jpg", "/f/apple.jpg"]
        assert [r["path"] for r in to_review(session, "job1")] == order
        first = next_to_review(session, "job1")
        assert (first["path"], first["unknown"], first["unknown_score"]) == ("/f/tomato.jpg", True, 30.25)
        set_review(session, "job1", "/f/tomato.jpg", None, "ann")
        set_review(session, "job1", "/f/carton.jpg", "banana", "ann")
        session.commit()
        assert next_to_review(session, "job1")["path"] == "/f/banana.jpg"
    add_job(sessions, "job2", ROWS)
    out = io.StringIO()
    assert main(["job2", "--database-url", url_of(sessions)], out=out) == 0
    lines = [x for x in out.getvalue().splitlines() if x.startswith("  0.")]
    assert lines[0] == "  0.620  unknown  /f/tomato.jpg  [apple 0.62, banana 0.19, cherry 0.19]"
    assert "unknown" not in lines[2] and "/f/banana.jpg" in lines[2]


def test_reused_rows_carry_the_flag(sessions):
    """Reuse by content hash copies the verdict: the same bytes and model give the same answer."""
    add_job(sessions, "job1", [{**r, "content_hash": f"h{i}"} for i, r in enumerate(ROWS)])
    with sessions() as session:
        found = crud.reusable_results(session=session, model_version="v-old", hashes=["h0", "h2", "h5"])
    assert set(found) == {"h0", "h2"}  # h5 is the error row: never reused
    assert (found["h0"]["unknown"], found["h0"]["unknown_score"], found["h0"]["label"]) == (True, 41.5, "banana")
    assert (found["h2"]["unknown"], found["h2"]["unknown_score"]) == (False, 3.5)


def test_resubmitted_folder_reuses_the_flag(sessions, tmp_path, good_images, shipped_bundle):
    """`jobs.submit` on files already classified: every row reused, flags and scores as the first job had them."""
    from sqlalchemy import select

    from db.content_hash import hash_files
    from db.models import Job, Prediction
    from jobs.submit import submit_folder
    from model.bundle import BundleConfig

    images = good_images(3, "again")
    version = BundleConfig.read(shipped_bundle).model_version
    first = [row(str(p), "apple", 0.8, h, unknown=i == 0, unknown_score=[50.0, 2.0, None][i])
             for i, (p, h) in enumerate(zip(images, hash_files(images), strict=True))]
    add_job(sessions, "first", first, version=version)
    sent = []

    class Recording:  # a broker that keeps what it is asked to send
        def send_chunks(self, *args, **_kw) -> None:
            sent.append(args)

    job_id = submit_folder(tmp_path / "again", model_dir=shipped_bundle, database_url=url_of(sessions),
                           broker=Recording(), chunk_size=64, check_broker=False)
    assert sent == []  # nothing left to compute
    with sessions() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()
        job = session.get(Job, job_id)
    assert (job.status, job.reused, len(rows)) == ("done", 3, 3) and all(r.reused for r in rows)
    by_hash = {r.content_hash: (r.unknown, r.unknown_score) for r in rows}
    assert by_hash == {r["content_hash"]: (r["unknown"], r["unknown_score"]) for r in first}


def test_submit_summary_and_fleet_status_count_unknown(sessions):
    from jobs.fleet import running_jobs, status_line
    from jobs.progress import print_summary

    add_job(sessions, "job1", ROWS)
    out = io.StringIO()
    print_summary("job1", database_url=url_of(sessions), out=out)
    text = out.getvalue()
    assert "unknown (none of the model's classes) 2" in text
    assert "(unknown)" in text and "python -m db.report job1 --unknown" in text

    with sessions() as session, session.begin():  # a job still running: 6 of 10 rows
        crud.create_job(session=session, job_id="job2", folder="/f", recursive=False, model_dir="/m",
                        model_version="v-old", total=10)
        crud.insert_predictions(session=session, rows=[{**r, "job_id": "job2", "model_version": "v-old"}
                                                       for r in ROWS])
        crud.refresh_job(session=session, job_id="job2")
    jobs = running_jobs(database_url=url_of(sessions))
    assert [(j["job_id"], j["unknown"]) for j in jobs] == [("job2", 2)]
    line = status_line({"workers": [], "queue": {"queued": 0, "in_flight": 0}, "jobs": jobs, "db_error": None})
    assert "job job2 running: 6/10 (60%)" in line and line.endswith(", 2 unknown")
