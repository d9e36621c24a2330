"""Plain helpers the tests import: data builders and processes, used at every fixture scope (the fixtures
themselves are in the conftest.py files). `images` writes image files and datasets, `databases` makes scratch
databases and fabricated jobs, `processes` starts and stops Celery workers, redis-server and finds free ports."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The tiny bundle of the root conftest: a real, untrained DenseNet121 (weights=None) at 32 px with 3 classes.
TINY_LABELS = ["apple", "banana", "cherry"]
TINY_SIZE = 32


def redis_db(n: int) -> int:
    """Redis database `n` of the shared test Redis, for this test process: `make test` runs the suite in two
    pytest-xdist workers (gw0, gw1), and each must flush and fill databases of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return n - 4 * int(worker or 0)


def assert_top1(labels: list[str], probs, names: list[str], atol: float = 1e-5) -> None:
    """Each of `labels` is its row's most probable class by `probs`, computed independently, up to ties within
    `atol`. An untrained network's probabilities are near-uniform: two computations that agree to `atol` may
    still pick different classes where two of them tie that closely, and a wrong label still fails."""
    import numpy as np

    probs = np.asarray(probs)
    assert len(labels) == len(probs), (labels, probs.shape)
    for i, (label, row) in enumerate(zip(labels, probs, strict=True)):
        shown = dict(zip(names, row.tolist(), strict=True))
        assert label in names and row[names.index(label)] >= row.max() - atol, (i, label, shown)
