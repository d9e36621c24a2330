""""Not one of the classes I know": a Mahalanobis score on the classifier's own pooled features.

Lee et al. (NeurIPS 2018): fit one Gaussian per class with a shared covariance on the training features; an
image's score is its squared Mahalanobis distance to the nearest class mean. The softmax cannot say this: it
normalises away how far a photo is from everything it was trained on (a juice carton comes out "papaya 98%").
The score costs one (D x D) product per image on features the forward pass computes anyway.

The statistics live beside `model.keras` as `unknown.npz` (plain arrays, no pickle): the whitening matrix, the
whitened class means and the threshold above which a photo is flagged unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNKNOWN_FILE = "unknown.npz"
METHOD = "mahalanobis"


@dataclass
class UnknownDetector:
    whitener: np.ndarray  # (D, D): z = (x - center) @ whitener has identity shared within-class covariance
    center: np.ndarray  # (D,) the training features' mean
    means: np.ndarray  # (C, D) class means, whitened
    threshold: float = float("inf")  # scores above are unknown
    keep_rate: float = 0.95  # the share of in-distribution photos the threshold was set to keep

    def score(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, per image (higher: less like any class)."""
        z = (np.asarray(features, np.float32) - self.center) @ self.whitener
        d = (z * z).sum(1)[:, None] - 2 * z @ self.means.T + (self.means * self.means).sum(1)[None, :]
        return np.maximum(d.min(axis=1), 0.0) / z.shape[1]  # per dimension: comparable across backbones

    def is_unknown(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def with_threshold(self, in_scores: np.ndarray, keep_rate: float) -> UnknownDetector:
        """The threshold that keeps `keep_rate` of these in-distribution scores (the rest are flagged)."""
        threshold = float(np.quantile(np.asarray(in_scores, np.float64), keep_rate))
        return UnknownDetector(self.whitener, self.center, self.means, threshold, keep_rate)

    def save(self, bundle_dir: str | Path) -> Path:
        path = Path(bundle_dir) / UNKNOWN_FILE
        np.savez(path, whitener=self.whitener.astype(np.float32), center=self.center.astype(np.float32),
                 means=self.means.astype(np.float32), threshold=np.float64(self.threshold),
                 keep_rate=np.float64(self.keep_rate), method=np.str_(METHOD))
        return path

    @classmethod
    def load(cls, bundle_dir: str | Path) -> UnknownDetector | None:
        """The bundle's detector, or None when it has no statistics (an older bundle: no unknown flag)."""
        path = Path(bundle_dir) / UNKNOWN_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(data["whitener"], data["center"], data["means"], float(data["threshold"]),
                       float(data["keep_rate"]))


def fit_unknown(features: np.ndarray, labels: np.ndarray, n_classes: int, shrinkage: float = 0.1
                ) -> UnknownDetector:
    """Class means and one shared covariance of the training features, shrunk towards a scaled identity
    (1024 dimensions from a few thousand images: the raw estimate is singular or nearly so)."""
    x = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.int64)
    center = x.mean(0)
    x = x - center
    means = np.stack([x[labels == c].mean(0) if (labels == c).any() else np.zeros(x.shape[1])
                      for c in range(n_classes)])
    within = x - means[labels]
    cov = within.T @ within / max(len(x) - n_classes, 1)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    whitener = vectors / np.sqrt(np.maximum(values, 1e-12))  # cov^(-1/2) up to a rotation
    return UnknownDetector(whitener.astype(np.float32), center.astype(np.float32),
                           (means @ whitener).astype(np.float32))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score of an out-of-distribution image > score of an in-distribution one); ties count half."""
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if not len(a) or not len(b):
        return float("nan")
    values = np.concatenate([a, b])
    # Average ranks over ties, then the Mann-Whitney U statistic of the out-of-distribution side.
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end - 1) / 2
            start = end
    u = ranks[len(a):].sum() - len(b) * (len(b) - 1) / 2
    return float(u / (len(a) * len(b)))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR95: the share of out-of-distribution images passed as known when the threshold keeps `tpr` of the
    in-distribution ones (the usual definition in the OOD literature)."""
    threshold = np.quantile(np.asarray(in_scores, np.float64), tpr)
    return float(np.mean(np.asarray(out_scores) <= threshold))
