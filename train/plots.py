"""Training curves and confusion matrices as PNG files (matplotlib, headless); as a command, one curve of a run
continued in stages (a distillation continued with --init), numbered on after each other.

    python -m train.plots --stages runs/distill-a/history.csv runs/distill-b/history.csv --out loss.png
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, ylabel: str, title: str, out: str | Path, xlabel: str = "epoch") -> None:
    """The finish every per-epoch plot shares: labels, grid, legend, PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def read_history(csv_path: str | Path) -> dict[str, list[float]]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = (None, "", "NA")  # CSVLogger writes NA for a metric an epoch did not have
    return {key: [float(r[key]) for r in rows if r.get(key) not in missing] for key in (rows[0] if rows else {})}


def plot_curve(history: dict[str, list[float]], metric: str, out: str | Path, title: str, x: str = "epoch") -> None:
    """Train vs val curve for one metric (as in the seed: accuracy.png and loss.png): per epoch (numbered from 1),
    or against another column of the history (`x`, e.g. the head fit's `step`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    n = len(history.get(metric, []))
    xs = np.arange(1, n + 1) if x == "epoch" else np.asarray(history[x][:n])
    style = "-" if n > 30 else "o-"  # a marker per point only where there are few
    ax.plot(xs, history.get(metric, []), style, label=f"train {metric}")
    if history.get(f"val_{metric}"):
        ax.plot(xs, history[f"val_{metric}"], style.replace("o", "s"), label=f"val {metric}")
    _save(plt, fig, ax, metric, title, out, xlabel=x)


def plot_series(history: dict[str, list[float]], keys: list[str], out: str | Path, title: str, ylabel: str) -> None:
    """Several per-epoch series on one axis, e.g. val top-1 overall and per source of the images."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in keys:
        ax.plot(np.arange(1, len(history[key]) + 1), history[key], "o-", label=key)
    _save(plt, fig, ax, ylabel, title, out)


def plot_stages(histories: list[dict[str, list[float]]], metric: str, out: str | Path, title: str) -> None:
    """One metric across consecutive runs (a distillation continued with --init), numbered on after each other."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    start = 0
    for k, history in enumerate(histories, 1):
        values = history.get(metric, [])
        ax.plot(np.arange(start + 1, start + len(values) + 1), values, "o-", markersize=3, label=f"stage {k}")
        start += len(values)
    _save(plt, fig, ax, metric, title, out)


def plot_reliability(series: dict[str, list[dict]], out: str | Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin (model.calibration.reliability) of each named
    series; the diagonal is a model whose confidence means what it says."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    for (name, bins), style in zip(series.items(), ("o-", "s-", "^-", "v-", "d-"), strict=False):
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, labels: list[str], out: str | Path, title: str = "Confusion matrix") -> None:
    """Row-normalised confusion matrix (recall on the diagonal), with raw counts written in the cells."""
    plt = _pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """`python -m train.plots --stages A/history.csv B/history.csv --out loss.png`: one curve for a staged run."""
    import cli

    p = cli.parser("python -m train.plots", __doc__)
    p.add_argument("--stages", nargs="+", required=True, metavar="CSV",
                   help="history.csv of each stage, in order (Keras CSVLogger files: one row per epoch)")
    p.add_argument("--metric", default="loss", help="the history column to draw (default %(default)s)")
    p.add_argument("--title", default="Distillation loss (1 - cosine to the teachers)",
                   help="the plot's title (default: %(default)s)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    args = p.parse_args(argv)
    plot_stages([read_history(h) for h in args.stages], args.metric, args.out, args.title)


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
