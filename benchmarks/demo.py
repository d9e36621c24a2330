"""Benchmark the demo: HTTP latency vs the bare model call, and batched vs unbatched throughput (not a test).

    python -m benchmarks.demo [--model BUNDLE | --small [--input-size 224]] [--clients 8] [--per-client 20]

Starts `demo.py` twice in subprocesses on free ports (batched: --max-batch-size 8; unbatched: 1) and measures
  * single-request p50 latency through the HTTP API against the bare call in this process on the same image:
    `/predict` (top-k) against `Classifier.predict([path])`, `/classify` (top-k + Grad-CAM overlay, what the page
    shows) against `Explainer.predict([path])`; over plain REST (queued and direct) and gradio_client;
  * images/s with N concurrent queued REST clients, batched vs unbatched, for both endpoints;
  * the forward pass's own batch-8 vs batch-1 speed-up: no server can gain more than that from batching.
`--small` benchmarks an untrained DenseNet121 at 64x64 with 21 classes (the shipped model's shape), built in a
temporary folder, so it runs before the fruit model exists. Targets: p50 <= 1.3x bare; batched >= 2x unbatched.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import free_port, fresh_bundle
from settings import ROOT, get_settings

IMAGE = next(iter(sorted((ROOT / "examples" / "apple").glob("*.jpg"))), None)


def p50(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_p50(bare, served, n: int, warmup: int = 3) -> tuple[float, float]:
    """p50 of two calls timed alternately, so both see the same moments of a shared, noisy machine."""
    for _ in range(warmup):
        bare()
        served()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for fn, out in ((bare, times[0]), (served, times[1])):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


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


class RestClient:
    """A lean client of Gradio's plain REST API (httpx, kept-alive, one session like the JS and Python clients
    keep): `queued` = upload + POST /call + read the SSE result (batched with other users); `direct` = one
    POST /run with the image inline as a data URL (skips the queue, so it is never batched)."""

    def __init__(self, url: str, image: Path):
        import httpx

        self.url, self.image = url, image
        self.http = httpx.Client(timeout=120)
        self.session = uuid.uuid4().hex
        self.data_url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()

    def file_data(self, upload: bool) -> dict:
        """The image as Gradio FileData: uploaded first (what gradio_client does), or inline as a data URL."""
        if not upload:
            return {"path": None, "url": self.data_url, "orig_name": self.image.name,
                    "meta": {"_type": "gradio.FileData"}}
        with open(self.image, "rb") as f:
            path = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (self.image.name, f)}).json()[0]
        return {"path": path, "orig_name": self.image.name, "meta": {"_type": "gradio.FileData"}}

    def queued(self, api: str, upload: bool = True) -> list:
        body = {"data": [self.file_data(upload)], "session_hash": self.session}
        event_id = self.http.post(f"{self.url}/gradio_api/call/{api}", json=body).json()["event_id"]
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{api}/{event_id}") as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(line)
                    return json.loads(line[5:])
        raise RuntimeError("no result")

    def direct(self, api: str) -> list:
        body = {"data": [self.file_data(upload=False)], "session_hash": self.session}
        reply = self.http.post(f"{self.url}/gradio_api/run/{api}", json=body)
        reply.raise_for_status()
        return reply.json()["data"]

    def close(self) -> None:
        self.http.close()


def throughput(url: str, api: str, clients: int, per_client: int, image: Path) -> float:
    """Images/s with `clients` concurrent queued REST clients sending the image inline (lean httpx ones:
    gradio_client's own overhead per call, threads and polling, would otherwise be what is measured)."""
    pool = [RestClient(url, image) for _ in range(clients)]

    def run(client: RestClient) -> None:
        for _ in range(per_client):
            client.queued(api, upload=False)

    for client in pool:  # warm-up: every connection once
        client.queued(api, upload=False)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(run, pool))
    elapsed = time.perf_counter() - start
    for client in pool:
        client.close()
    return clients * per_client / elapsed


def latencies(url: str, image: Path, requests: int, bare_predict, bare_classify) -> None:
    """p50 of one request at a time through each way into the HTTP API, each timed alternately with its bare call
    (`bare_predict` for `/predict`, `bare_classify` for `/classify`, which also draws the heatmap)."""
    from gradio_client import Client, handle_file

    rest = RestClient(url, image)
    client = Client(url, verbose=False, download_files=False)
    ways = [
        ("/predict, REST direct (POST /run, inline)", lambda: rest.direct("predict"), bare_predict),
        ("/predict, REST queued (upload, call, SSE)", lambda: rest.queued("predict"), bare_predict),
        ("/predict, REST queued (inline, call, SSE)", lambda: rest.queued("predict", upload=False), bare_predict),
        ("/classify, REST queued (upload, call, SSE)", lambda: rest.queued("classify"), bare_classify),
        ("/predict, gradio_client", lambda: client.predict(handle_file(str(image)), api_name="/predict"),
         bare_predict),
    ]
    for name, call, bare in ways:
        base, served = paired_p50(bare, call, requests)
        print(f"HTTP {name:44s} p50 {served * 1000:6.1f} ms vs bare {base * 1000:5.1f} ms = {served / base:.2f}x")
    rest.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="bundle (default: settings.model_dir if present, else --small)")
    p.add_argument("--small", action="store_true", help="an untrained DenseNet121 at --input-size")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--requests", type=int, default=60, help="sequential requests per latency figure")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--per-client", type=int, default=20)
    p.add_argument("--image", type=Path, default=IMAGE)
    args = p.parse_args(argv)

    from model.explain import Explainer
    from model.predict import load_classifier

    model = Path(args.model or get_settings().model_dir)
    if args.small or not (model / "config.json").is_file():
        model = fresh_bundle(Path(tempfile.mkdtemp(prefix="bench-demo-")) / "bundle", args.input_size, classes=21)
    clf = load_classifier(model, **get_settings().classifier_options())
    engine = Explainer(model, **get_settings().classifier_options())
    engine.load()
    def bare_predict() -> None:
        clf.predict([args.image])

    def bare_classify() -> None:
        engine.predict([str(args.image)])

    print(f"model {model} (input {clf.input_size}px, runtime {clf.runtime}), image {args.image.name}")
    print("bare calls: Classifier.predict([path]) for /predict, Explainer.predict([path]) (+ Grad-CAM overlay) for "
          "/classify, in this process")
    # What batching can give at most: the network's own gain from one pass over 8 images instead of 8 passes.
    batch, _ = clf.preprocess([args.image] * args.clients)
    one = p50(lambda: clf.forward(batch[:1]), args.requests)
    many = p50(lambda: clf.forward(batch), args.requests) / len(batch)
    print(f"bare forward: batch 1 {one * 1000:.2f} ms/image, batch {len(batch)} {many * 1000:.2f} ms/image "
          f"= {one / many:.2f}x (the ceiling for any batching speed-up)")

    results = {}
    for mode, batch in (("batched", get_settings().demo_max_batch_size), ("unbatched", 1)):
        with Server(model, batch) as server:
            if mode == "batched":
                latencies(server.url, args.image, args.requests, bare_predict, bare_classify)
            for api in ("predict", "classify"):
                results[mode, api] = throughput(server.url, api, args.clients, args.per_client, args.image)
                print(f"{args.clients} concurrent clients, /{api:8s} {mode:9s} (max_batch_size {batch}) "
                      f"{results[mode, api]:6.1f} images/s")
    for api in ("predict", "classify"):
        print(f"batching speed-up under concurrency, /{api}: "
              f"{results['batched', api] / results['unbatched', api]:.2f}x")


if __name__ == "__main__":
    main()
