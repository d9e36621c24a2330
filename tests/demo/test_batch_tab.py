"""The Batch tab's handlers without a server: the timer's poll shows a job's results once it finishes, and the
"Images per label" chart's axis starts at zero."""

from __future__ import annotations

import gradio as gr
import pytest

from tests.demo.reviewapp import add_photo_job, finish_job, real_files
from tests.helpers.databases import migrated_sessions, url_of
from webui.batch import BatchTab


@pytest.fixture
def sessions(tmp_path):
    yield from migrated_sessions("sqlite", tmp_path)


def _settings(sessions, tmp_path):
    from settings import Settings

    return Settings(database_url=url_of(sessions), demo_allowed_roots=str(tmp_path))


def test_poll_shows_the_results_once_the_job_finishes(sessions, tmp_path):
    files = real_files(tmp_path / "photos", [0.5, 0.6, 0.7])
    add_photo_job(sessions, "job1", files[:2], ["apple", "banana"], [0.5, 0.6], total=3)
    tab = BatchTab(tmp_path / "no-model", _settings(sessions, tmp_path))

    text, timer, *results = tab.poll("job1")
    assert "running**, 2 of 3 images" in text and timer.active is True
    assert results == [gr.skip()] * 5  # the page keeps what it shows until the job ends

    finish_job(sessions, "job1", files[2], "banana", 0.7)
    text, timer, summary, table, labels, _, csv_path = tab.poll("job1")
    assert "done**, 3 of 3 images" in text and timer.active is False
    assert "done**" in summary and [row[1] for row in table] == ["apple", "banana", "banana"]
    assert dict(zip(labels["label"], labels["images"], strict=True)) == {"banana": 2, "apple": 1}
    assert csv_path.endswith("job-job1.csv")

    text, timer, *results = tab.poll("nojob")
    assert "no job with id 'nojob'" in text and timer.active is False and results == [gr.skip()] * 5
    text, timer, *results = tab.show("job1")  # the button shows results in any case
    assert "done**" in results[0]


def test_bar_charts_start_at_zero(sessions, tmp_path):
    """Gradio's plots do not include zero by themselves: with counts of 1 and up the axis began at 1, and a label
    with one image had no bar. The frontend takes the axis minimum from `y_lim[0]`."""
    import demo

    app = demo.build_demo(tmp_path / "no-model", settings=_settings(sessions, tmp_path))
    plots = {c["props"]["title"]: c["props"] for c in app.get_config_file()["components"]
             if c["type"] == "nativeplot"}
    assert plots["Images per label"]["y_lim"] == [0, None]
    assert plots["Confidence histogram"]["y_lim"] == [0, None]
