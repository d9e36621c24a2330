"""The Review view and the Batch tab in a real headless Chromium (Debian's package, driven by Playwright): review
three images with the keyboard, and see a job's results appear when it finishes, without a click.

The screenshot of the Review view goes to the test's folder, or to $REVIEW_SCREENSHOT when set
(`REVIEW_SCREENSHOT=docs/review.png pytest tests/demo/test_review_browser.py` redraws the README's picture), so a
test run leaves the checkout as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.models import Review
from demo import EXAMPLES_DIR
from tests.demo.reviewapp import add_photo_job, finish_job, real_files, start_demo
from tests.helpers.databases import migrated_sessions, url_of
from tests.helpers.processes import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/services.sh installs it)"),
]

# Real store photos from examples/ as the fruit model might see them: (class folder, the model's top-5).
SHOTS = [
    ("pear", [["apple", 0.21], ["pear", 0.19], ["nectarine", 0.12], ["peach", 0.10], ["plum", 0.08]]),
    ("lemon", [["lemon", 0.29], ["lime", 0.22], ["satsuma", 0.15], ["orange", 0.11], ["mango", 0.06]]),
    ("banana", [["mango", 0.34], ["banana", 0.31], ["papaya", 0.12], ["lemon", 0.08], ["pineapple", 0.05]]),
    ("apple", [["pear", 0.41], ["apple", 0.33], ["lemon", 0.09], ["nectarine", 0.07], ["peach", 0.04]]),
    ("orange", [["orange", 0.93], ["satsuma", 0.04], ["red_grapefruit", 0.01], ["lemon", 0.01], ["peach", 0.01]]),
]
CONFIDENCES = [top[0][1] for _, top in SHOTS]
FRUITS = sorted(d.name for d in EXAMPLES_DIR.iterdir() if d.is_dir())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    sessions = next(migrated_sessions("sqlite", tmp))
    photos = [sorted((EXAMPLES_DIR / folder).glob("grocery__*"))[0] for folder, _ in SHOTS]
    files = real_files(tmp / "shop", CONFIDENCES, photos)
    add_photo_job(sessions, "shop", files, [top[0][0] for _, top in SHOTS], CONFIDENCES, model_labels=FRUITS,
                  top_k=[top for _, top in SHOTS])
    running = real_files(tmp / "running", [0.5, 0.6, 0.7])
    add_photo_job(sessions, "running", running[:2], ["apple", "lemon"], [0.5, 0.6], model_labels=FRUITS, total=3)
    demo = start_demo(url_of(sessions), tmp, tmp)
    yield demo, sessions, files, running
    demo.close()


@pytest.fixture
def page(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served[0].url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Batch").click()
            yield page
        finally:
            browser.close()


def test_review_three_images_with_the_keyboard(served, page, tmp_path):
    from playwright.sync_api import expect

    _, sessions, files, _ = served
    page.locator("#job-id").get_by_role("textbox").fill("shop")
    page.get_by_role("tab", name="Review").click()  # opening the view loads the least sure image
    path = page.locator("#review-path").get_by_role("textbox")
    status = page.locator("#review-status")
    expect(path).to_have_value(str(files[0]), timeout=30_000)
    expect(status).to_contain_text("0 of 5 reviewed")
    expect(page.locator("#review-pick-2")).to_contain_text("2: pear (19%)")

    page.keyboard.press("2")  # the second of the top-5: a pear, not the model's apple
    expect(status).to_contain_text("1 of 5 reviewed", timeout=30_000)
    expect(path).to_have_value(str(files[1]))
    page.keyboard.press("Enter")  # accept the model's lemon
    expect(status).to_contain_text("2 of 5 reviewed", timeout=30_000)
    expect(path).to_have_value(str(files[2]))
    page.keyboard.press("0")  # none of these / skip
    expect(status).to_contain_text("3 of 5 reviewed", timeout=30_000)
    expect(path).to_have_value(str(files[3]))
    expect(status).to_contain_text("right on 1 of 2 reviewed (1 more marked none of these)")
    expect(page.locator("#review-accept")).to_contain_text("accept pear")

    with sessions() as session:  # by "demo": this demo has no login
        reviews = {r.path: (r.reviewed_label, r.reviewer) for r in session.scalars(sa.select(Review))}
    assert reviews == {str(files[0]): ("pear", "demo"), str(files[1]): ("lemon", "demo"), str(files[2]): (None, "demo")}

    page.locator("#review-image img").wait_for(timeout=30_000)
    shot = Path(os.environ.get("REVIEW_SCREENSHOT") or tmp_path / "review.png")
    page.locator("#review-view").screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000


def test_results_appear_when_the_job_finishes(served, page):
    from playwright.sync_api import expect

    _, sessions, _, running = served
    # This demo has no broker: one line says so, and where to go instead, in place of the folder form.
    expect(page.locator("#batch-unavailable")).to_contain_text("Folder jobs are not available here", timeout=30_000)
    expect(page.locator("#batch-unavailable")).to_contain_text("Upload")
    expect(page.get_by_label("Folder on the server")).to_be_hidden()
    page.locator("#job-id").get_by_role("textbox").fill("running")
    page.get_by_role("button", name="Show results").click()
    summary = page.locator("#job-summary")
    expect(summary).to_contain_text("running", timeout=30_000)
    expect(summary).to_contain_text("2 of 3 images")
    finish_job(sessions, "running", running[2], "lemon", 0.7)  # the last chunk lands; nobody clicks
    expect(summary).to_contain_text("done", timeout=30_000)
    expect(summary).to_contain_text("3 of 3 images")
    expect(page.locator("#job-progress")).to_contain_text("3 of 3 images (100%)")
