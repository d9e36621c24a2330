"""db/: migrations, idempotent writes, job counters and report queries on SQLite and PostgreSQL (no broker)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func, select

from db import crud
from db.models import Base, JobStatus, Prediction

VERSION = "abc123def456"


def _job(session, job_id="job1", total=4):
    crud.upsert_model(session=session, version=VERSION, labels=["apple", "banana"], input_size=32, card={"a": 1})
    crud.upsert_model(session=session, version=VERSION, labels=["apple", "banana"], input_size=32)  # no-op
    return crud.create_job(session=session, job_id=job_id, folder="/f", recursive=False, model_dir="/m",
                           model_version=VERSION, total=total, skipped=1)


def _rows(job_id="job1"):
    return [
        {"job_id": job_id, "path": "/f/a.jpg", "model_version": VERSION, "content_hash": "h1", "label": "apple",
         "confidence": 0.9, "top_k": [["apple", 0.9], ["banana", 0.1]], "error": None},
        {"job_id": job_id, "path": "/f/b.jpg", "model_version": VERSION, "content_hash": "h2", "label": "banana",
         "confidence": 0.3, "top_k": [["banana", 0.3], ["apple", 0.7]], "error": None},
        {"job_id": job_id, "path": "/f/c.jpg", "model_version": VERSION, "content_hash": "h3", "label": "apple",
         "confidence": 0.55, "top_k": [["apple", 0.55], ["banana", 0.45]], "error": None},
        {"job_id": job_id, "path": "/f/bad.jpg", "model_version": VERSION, "content_hash": "h4", "label": None,
         "confidence": None, "top_k": None, "error": "empty file (0 bytes)"},
    ]


def test_migration_matches_models(sessions):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with sessions() as session:
        diffs = compare_metadata(MigrationContext.configure(session.connection()), Base.metadata)
    assert diffs == []


def test_writes_are_idempotent_and_counters_recounted(sessions):
    with sessions() as session, session.begin():
        _job(session)
        crud.insert_predictions(session=session, rows=_rows()[:2])
        job = crud.refresh_job(session=session, job_id="job1")
        assert (job.status, job.done, job.errors) == (JobStatus.RUNNING, 2, 0)
    # A redelivered chunk writes the same rows again, with different values: the first result stays.
    with sessions() as session, session.begin():
        replay = [{**r, "label": "cherry"} for r in _rows()]
        crud.insert_predictions(session=session, rows=replay)
        job = crud.refresh_job(session=session, job_id="job1")
        assert (job.status, job.done, job.errors) == (JobStatus.DONE, 4, 1)
        assert job.finished_at is not None
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 4
        assert session.scalar(select(Prediction.label).where(Prediction.path == "/f/a.jpg")) == "apple"


def test_reusable_results_only_successes_of_same_version(sessions):
    with sessions() as session, session.begin():
        _job(session)
        crud.insert_predictions(session=session, rows=_rows())
    with sessions() as session:
        found = crud.reusable_results(session=session, model_version=VERSION, hashes=["h1", "h4", "zz", None])
        assert set(found) == {"h1"}
        assert found["h1"]["label"] == "apple"
        assert crud.reusable_results(session=session, model_version="other", hashes=["h1"]) == {}


def test_reports(sessions):
    from db.results import find_job, job_predictions, job_summary, list_jobs

    with sessions() as session, session.begin():
        _job(session)
        crud.insert_predictions(session=session, rows=_rows())
        crud.refresh_job(session=session, job_id="job1")
    with sessions() as session:
        jobs = list_jobs(session)
        assert [j["job_id"] for j in jobs] == ["job1"]
        assert jobs[0]["status"] == "done" and jobs[0]["skipped"] == 1
        assert find_job(session, "job").id == "job1"  # unique prefix
        with pytest.raises(LookupError):
            find_job(session, "nope")

        summary = job_summary(session, "job1")
        assert [(r["label"], r["count"]) for r in summary["labels"]] == [("apple", 2), ("banana", 1)]
        assert sum(h["count"] for h in summary["histogram"]) == 3
        assert summary["histogram"][9]["count"] == 1  # 0.9 lands in the last bin
        assert summary["errors"] == [{"path": "/f/bad.jpg", "error": "empty file (0 bytes)"}]
        assert summary["low_confidence_count"] == 1 and summary["low_confidence"][0]["path"] == "/f/b.jpg"

        rows = job_predictions(session, "job1")
        assert [r["path"] for r in rows] == ["/f/bad.jpg", "/f/b.jpg", "/f/c.jpg", "/f/a.jpg"]
        assert [r["path"] for r in job_predictions(session, "job1", min_confidence=0.5)] == ["/f/c.jpg", "/f/a.jpg"]
        assert [r["path"] for r in job_predictions(session, "job1", label="apple", limit=1)] == ["/f/c.jpg"]
        assert rows[1]["top_k"] == [["banana", 0.3], ["apple", 0.7]]


def test_report_cli_formats(sessions, database_url, fails):
    from db.report import main

    url = database_url
    with sessions() as session, session.begin():
        _job(session)
        crud.insert_predictions(session=session, rows=_rows())
        crud.refresh_job(session=session, job_id="job1")

    out = io.StringIO()
    assert main(["job1", "--database-url", url], out=out) == 0
    text = out.getvalue()
    assert "label counts" in text and "empty file (0 bytes)" in text and "/f/a.jpg" in text

    out = io.StringIO()
    assert main(["job1", "--format", "csv", "--min-confidence", "0.5", "--database-url", url], out=out) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["path"] for r in rows] == ["/f/c.jpg", "/f/a.jpg"]

    out = io.StringIO()
    assert main(["job1", "--format", "json", "--label", "banana", "--database-url", url], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["summary"]["job"]["total"] == 4 and [p["path"] for p in data["predictions"]] == ["/f/b.jpg"]

    out = io.StringIO()
    assert main(["--list", "--format", "json", "--database-url", url], out=out) == 0
    assert json.loads(out.getvalue())[0]["job_id"] == "job1"
    assert fails(main, ["missing", "--database-url", url]) == (
        "error: no job with id 'missing' (python -m db.report --list shows the jobs)\n")
