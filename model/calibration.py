"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar T divides the logits before the softmax: T > 1 softens over-confident probabilities. Dividing by a
positive number never changes which class is largest, so top-k labels and accuracy stay exactly as they were;
only the confidences move. T is fitted by minimising the negative log-likelihood of held-out labels (photos the
head never trained on), and lives in the bundle's config, applied by `model.predict.Classifier`.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T minimising the NLL, by golden-section search on log T (the NLL is unimodal in T)."""
    if len(labels) == 0:
        raise ValueError("no held-out labels to fit a temperature on")
    labels = np.asarray(labels, np.int64)
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, np.exp(c)), nll(logits, labels, np.exp(d))
    for _ in range(60):  # the bracket shrinks by 0.618 a step: 60 steps reach ~1e-12 of its width
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, np.exp(d))
    return float(np.exp((a + b) / 2))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per equal-width confidence bin: its range, count, mean confidence and accuracy (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            rows.append({"lo": float(lo), "hi": float(hi), "n": int(in_bin.sum()),
                         "confidence": float(confidence[in_bin].mean()), "accuracy": float(correct[in_bin].mean())})
    return rows
