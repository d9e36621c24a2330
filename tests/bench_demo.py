"""Benchmark the demo: HTTP latency vs the bare model call, and batched vs unbatched throughput (not a test).

    python -m tests.bench_demo [--model BUNDLE | --small] [--requests 20] [--clients 8] [--per-client 6]

Starts `demo.py` twice in subprocesses on free ports (batched: --max-batch-size 8; unbatched: 1) and measures
  * single-request p50 latency through the HTTP API (gradio_client, and the plain REST API with httpx)
    against the bare `Classifier.predict([path])` call on the same image in this process;
  * images/s with N concurrent REST clients, batched vs unbatched.
`--small` benchmarks an untrained DenseNet121 at 64x64 with 21 classes (the shipped model's shape), built in a
temporary folder, so it runs before the fruit model exists. Targets: p50 <= 1.3x bare; batched >= 2x unbatched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from settings import ROOT, get_settings
from tests.demo_server import free_port

IMAGE = next(iter(sorted((ROOT / "examples" / "apple").glob("*.jpg"))), None)


def small_bundle(input_size: int, classes: int) -> Path:
    import keras

    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    keras.utils.set_random_seed(0)
    path = Path(tempfile.mkdtemp(prefix="bench-demo-")) / "bundle"
    labels = [f"class_{i:02d}" for i in range(classes)]
    save_bundle(build_model(classes, input_size, weights=None), path, BundleConfig(labels, input_size))
    return path


def p50(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class Server:
    """`demo.py` in a subprocess, up until the context exits."""

    def __init__(self, model: Path, max_batch_size: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(ROOT / "demo.py"), "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--max-batch-size", str(max_batch_size)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "0"})

    def __enter__(self) -> Server:
        import httpx

        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo.py exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/gradio_api/info", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError("demo.py did not start in 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def rest_call(http, url: str, image: Path) -> list:
    """One classification through the plain REST API: upload, start the call, read its SSE result."""
    with open(image, "rb") as f:
        path = http.post(f"{url}/gradio_api/upload", files={"files": (image.name, f)}).json()[0]
    file_data = {"path": path, "orig_name": image.name, "meta": {"_type": "gradio.FileData"}}
    event_id = http.post(f"{url}/gradio_api/call/classify", json={"data": [file_data]}).json()["event_id"]
    with http.stream("GET", f"{url}/gradio_api/call/classify/{event_id}") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(line)
                return json.loads(line[5:])
    raise RuntimeError("no result")


def throughput(url: str, clients: int, per_client: int, image: Path) -> float:
    """Images/s with `clients` concurrent REST clients (lean httpx ones: gradio_client's own overhead per call,
    threads and 50 ms polling, would otherwise be the bottleneck being measured)."""
    import httpx

    pool = [httpx.Client(timeout=120) for _ in range(clients)]

    def run(http) -> None:
        for _ in range(per_client):
            rest_call(http, url, image)

    for http in pool:  # warm-up: every connection once
        rest_call(http, url, image)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(run, pool))
    elapsed = time.perf_counter() - start
    for http in pool:
        http.close()
    return clients * per_client / elapsed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="bundle (default: settings.model_dir if present, else --small)")
    p.add_argument("--small", action="store_true", help="an untrained DenseNet121 at --input-size")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--requests", type=int, default=20, help="sequential requests per latency figure")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--per-client", type=int, default=6)
    p.add_argument("--image", type=Path, default=IMAGE)
    args = p.parse_args(argv)

    import httpx
    from gradio_client import Client, handle_file

    from model.predict import load_classifier

    model = Path(args.model or get_settings().model_dir)
    if args.small or not (model / "config.json").is_file():
        model = small_bundle(args.input_size, 21)
    clf = load_classifier(model)
    bare = p50(lambda: clf.predict([args.image]), args.requests)
    print(f"model {model} (input {clf.input_size}px), image {args.image.name}")
    print(f"bare Classifier.predict([path])          p50 {bare * 1000:7.1f} ms")

    results = {}
    for name, batch in (("batched", get_settings().demo_max_batch_size), ("unbatched", 1)):
        with Server(model, batch) as server:
            if name == "batched":
                client = Client(server.url, verbose=False, download_files=False)
                api = p50(lambda c=client: c.predict(handle_file(str(args.image)), api_name="/classify"),
                          args.requests)
                with httpx.Client(timeout=60) as http:
                    rest = p50(lambda h=http, u=server.url: rest_call(h, u, args.image), args.requests)
                print(f"HTTP API, gradio_client                  p50 {api * 1000:7.1f} ms  = {api / bare:.2f}x bare")
                print(f"HTTP API, REST (httpx, kept-alive)       p50 {rest * 1000:7.1f} ms  = {rest / bare:.2f}x bare")
            results[name] = throughput(server.url, args.clients, args.per_client, args.image)
            print(f"{args.clients} concurrent clients, {name:9s} (max_batch_size {batch}) "
                  f"{results[name]:6.1f} images/s")
    print(f"batching speed-up under concurrency: {results['batched'] / results['unbatched']:.2f}x")


if __name__ == "__main__":
    main()
