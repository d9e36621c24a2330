"""End to end in a real headless Chromium (Debian's package, driven by Playwright): upload a photo, read the labels."""

from __future__ import annotations

import os

import pytest

from tests.demo_server import CHROMIUM, CHROMIUM_ARGS, running_demo
from tests.imagegen import write_good_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/services.sh installs it)"),
]


def test_upload_a_photo_and_see_the_labels(tiny_bundle, tiny_classifier, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, _ = running_demo(tiny_bundle)
    photo = write_good_images(tmp_path / "in", 1)[0]
    expected = tiny_classifier.predict([photo], top_k=5)[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            labels = page.locator("#labels")
            for name, _ in expected.top_k:
                expect(labels).to_contain_text(name, timeout=60_000)
            expect(page.locator("#verdict")).to_contain_text(expected.label, timeout=60_000)
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
