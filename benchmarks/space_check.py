"""`make space-check`: the Hugging Face Space, simulated (not a test: minutes, most of them pip).

    python -m benchmarks.space_check [--keep] [--photos N] [--files-only]

What a Gradio Space does with this repository, in a temporary folder:
  1. the files a push sends (`git ls-files`: tracked and untracked-not-ignored, as they are in the working tree)
     copied into `app/`; the README's front matter checked against what the Space reads (sdk, sdk_version =
     the pinned gradio, python_version, app_file) and model.keras checked to be the real file, not an LFS pointer;
  2. a fresh virtual environment with `pip install -r requirements.txt` only (from the normal index);
  3. `python demo.py` in `app/`, as a Space starts it: SPACE_ID and GRADIO_SERVER_NAME/PORT set, a fresh HOME (no
     caches), no Redis (REDIS_URL points at a closed port), no database configured; then it waits for the page;
  4. through the HTTP API (gradio_client, from this project's venv): one photo through /classify (a label of the
     bundle, a heatmap, a verdict), one upload of several photos through /classify_upload (one row each, none an
     error, a CSV of the same rows), and read-only (SPACE_ID set, no DEMO_AUTH): the write views' line in their
     place, and no /submit_job or /review_set in the API;
  5. the server stopped and the folder removed (unless --keep).
--files-only stops after step 1 (seconds: tests/benchmarks runs it so). Prints each step's time.
Exit 0: every check passed; 1: a check failed; 2: it cannot run here (no git checkout).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE_ID = "space-check/fruit-classifier"
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


class CheckFailed(Exception):
    pass


def step(name: str, started: float, timings: dict[str, float]) -> None:
    timings[name] = time.perf_counter() - started
    print(f"[space-check] {name}: {timings[name]:.1f} s", flush=True)


def check(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pushed_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def copy_app(app: Path) -> None:
    for name in pushed_files():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, app / name)


def check_front_matter(app: Path) -> None:
    """The README's first lines are the Space's configuration; it must name what the checkout really has."""
    text = (app / "README.md").read_text()
    check(text.startswith("---\n"), "README.md must start with the Space's front matter (---)")
    meta = dict(re.findall(r"^(\w+):\s*\"?([^\"\n]*)\"?$", text.split("---", 2)[1], re.M))
    pinned = re.search(r"^gradio==(\S+)$", (app / "requirements.txt").read_text(), re.M)
    check(meta.get("sdk") == "gradio", f"front matter sdk: {meta.get('sdk')!r}, want gradio")
    check(pinned is not None and meta.get("sdk_version") == pinned.group(1),
          f"front matter sdk_version {meta.get('sdk_version')!r} != requirements.txt gradio {pinned and pinned[1]}")
    check(meta.get("app_file") == "demo.py" and (app / "demo.py").is_file(), "front matter app_file: demo.py")
    check(meta.get("python_version") == f"{sys.version_info.major}.{sys.version_info.minor}",
          f"front matter python_version {meta.get('python_version')!r}; this check runs Python "
          f"{sys.version_info.major}.{sys.version_info.minor}")
    model = app / "model" / "fruits-densenet121" / "model.keras"
    check(model.is_file() and not model.read_bytes()[:64].startswith(LFS_POINTER),
          f"{model.relative_to(app)} is missing or a Git LFS pointer: the Space needs the real file")
    print(f"[space-check] front matter: {meta}; model.keras {model.stat().st_size / 1e6:.1f} MB", flush=True)


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CheckFailed(f"demo.py exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise CheckFailed(f"the demo did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def example_photos(app: Path, n: int) -> list[Path]:
    """n photos of different classes from examples/ (one per class folder, in order)."""
    folders = sorted(d for d in (app / "examples").iterdir() if d.is_dir())
    return [sorted(d.glob("*.jpg"))[0] for d in folders[:n]]


def api_checks(url: str, app: Path, n: int, timings: dict[str, float]) -> None:
    import httpx
    from gradio_client import Client, handle_file

    labels = set(json.loads((app / "model/fruits-densenet121/config.json").read_text())["labels"])
    client = Client(url, verbose=False, download_files=False)
    photo, *_ = photos = example_photos(app, n)
    started = time.perf_counter()
    label, heatmap, verdict = client.predict(handle_file(str(photo)), api_name="/classify")
    step("first /classify (one photo)", started, timings)
    check(label["label"] in labels and label["label"] in verdict and heatmap is not None,
          f"/classify gave {label!r}, {verdict!r}, heatmap {heatmap!r}")
    print(f"[space-check] {photo.parent.name}/{photo.name}: {label['label']}; {verdict.splitlines()[0]}")
    started = time.perf_counter()
    summary, table, csv_file = client.predict([handle_file(str(p)) for p in photos], api_name="/classify_upload")
    step(f"/classify_upload ({len(photos)} photos)", started, timings)
    rows = table["data"]
    check([r[1] for r in rows] == [p.name for p in photos], f"upload rows {[r[1] for r in rows]}")
    check(all(r[2] and not r[5] for r in rows), f"an upload row has no label or an error: {rows}")
    check(f"{len(photos)} files, {len(photos)} classified" in summary, f"upload summary: {summary}")
    lines = list(csv.DictReader(io.StringIO(httpx.get(csv_file["url"], timeout=60).text)))
    check([r["file"] for r in lines] == [p.name for p in photos], f"CSV rows: {lines}")
    right = sum(r[2].replace(" ", "_") == p.parent.name for r, p in zip(rows, photos, strict=True))
    print(f"[space-check] upload: {summary}; {right} of {len(photos)} named as their example folder")
    config = httpx.get(f"{url}config", timeout=60).json()
    line = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "writes-off"]
    check(bool(line), "the Space is not read-only: no line in place of the write views")
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    check(not endpoints & {"/submit_job", "/review_set", "/list_jobs"}, f"a Space serves writes: {endpoints}")


def run(args: argparse.Namespace, tmp: Path, timings: dict[str, float]) -> None:
    app, venv, home = tmp / "app", tmp / "venv", tmp / "home"
    app.mkdir()
    home.mkdir()
    started = time.perf_counter()
    copy_app(app)
    check_front_matter(app)
    step("copy the pushed files", started, timings)
    if args.files_only:
        return

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", "-r", "requirements.txt"],
                         cwd=app, env={**os.environ, "HOME": str(home)})
    check(pip.returncode == 0, "pip install -r requirements.txt failed")
    step("fresh venv + pip install -r requirements.txt", started, timings)

    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "SPACE_ID": SPACE_ID,
           "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "LANG": "C.UTF-8"}
    log = tmp / "demo.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        server = subprocess.Popen([str(venv / "bin" / "python"), "demo.py"], cwd=app, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, server, log, timeout=900)
        step("python demo.py until the page answers (model loaded, ONNX conversion on a first start)", started,
             timings)
        api_checks(url, app, args.photos, timings)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"[space-check] demo log (last lines):\n{log.read_text()[-1500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (app, venv, log)")
    p.add_argument("--photos", type=int, default=6, help="photos in the upload (examples of different classes)")
    p.add_argument("--files-only", action="store_true",
                   help="stop after copying the pushed files and checking the front matter (no venv, no server)")
    args = p.parse_args(argv)
    if not (ROOT / ".git").exists():
        print("space-check: needs a git checkout (the files a push sends are `git ls-files`)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="space-check-"))
    timings: dict[str, float] = {}
    try:
        run(args, tmp, timings)
    except CheckFailed as exc:
        print(f"space-check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"[space-check] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("space-check passed: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
