"""The Review and Compare views through the running demo's HTTP API (gradio_client), on a SQLite results database
with jobs fabricated on real image files; the demo runs with a login, so reviews carry the user's name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from PIL import Image

from db.models import Review
from db.reviews import NONE_OF_THESE, set_review
from tests.demo.reviewapp import add_photo_job, real_files, start_demo
from tests.helpers.databases import migrated_sessions, url_of

pytestmark = pytest.mark.slow

USER = ("ann", "s3cret-pass")
# Job A: the model's labels and confidences on five files; the review walks them lowest confidence first.
LABELS_A = ["apple", "banana", "apple", "cherry", "banana"]
CONFIDENCES = [0.9, 0.3, 0.55, 0.42, 0.8]
LABELS_B = ["apple", "apple", "banana", "cherry", "banana"]  # job B, a new model on the same files: two changed


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review-api")
    sessions_gen = migrated_sessions("sqlite", tmp)
    sessions = next(sessions_gen)
    files = real_files(tmp / "photos", CONFIDENCES)
    add_photo_job(sessions, "job-a", files, LABELS_A, CONFIDENCES)
    add_photo_job(sessions, "job-b", files, LABELS_B, [0.7] * 5, version="v-new")
    demo = start_demo(url_of(sessions), tmp / "photos", tmp, auth=USER)
    yield demo, sessions, files
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    # Files download as a plain client's would: nothing in the answers but the image may look like a file.
    return Client(served[0].url, auth=USER, verbose=False)


def _reviews(sessions) -> dict[str, tuple[str | None, str]]:
    with sessions() as session:
        return {r.path: (r.reviewed_label, r.reviewer) for r in session.scalars(sa.select(Review))}


def test_review_walks_the_job_lowest_confidence_first(served, client):
    _, sessions, files = served
    image, path, status, item = client.predict("job-a", api_name="/review_next")
    assert path == str(files[1]) and item["file"] == path  # 0.30, the least sure
    assert item["top_k"][0] == ["banana", 0.3] and len(item["top_k"]) == 3
    assert item["labels"] == ["apple", "banana", "cherry"]
    assert "0 of 5 reviewed" in status and "banana** at 30%" in status
    with Image.open(image) as shown, Image.open(files[1]) as source:  # the image itself, for display
        assert shown.size == source.size

    # A correction: stored under the login name; the next image is the next least sure (0.42).
    image, path, status, item = client.predict("job-a", str(files[1]), "apple", api_name="/review_set")
    assert path == str(files[3]) and item["reviewed"] == 1 and item["progress"] == "1 of 5 reviewed"
    assert "right on 0 of 1 reviewed" in status and "corrects the model's banana" in status
    assert item["last"]["reviewed_label"] == "apple" and item["last"]["reviewer"] == "ann"
    # None of these / skip.
    _, path, status, item = client.predict("job-a", str(files[3]), NONE_OF_THESE, api_name="/review_set")
    assert path == str(files[2]) and "2 of 5 reviewed" in status
    # Reviewing an image again replaces its review: progress stays, accuracy follows.
    _, path, status, item = client.predict("job-a", str(files[1]), "banana", api_name="/review_set")
    assert path == str(files[2]) and item["progress"] == "2 of 5 reviewed"
    assert item["accuracy"] == "right on 1 of 1 reviewed (1 more marked none of these)"
    assert _reviews(sessions) == {str(files[1]): ("banana", "ann"), str(files[3]): (None, "ann")}


def test_bad_reviews_are_clear_errors_and_write_nothing(served, client):
    from gradio_client.exceptions import AppError

    _, sessions, files = served
    before = _reviews(sessions)
    with pytest.raises(AppError, match=r"'kiwi' is not a label of model v-old; choose one of: apple, banana, cherry"):
        client.predict("job-a", str(files[0]), "kiwi", api_name="/review_set")
    with pytest.raises(AppError, match=rf"no image '/nope/{files[0].name}' in job job-a .*did you mean {files[0]}"):
        client.predict("job-a", f"/nope/{files[0].name}", "apple", api_name="/review_set")
    with pytest.raises(AppError, match="no job with id 'job-zzz'"):
        client.predict("job-zzz", api_name="/review_next")
    with pytest.raises(AppError, match="Pick a label"):
        client.predict("job-a", str(files[0]), None, api_name="/review_set")
    with pytest.raises(AppError, match="Enter a job id"):
        client.predict("  ", api_name="/review_next")
    assert _reviews(sessions) == before


def test_compare_two_jobs_shows_the_known_differences(served, client):
    _, sessions, files = served
    later = datetime.now(UTC) + timedelta(days=1)
    with sessions() as session:  # reviews of both changed images, later than job A's: model B is right on both
        set_review(session, "job-b", str(files[1]), "apple", "bob", when=later)
        set_review(session, "job-b", str(files[2]), "banana", "bob", when=later)
        session.commit()
    summary, transitions, changes = client.predict("job-a", "job-b", api_name="/compare_jobs")
    assert "**2 of 5 matched images changed label**" in summary and "0 only in A, 0 only in B" in summary
    assert "model `v-old`" in summary and "model `v-new`" in summary
    assert ("on 2 reviewed images the reviewer agrees with A (v-old) on 0 and with B (v-new) on 2: "
            "B (v-new) agrees more") in summary
    assert transitions["data"] == [["apple", "banana", 1], ["banana", "apple", 1]]
    rows = {r[6]: r for r in changes["data"]}
    assert set(rows) == {str(files[1]), str(files[2])}
    assert rows[str(files[1])][1:6] == ["banana", 0.3, "apple", 0.7, "apple"]
    assert rows[str(files[2])][1:6] == ["apple", 0.55, "banana", 0.7, "banana"]
    assert all(r[0].startswith('<img src="data:image/jpeg;base64,') for r in changes["data"])  # thumbnails

    summary, transitions, changes = client.predict("job-a", "job-a", api_name="/compare_jobs")
    assert "**0 of 5 matched images changed label**" in summary and not changes["data"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="no job with id 'nope'"):
        client.predict("job-a", "nope", api_name="/compare_jobs")
    with pytest.raises(AppError, match="Pick two jobs"):
        client.predict("job-a", "", api_name="/compare_jobs")


def test_all_reviewed_says_so(served, client):
    _, path, _, item = client.predict("job-b", api_name="/review_next")
    for _ in range(5):  # accept the model's label until none is left
        if not path:
            break
        _, path, _, item = client.predict("job-b", path, item["label"], api_name="/review_set")
    image, path, status, item = client.predict("job-b", api_name="/review_next")
    assert image is None and path == "" and item["file"] is None
    assert "5 of 5 reviewed" in status and "All classified images of this job are reviewed" in status
