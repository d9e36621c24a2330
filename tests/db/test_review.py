"""Reviews (issue 11): the migration up and down, the query functions, `python -m db.review` and the report's
reviewed labels, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import getpass
import io
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from db.models import Review
from db.reviews import (
    NONE_OF_THESE,
    ReviewError,
    next_to_review,
    review_progress,
    reviewed_accuracy,
    set_review,
    to_review,
    with_reviews,
)
from tests.helpers.databases import add_job, alembic_command, row

ROWS = [
    row("/f/a.jpg", "apple", 0.9),
    row("/f/b.jpg", "banana", 0.3),
    row("/f/c.jpg", "apple", 0.55),
    row("/f/d.jpg", "cherry", 0.42),
    row("/f/bad.jpg", None, None, error="cannot identify image file"),
]


def _count_reviews(factory) -> int:
    with factory() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Review))


def test_migration_up_down_up(empty_database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config, current_revision, upgrade
    from db.models import Base
    from db.session import get_engine, session_factory

    url = empty_database_url
    upgrade(url)  # what every entry point does
    engine = get_engine(url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0006"  # job_files.source_key, the newest revision
    assert current_revision(url) == head and "reviews" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    add_job(session_factory(url), "job1", ROWS)
    with session_factory(url)() as session:
        set_review(session, "job1", "/f/b.jpg", "apple", "ann")
        session.commit()

    alembic_command(url, "downgrade", "0002")
    assert current_revision(url) == "0002"
    tables = sa.inspect(engine).get_table_names()
    assert "reviews" not in tables and {"jobs", "predictions", "job_files"} <= set(tables)
    alembic_command(url, "upgrade", "head")
    assert current_revision(url) == head and "reviews" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:  # the results outlived the round trip; the reviews went with their table
        assert conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar() == len(ROWS)
        assert conn.execute(sa.text("SELECT count(*) FROM reviews")).scalar() == 0


def test_migration_0005_keeps_every_result_and_review(empty_database_url):
    """0005 adds the heal columns in place: rebuilding `jobs` on SQLite would cascade-delete its predictions."""
    from db.migrate import upgrade
    from db.session import get_engine

    url = empty_database_url
    upgrade(url, "0004")
    engine = get_engine(url)
    with engine.begin() as conn:
        for sql in ["INSERT INTO models (version, labels, input_size, source, card, created_at) "
                    "VALUES ('v', '[]', 32, '', '{}', '2026-01-01')",
                    "INSERT INTO jobs (id, folder, recursive, model_dir, model_version, status, total, done, errors, "
                    "reused, skipped, chunks, created_at) VALUES ('j', '/f', false, '/m', 'v', 'done', 1, 1, 0, 0, 0, "
                    "1, '2026-01-01')",
                    "INSERT INTO predictions (id, job_id, path, model_version, reused, created_at) "
                    "VALUES (1, 'j', '/f/a.jpg', 'v', false, '2026-01-01')",
                    "INSERT INTO reviews (job_id, path, prediction_id, reviewer, reviewed_at) "
                    "VALUES ('j', '/f/a.jpg', 1, 'ann', '2026-01-01')"]:
            conn.exec_driver_sql(sql)

    def kept() -> tuple:
        with engine.connect() as conn:
            return tuple(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in ("predictions", "reviews"))

    upgrade(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT heals, healed_at FROM jobs").one() == (0, None)
    assert kept() == (1, 1)
    alembic_command(url, "downgrade", "0004")
    assert kept() == (1, 1)


def test_queue_progress_accuracy_and_re_review(sessions):
    add_job(sessions, "job1", ROWS)
    with sessions() as session:
        assert [r["path"] for r in to_review(session, "job1")] == ["/f/b.jpg", "/f/d.jpg", "/f/c.jpg", "/f/a.jpg"]
        first = next_to_review(session, "job1")
        assert first["path"] == "/f/b.jpg" and first["top_k"][0] == ["banana", 0.3] and len(first["top_k"]) == 3
        assert review_progress(session, "job1")["text"] == "0 of 4 reviewed"  # the error row is not reviewable

        assert set_review(session, "job1", "/f/b.jpg", "apple", "ann")["agrees"] is False
        assert set_review(session, "job1", "/f/d.jpg", "cherry", "bob")["agrees"] is True
        skipped = set_review(session, "job1", "/f/c.jpg", None, "ann")
        assert skipped["none_of_these"] and skipped["reviewed_label"] is None
        session.commit()
    with sessions() as session:
        progress = review_progress(session, "job1")
        assert (progress["reviewed"], progress["total"], progress["remaining"]) == (3, 4, 1)
        assert progress["text"] == "3 of 4 reviewed"
        assert next_to_review(session, "job1")["path"] == "/f/a.jpg"
        acc = reviewed_accuracy(session, "job1")
        assert (acc["reviewed"], acc["labelled"], acc["right"], acc["none_of_these"]) == (3, 2, 1, 1)
        assert acc["text"] == "right on 1 of 2 reviewed (1 more marked none of these)"
        assert acc["accuracy"] == pytest.approx(0.5)

        # Reviewing again replaces the review: same row count, new label and reviewer.
        set_review(session, "job1", "/f/b.jpg", "banana", "carl")
        session.commit()
    assert _count_reviews(sessions) == 3
    with sessions() as session:
        acc = reviewed_accuracy(session, "job1")
        assert (acc["right"], acc["labelled"]) == (2, 2)
        rows = {r["path"]: r for r in with_reviews(session, "job1", [{"path": r["path"]} for r in ROWS])}
        assert rows["/f/b.jpg"]["reviewed_label"] == "banana" and rows["/f/b.jpg"]["reviewer"] == "carl"
        assert rows["/f/c.jpg"]["reviewed_label"] == NONE_OF_THESE
        assert rows["/f/a.jpg"]["reviewed_label"] is None and rows["/f/a.jpg"]["reviewer"] is None
        set_review(session, "job1", "/f/a.jpg", "apple", "ann")
        session.commit()
        assert next_to_review(session, "job1") is None


def test_bad_reviews_are_refused_and_write_nothing(sessions):
    add_job(sessions, "job1", ROWS)
    with sessions() as session:
        with pytest.raises(ReviewError, match=r"'kiwi' is not a label of model v-old; choose one of: apple, banana, "
                                              r"cherry"):
            set_review(session, "job1", "/f/b.jpg", "kiwi", "ann")
        with pytest.raises(ReviewError, match=r"no image 'b\.jpg' in job job1 .*did you mean /f/b\.jpg\?"):
            set_review(session, "job1", "b.jpg", "apple", "ann")
        with pytest.raises(ReviewError, match="no image '/g/zzz.jpg'.*python -m db.review job1 lists"):
            set_review(session, "job1", "/g/zzz.jpg", "apple", "ann")
        with pytest.raises(ReviewError, match="was not classified"):
            set_review(session, "job1", "/f/bad.jpg", "apple", "ann")
        with pytest.raises(ReviewError, match="reviewer"):
            set_review(session, "job1", "/f/b.jpg", "apple", "  ")
        with pytest.raises(LookupError):
            set_review(session, "nojob", "/f/b.jpg", "apple", "ann")
        session.commit()
    assert _count_reviews(sessions) == 0


def test_review_cli(sessions, database_url, fails):
    from db.review import main

    url = database_url
    add_job(sessions, "job1", ROWS)
    out = io.StringIO()
    assert main(["job1", "--limit", "2", "--database-url", url], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "job job1: 0 of 4 reviewed; model right on 0 of 0 reviewed"
    assert lines[2].split()[:2] == ["0.300", "/f/b.jpg"] and lines[3].split()[:2] == ["0.420", "/f/d.jpg"]
    assert len(lines) == 5  # header, 2 images, the hint

    out = io.StringIO()
    assert main(["job", "--set", "/f/b.jpg", "apple", "--by", "ann", "--database-url", url], out=out) == 0
    assert "apple (corrects the model's banana at 0.300), by ann" in out.getvalue()
    assert "1 of 4 reviewed; next: /f/d.jpg" in out.getvalue()
    out = io.StringIO()
    assert main(["job1", "--skip", "/f/d.jpg", "--database-url", url], out=out) == 0  # reviewer: the OS user
    assert f"none of these (corrects the model's cherry at 0.420), by {getpass.getuser()}" in out.getvalue()

    assert "'Apple' is not a label of model v-old; choose one of: apple, banana, cherry" in fails(
        main, ["job1", "--set", "/f/c.jpg", "Apple", "--database-url", url])
    assert "no image '/nope.jpg' in job job1" in fails(main, ["job1", "--set", "/nope.jpg", "apple",
                                                             "--database-url", url])
    assert "no job with id 'nojob'" in fails(main, ["nojob", "--database-url", url])
    with pytest.raises(SystemExit) as exc:
        main(["job1", "--set", "/f/c.jpg", "apple", "--skip", "/f/c.jpg", "--database-url", url])
    assert exc.value.code == 2
    with sessions() as session:
        reviews = {r.path: (r.reviewed_label, r.reviewer) for r in session.scalars(sa.select(Review))}
    assert reviews == {"/f/b.jpg": ("apple", "ann"), "/f/d.jpg": (None, getpass.getuser())}


def test_report_shows_reviewed_labels_and_accuracy(sessions, database_url):
    from db.report import main

    url = database_url
    add_job(sessions, "job1", ROWS)
    with sessions() as session:
        when = datetime(2025, 12, 1, tzinfo=UTC)
        set_review(session, "job1", "/f/b.jpg", "apple", "ann", when=when)
        set_review(session, "job1", "/f/a.jpg", "apple", "ann", when=when)
        set_review(session, "job1", "/f/d.jpg", None, "ann", when=when)
        session.commit()

    out = io.StringIO()
    assert main(["job1", "--database-url", url], out=out) == 0
    text = out.getvalue()
    assert "review: 3 of 4 reviewed; model right on 1 of 2 reviewed (1 more marked none of these)" in text
    line = next(x for x in text.splitlines() if x.startswith("/f/b.jpg"))
    assert line.split()[:3] == ["/f/b.jpg", "banana", "apple"]  # the model's label, then the reviewer's

    out = io.StringIO()
    assert main(["job1", "--format", "csv", "--database-url", url], out=out) == 0
    by_path = {r["path"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert [by_path[p]["reviewed_label"] for p in ("/f/a.jpg", "/f/b.jpg", "/f/c.jpg", "/f/d.jpg", "/f/bad.jpg")] \
        == ["apple", "apple", "", NONE_OF_THESE, ""]

    out = io.StringIO()
    assert main(["job1", "--format", "json", "--database-url", url], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["summary"]["review"]["accuracy"]["right"] == 1
    assert data["summary"]["review"]["progress"]["reviewed"] == 3
    assert {p["path"]: p["reviewer"] for p in data["predictions"]}["/f/b.jpg"] == "ann"
