"""benchmarks/: each benchmark's CLI starts from the checkout, and the package stays out of the installed
distribution and the Docker image (they are measurements, not shipped code)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_benchmarks_run_from_the_checkout_and_stay_out_of_the_package_and_image():
    import tomllib

    assert "benchmarks" in (ROOT / ".dockerignore").read_text().split()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert not any(name.startswith("benchmarks") for name in include["include"])
    makefile = (ROOT / "Makefile").read_text()
    for module in ("benchmarks.batch", "benchmarks.demo", "benchmarks.demo_screenshot"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
        assert module == "benchmarks.demo_screenshot" or f"-m {module}" in makefile
