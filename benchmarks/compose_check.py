"""`make compose-check`: the docker-compose stack for real, run as docs/deployment.md runs it (not a test: minutes).

    python -m benchmarks.compose_check [--keep] [--photos N]

On a throw-away project (its own name, volumes and network; host ports on 127.0.0.1 only, free ones):
  1. base images: the ones the Dockerfile and the compose file name; where one is missing and cannot be pulled,
     the stand-ins of ../shared/tools/offline-images/build.sh (OFFLINE_IMAGES_BUILD) are built;
  2. `build`, then `up -d`, then waits until the worker answers `python -m worker.status` and the demo serves;
  3. a folder of real photos (examples/) and bad files, submitted the documented way:
     `IMAGES_DIR=DIR docker compose run --rm submit /data/in --wait`; one row per file, the bad ones as errors,
     checked through `python -m db.report JOB --format json` run inside the stack;
  4. one photo through the demo's HTTP API (gradio_client, with the DEMO_AUTH the stack was started with; a client
     without it is refused);
  5. `up -d --scale worker=2`: a job of generated photos in small chunks, and both workers' logs show chunks done;
  6. docker-compose.host.yml added: Redis and PostgreSQL published, a host-side `python -m worker.submit` whose
     paths and model the workers open at the same paths;
  7. `down -v` (unless --keep), also after a failure.
Uses `docker compose` (v2) or `docker-compose` (1.29), whichever exists. Prints each command and the timings.
The checks are here; finding Docker, the base images, the project and its waits are in compose_stack.py.
Exit 0: every check passed; 1: a check failed; 2: no Docker here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import free_port, write_images
from benchmarks.compose_stack import (
    CheckFailed,
    NoDocker,
    Stack,
    build_and_up,
    compose_program,
    ensure_base_images,
    finished_chunks,
    wait_until,
    workers_online,
)
from settings import ROOT

HOST_OVERRIDE = "docker-compose.host.yml"
BAD_FILES = {"truncated.jpg", "not-an-image.png", "empty.jpg"}


def make_photos(folder: Path) -> set[str]:
    """The example photos (flat, the class in each name) and three bad files; the file names."""
    folder.mkdir(parents=True)
    for photo in sorted(ROOT.glob("examples/*/*.jpg")):
        shutil.copy(photo, folder / f"{photo.parent.name}__{photo.name}")
    real = next(iter(sorted(folder.glob("*.jpg"))))
    (folder / "truncated.jpg").write_bytes(real.read_bytes()[:300])
    (folder / "not-an-image.png").write_text("this is text, not a PNG\n")
    (folder / "empty.jpg").write_bytes(b"")
    return {p.name for p in folder.iterdir() if p.is_file()}


def submitted_job(output: str) -> str:
    """The job id in `worker.submit --wait`'s summary line."""
    match = re.search(r"^job ([0-9a-f]{16}): ", output, flags=re.M)
    if not match:
        raise CheckFailed(f"no job id in the submitter's output:\n{output[-2000:]}")
    return match.group(1)


def report(stack: Stack, job_id: str) -> tuple[dict, list[dict]]:
    data = json.loads(stack.inside("python", "-m", "db.report", job_id, "--format", "json"))
    return data["summary"]["job"], data["predictions"]


def check_rows(stack: Stack, job_id: str, names: set[str], bad: set[str] = frozenset()) -> list[dict]:
    """One row per file of the job, errors exactly on the bad files; the rows."""
    job, rows = report(stack, job_id)
    got = [Path(r["path"]).name for r in rows]
    if sorted(got) != sorted(names):
        raise CheckFailed(f"job {job_id}: {len(rows)} rows for {len(names)} files; missing "
                          f"{sorted(names - set(got))}, extra {sorted(set(got) - names)}")
    errors = {Path(r["path"]).name for r in rows if r["error"]}
    if errors != set(bad) or any(not r["label"] for r in rows if not r["error"]):
        raise CheckFailed(f"job {job_id}: error rows {sorted(errors)}, expected {sorted(bad)}")
    if job["status"] != "done" or job["total"] != len(names):
        raise CheckFailed(f"job {job_id}: {job}")
    return rows


def check_demo(url: str, auth: tuple[str, str], photo: Path) -> str:
    from gradio_client import Client, handle_file

    try:
        Client(url, verbose=False)
    except Exception:  # noqa: BLE001 - refused is what DEMO_AUTH is for; how gradio_client says so varies
        pass
    else:
        raise CheckFailed("the demo answered a client without DEMO_AUTH's credentials")
    label, _heatmap, verdict = Client(url, auth=auth, verbose=False, download_files=False).predict(
        handle_file(str(photo)), api_name="/classify")
    if not label or not label.get("confidences"):
        raise CheckFailed(f"the demo classified nothing: {label!r}, {verdict!r}")
    return label["label"]


def check_documented_submit(stack: Stack, timings: dict[str, float], names: set[str]) -> None:
    start = time.perf_counter()
    out = stack.run("run", "--rm", "submit", "/data/in", "--wait", capture=True)
    timings[f"job ({len(names)} files)"] = time.perf_counter() - start
    job_id = submitted_job(out)
    print(out[out.find(f"job {job_id}: done"):].split("details:")[0].rstrip(), flush=True)  # the summary
    rows = check_rows(stack, job_id, names, BAD_FILES)
    right = sum(Path(r["path"]).name.split("__")[0] == r["label"] for r in rows if not r["error"])
    print(f"job {job_id}: {len(rows)} rows for {len(names)} files, {len(BAD_FILES)} error rows; "
          f"top-1 right on {right} of {len(rows) - len(BAD_FILES)} example photos", flush=True)


def check_two_workers(stack: Stack, timings: dict[str, float], photos: int) -> None:
    stack.run("up", "-d", "--scale", "worker=2")
    wait_until("two workers", lambda: workers_online(stack) >= 2, stack)
    containers = stack.containers("worker")
    before = {c: finished_chunks(c) for c in containers}
    folder = Path(stack.env["IMAGES_DIR"]) / "scale"
    write_images(folder, photos, seed=70_000)
    start = time.perf_counter()
    out = stack.run("run", "--rm", "submit", "/data/in/scale", "--chunk-size", "4", "--wait", capture=True)
    timings[f"job on 2 workers ({photos} images)"] = time.perf_counter() - start
    check_rows(stack, submitted_job(out), {p.name for p in folder.iterdir()})
    took = {c[:12]: finished_chunks(c) - before[c] for c in containers}
    print(f"--scale worker=2: chunks done per worker container {took}", flush=True)
    if len(took) != 2 or min(took.values()) < 1:
        raise CheckFailed(f"both workers should have taken chunks: {took}")


def convert_host_model(timings: dict[str, float]) -> None:
    """The host's model converted to ONNX beside its bundle, as any host run on the default runtime leaves it: the
    workers, which mount that folder read-only, open the conversion instead of making one each (minutes here)."""
    code = "from model import load_classifier; print(load_classifier(runtime='onnx').runtime)"
    print(f'$ python -c "{code}"', flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   timeout=1800)
    timings["host model ready (ONNX)"] = time.perf_counter() - start


def check_host_side_submit(stack: Stack, timings: dict[str, float]) -> None:
    convert_host_model(timings)
    stack.files.append(HOST_OVERRIDE)
    stack.run("up", "-d", "--scale", "worker=2")
    wait_until("the workers after the host override", lambda: workers_online(stack) >= 2, stack)
    folder = Path(stack.env["IMAGES_DIR"]) / "host"
    write_images(folder, 8, seed=80_000)
    urls = {"REDIS_URL": f"redis://127.0.0.1:{stack.env['REDIS_HOST_PORT']}/0",
            "DATABASE_URL": f"postgresql+psycopg://densenet:densenet@127.0.0.1:{stack.env['POSTGRES_HOST_PORT']}"
                            "/densenet"}
    print(f"$ REDIS_URL={urls['REDIS_URL']} DATABASE_URL={urls['DATABASE_URL']} python -m worker.submit "
          f"{folder} --wait", flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "worker.submit", str(folder), "--wait"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **urls}, capture_output=True, text=True,
                          timeout=1800)
    timings["host-side job (8 images)"] = time.perf_counter() - start
    if done.returncode != 0:
        raise CheckFailed(f"host-side submit exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    check_rows(stack, submitted_job(done.stdout), {p.name for p in folder.iterdir()})
    print("host-side submit: 8 rows, no errors", flush=True)


def run_checks(stack: Stack, timings: dict[str, float], photos: int) -> None:
    names = make_photos(Path(stack.env["IMAGES_DIR"]))  # before `up`, which would make a missing one as root
    demo_url = build_and_up(stack, timings)
    check_documented_submit(stack, timings, names)
    photo = ROOT / "examples" / "banana" / "grocery__Banana__Banana_001.jpg"
    start = time.perf_counter()
    label = check_demo(demo_url, tuple(stack.env["DEMO_AUTH"].split(":", 1)), photo)
    timings["demo call"] = time.perf_counter() - start
    print(f"demo /classify on {photo.name} (with DEMO_AUTH): {label}", flush=True)
    check_two_workers(stack, timings, photos)
    check_host_side_submit(stack, timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compose_check", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack up (then: PROJECT down -v)")
    parser.add_argument("--photos", type=int, default=48, help="generated photos of the two-worker job")
    args = parser.parse_args(argv)
    try:
        program = compose_program()
    except NoDocker as exc:
        print(f"compose-check: {exc}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="compose-check-"))
    images = tmp / "photos"
    user = "check"
    env = {**os.environ, "COMPOSE_PROJECT_NAME": f"densenet-check-{secrets.token_hex(3)}",
           "IMAGES_DIR": str(images), "DEMO_AUTH": f"{user}:{secrets.token_urlsafe(12)}",
           "DEMO_BIND": f"127.0.0.1:{free_port()}", "FLOWER_BIND": f"127.0.0.1:{free_port()}",
           "REDIS_HOST_PORT": str(free_port()), "POSTGRES_HOST_PORT": str(free_port()), "PWD": str(ROOT)}
    tmp.chmod(0o755)  # the containers' user (uid 1000) reads the photos through the bind mount
    stack = Stack(program, env)
    timings: dict[str, float] = {}
    print(f"{' '.join(program)}; project {env['COMPOSE_PROJECT_NAME']}; photos in {images}", flush=True)
    ok = False
    try:
        ensure_base_images()
        run_checks(stack, timings, args.photos)
        ok = True
    except (CheckFailed, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"compose-check FAILED: {exc}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"left up: {' '.join(stack.command('down', '-v'))}")
        else:
            stack.files = ["docker-compose.yml", HOST_OVERRIDE]
            stack.run("down", "-v", "--remove-orphans", check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print("compose-check passed" if ok else "compose-check failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
