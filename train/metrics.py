"""Classification metrics from labels and probabilities (numpy only, no scikit-learn needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def topk_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    if len(y_true) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    topk = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean([y in row for y, row in zip(y_true, topk, strict=False)]))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_report(cm: np.ndarray, labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class (rows of `cm` are true classes)."""
    rows = []
    for i, name in enumerate(labels):
        tp = cm[i, i]
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {"label": name, "precision": float(precision), "recall": float(recall), "f1": float(f1), "support": support}
        )
    return rows


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    if len(y_true) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def summarize(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Everything evaluation reports, as one JSON-ready dict."""
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    report = per_class_report(cm, labels)
    present = [r for r in report if r["support"] > 0]
    return {
        "n": int(len(y_true)),
        "top1": topk_accuracy(y_true, probs, 1),
        "top5": topk_accuracy(y_true, probs, 5),
        "macro_f1": float(np.mean([r["f1"] for r in present])) if present else float("nan"),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": report,
        "confusion_matrix": cm.tolist(),
        "labels": labels,
    }


def format_report(summary: dict) -> str:
    """A plain-text per-class table, like scikit-learn's classification_report."""
    width = max(12, *(len(r["label"]) for r in summary["per_class"]))
    lines = [f"{'class':<{width}} precision    recall        f1   support"]
    for r in summary["per_class"]:
        lines.append(
            f"{r['label']:<{width}} {r['precision']:9.3f} {r['recall']:9.3f} {r['f1']:9.3f} {r['support']:9d}"
        )
    lines.append("")
    lines.append(
        f"top1={summary['top1']:.4f} top5={summary['top5']:.4f} macro_f1={summary['macro_f1']:.4f} "
        f"ece={summary['ece']:.4f} n={summary['n']}"
    )
    return "\n".join(lines)


def source_of(path, sep: str = "__") -> str:
    """The source group of a file named `<source>__...` (e.g. grocery: the real store photos); "" without one."""
    name = Path(path).name
    return name.split(sep)[0] if sep in name else ""


def top1_by_source(scores: np.ndarray, y: np.ndarray, paths: list) -> dict[str, float]:
    """Top-1 overall and per source group (file names `<source>__...`, e.g. grocery = real store photos)."""
    right = scores.argmax(1) == y
    out = {"top1": float(right.mean())}
    sources = np.array([source_of(p) for p in paths])
    for source in sorted(set(sources) - {""}):
        out[f"top1[{source}]"] = float(right[sources == source].mean())
    return out
