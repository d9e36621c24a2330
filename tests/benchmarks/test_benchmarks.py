"""benchmarks/: each benchmark's CLI starts from the checkout, and the package stays out of the installed
distribution and the Docker image (they are measurements, not shipped code). The tests run the benchmarks as the
Makefile does, in a subprocess, and import nothing from them (nor they from the tests)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_benchmarks_run_from_the_checkout_and_stay_out_of_the_package_and_image():
    import tomllib

    assert "benchmarks" in (ROOT / ".dockerignore").read_text().split()
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert not any(name.startswith("benchmarks") for name in include["include"])
    makefile = (ROOT / "Makefile").read_text()
    for module in ("benchmarks.batch", "benchmarks.demo", "benchmarks.demo_screenshot", "benchmarks.gpu",
                   "benchmarks.compose_check", "benchmarks.space_check", "benchmarks.teach_curve",
                   "benchmarks.object_store"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
        assert module == "benchmarks.demo_screenshot" or f"-m {module}" in makefile


def _imports(path) -> list[str]:
    tree = ast.parse(path.read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return imported + [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]


def test_benchmarks_and_tests_import_nothing_from_each_other():
    for path in (ROOT / "benchmarks").glob("*.py"):
        assert not [m for m in _imports(path) if m.split(".")[0] == "tests"], path.name
    for path in (ROOT / "tests").rglob("*.py"):
        assert not [m for m in _imports(path) if m.split(".")[0] == "benchmarks"], path.relative_to(ROOT)


def test_the_repository_is_a_space_as_it_stands(tmp_path):
    """`make space-check`'s first step (`--files-only`): the files a push sends, copied, hold the app, and the
    README's front matter names the pinned Gradio, this Python and demo.py; model.keras is the real file."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.space_check", "--files-only", "--keep"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    kept = re.search(r"kept (\S+)", done.stdout)
    try:
        assert done.returncode == 0 and "space-check passed" in done.stdout, done.stdout + done.stderr
        app = ROOT / kept[1] / "app"
        for name in ("demo.py", "requirements.txt", "webui/upload.py", "model/fruits-densenet121/model.keras"):
            assert (app / name).read_bytes() == (ROOT / name).read_bytes(), name
        assert not (app / ".venv").exists() and not (app / ".git").exists()  # ignored and git's own: not pushed
    finally:
        if kept:
            shutil.rmtree(kept[1], ignore_errors=True)


@pytest.mark.slow
def test_bench_batch_measures_the_three_paths_on_a_tiny_network():
    """`make bench-batch` at the smallest sizes: a fresh DenseNet121 at 32 px, 8 photos through the forward pass of
    every runtime, the folder-to-database pipeline (in this process: no broker needed) and the per-image loop.
    The benchmark itself asserts that every image got its row; here, that each figure is printed and positive and
    that the ratios are the figures' own."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.batch", "--images", "8", "--input-size", "32",
                           "--batch-size", "4", "--chunk-size", "4", "--pipeline", "inline"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert "32px" in out, out
    forward = {name: float(v) for name, v in re.findall(r"forward (\w+) +([\d.]+) img/s", out)}
    pipeline = re.findall(r"pipeline \((\w+)\) +([\d.]+) img/s", out)
    naive = re.findall(r"naive .*?([\d.]+) img/s", out)
    assert "tf" in forward and pipeline and naive, out
    assert all(v > 0 for v in forward.values()) and all(float(v) > 0 for _, v in pipeline + [("", n) for n in naive])
    # Per photo size, the pipeline against the forward pass measured around it (benchmarks/photos.py).
    sizes = re.findall(r"(\w+ photos): \d+ JPEGs.*? forward ([\d.]+) img/s\n +pipeline \((\w+)\) +([\d.]+) img/s on "
                       r"\1: pipeline/forward ([\d.]+)x", out)
    assert [size[0] for size in sizes] == ["small photos", "phone photos"], out
    for _, around, runtime, rate, ratio in sizes:
        assert runtime in forward and float(ratio) == pytest.approx(float(rate) / float(around), abs=0.01), out
    assert re.search(r"pipeline/forward\(\w+\): small photos [\d.]+x, phone photos [\d.]+x", out), out


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


def test_bench_s3_lists_and_submits_a_prefix_of_small_objects():
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    from tests.helpers.processes import TEST_REDIS_URL
    from worker.broker import RedisBroker

    if not RedisBroker(TEST_REDIS_URL).available():
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL} (make services starts it)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": TEST_REDIS_URL}
    done = subprocess.run([sys.executable, "-m", "benchmarks.object_store", "--images", "0", "--objects", "50"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"submit 50 objects: [\d.]+ s .* peak RSS \d+ MB", done.stdout), done.stdout
