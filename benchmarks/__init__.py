"""Benchmarks, not tests: each prints figures as ratios measured in one run, and says what it compared.

    python -m benchmarks.batch             forward pass per runtime vs folder-to-database pipeline vs per-image loop
    python -m benchmarks.demo              the demo's HTTP latency vs the bare call, batched vs unbatched throughput
    python -m benchmarks.demo_screenshot   the README picture of the running demo
    python -m benchmarks.gpu               the worker path on a GPU: img/s at batch 64 and 128, proof it ran there
    python -m benchmarks.compose_check     docker-compose.yml for real: build, up, jobs, the demo's API, two workers

Not installed with the project and not in the Docker image (.dockerignore); run them from the repo root.
"""
