"""Refresh the README picture: `demo.py` as users start it, one photo uploaded, in Debian's headless Chromium.

    python -m benchmarks.demo_screenshot [--model BUNDLE] [--image PHOTO] [--out docs/demo.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.demo import Server
from settings import ROOT, get_settings

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/services.sh installs it), driven by Playwright
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTO = ROOT / "examples" / "banana" / "grocery__Banana__Banana_001.jpg"  # a real store photo, not a studio shot


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path(get_settings().model_dir))
    p.add_argument("--image", type=Path, default=PHOTO)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png")
    args = p.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    with Server(args.model.resolve(), get_settings().demo_max_batch_size) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(args.image))
            expect(page.locator("#verdict")).to_contain_text("%", timeout=60_000)
            page.wait_for_timeout(1500)  # the heatmap image arrives after the verdict text
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
        finally:
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
