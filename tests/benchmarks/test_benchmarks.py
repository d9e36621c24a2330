"""benchmarks/: each benchmark's CLI starts from the checkout, and the package stays out of the installed
distribution and the Docker image (they are measurements, not shipped code)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.helpers import ROOT


def test_benchmarks_run_from_the_checkout_and_stay_out_of_the_package_and_image():
    import tomllib

    assert "benchmarks" in (ROOT / ".dockerignore").read_text().split()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert not any(name.startswith("benchmarks") for name in include["include"])
    makefile = (ROOT / "Makefile").read_text()
    for module in ("benchmarks.batch", "benchmarks.demo", "benchmarks.demo_screenshot", "benchmarks.gpu",
                   "benchmarks.compose_check"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
        assert module == "benchmarks.demo_screenshot" or f"-m {module}" in makefile


def test_benchmarks_import_nothing_from_the_tests():
    for path in (ROOT / "benchmarks").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not [m for m in imported if m.split(".")[0] == "tests"], path.name


def test_bench_gpu_without_a_gpu_says_so_and_exits_2():
    # This machine has no GPU, and CUDA_VISIBLE_DEVICES="" hides one where there is.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no GPU here: TensorFlow lists no GPU" in done.stderr and "CUDAExecutionProvider" in done.stderr
    assert "Traceback" not in done.stderr and "tensorflow[and-cuda]" in done.stderr
    assert done.stdout == ""  # nothing measured


def test_compose_check_without_docker_says_so_and_exits_2(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}  # no docker on this PATH
    done = subprocess.run([sys.executable, "-m", "benchmarks.compose_check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == "compose-check: docker is not installed (Debian: apt-get install docker.io " \
                                  "docker-compose)"
