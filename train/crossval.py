"""K-fold cross-validation of a linear head over every labelled photo of chosen sources (train and val).

The val split holds 122 real store photos (one photo is 0.8 points): too few to choose on. A linear head on
frozen features is cheap to refit, so every choice (input size, head recipe, test-time augmentation) and the
calibration are made on out-of-fold predictions of all labelled real photos instead: fold k's photos are
predicted by a head (and unknown statistics) fitted without them, on everything else the probe trains on.
The backbone never saw a label, so its features leak nothing between folds.

The folds are *scenes*, not random photos. The store photos come from a few visits per fruit, dozens of
near-identical shots of the same shelf each; random folds put a shot's twins in the fitting set, and the
head then looks right 97% of the time where a head fitted on the train split gets 61% on the val split's
photos (another visit). Clustering each class's photos by their features and holding out whole clusters
gives out-of-fold figures close to the train -> val figure (a teacher's clusters a few points above it, the
backbone's own a few below; docs/distillation.md): what a new store visit will see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.unknown import fit_unknown


@dataclass
class Rows:
    """Feature rows the head fits on: each belongs to one image (`owner`), a whole image or one of its views."""

    x: np.ndarray  # (R, D)
    y: np.ndarray  # (R,)
    owner: np.ndarray  # (R,) image id


@dataclass
class OutOfFold:
    """Per pool photo: its fold and what a head fitted without its fold says of it (plain and mirrored)."""

    fold: np.ndarray
    y: np.ndarray
    logits: dict[str, np.ndarray]  # tta mode -> (P, C)
    scores: dict[str, np.ndarray]  # tta mode -> (P,) unknown scores

    def top1_by_fold(self, tta: str) -> list[float]:
        right = self.logits[tta].argmax(1) == self.y
        return [float(right[self.fold == k].mean()) for k in np.unique(self.fold)]

    def topk_by_fold(self, tta: str, k: int = 5) -> list[float]:
        top = np.argsort(-self.logits[tta], axis=1)[:, :k]
        hit = (top == self.y[:, None]).any(1)
        return [float(hit[self.fold == f].mean()) for f in np.unique(self.fold)]

    def summary(self, tta: str) -> dict:
        top1, top5 = self.top1_by_fold(tta), self.topk_by_fold(tta)
        return {"n": int(len(self.y)), "folds": len(top1), "top1_mean": round(float(np.mean(top1)), 4),
                "top1_std": round(float(np.std(top1)), 4), "top5_mean": round(float(np.mean(top5)), 4),
                "top5_std": round(float(np.std(top5)), 4)}


def scene_folds(features: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold id per photo: each class's photos are split by k-means on their L2-normalised features into k
    clusters of look-alike shots, and each cluster is one fold (a class with fewer than k photos is dealt out)."""
    rng = np.random.default_rng(seed)
    z = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
    fold = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        clusters = kmeans(z[idx], k, rng) if len(idx) >= k else np.arange(len(idx))
        fold[idx] = rng.permutation(k)[clusters]  # which fold gets which cluster: no class's largest in fold 0
    return fold


def kmeans(z: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; the cluster of each row."""
    centres = [z[rng.integers(len(z))]]
    for _ in range(1, k):
        d2 = np.min([((z - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(z[rng.choice(len(z), p=d2 / d2.sum())] if d2.sum() > 0 else z[rng.integers(len(z))])
    centres = np.stack(centres)
    for _ in range(iterations):
        assign = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        moved = np.stack([z[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return assign


def cross_fit(rows: Rows, pool: np.ndarray, pool_y: np.ndarray, plain: np.ndarray, n_classes: int,
              fit_head: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]], *,
              mirror: np.ndarray | None = None, scenes: np.ndarray | None = None, folds: int = 5, seed: int = 0,
              shrinkage: float = 0.1) -> OutOfFold:
    """Out-of-fold logits and unknown scores of the `pool` images (ids into `rows.owner`), whose whole-photo
    features are `plain` (and `mirror`, of the mirrored photos: then also under "flip" TTA, the mean of both
    logits and features, as the core serves it). `fit_head(x, y)` returns a function from features to logits.
    The scene folds cluster `scenes` (features of the pool photos from a fixed model, so that every candidate
    backbone is judged on the same folds), else `plain`.
    """
    from tqdm import tqdm

    fold = scene_folds(plain if scenes is None else scenes, pool_y, folds, seed)
    modes = ["none"] + (["flip"] if mirror is not None else [])
    logits = {mode: np.zeros((len(pool), n_classes), np.float32) for mode in modes}
    scores = {mode: np.zeros(len(pool), np.float32) for mode in modes}
    for k in tqdm(range(folds), desc="cross-validation", unit="fold"):
        held, keep = fold == k, ~np.isin(rows.owner, pool[fold == k])
        head = fit_head(rows.x[keep], rows.y[keep])
        detector = fit_unknown(rows.x[keep], rows.y[keep], n_classes, shrinkage)
        logits["none"][held] = head(plain[held])
        scores["none"][held] = detector.score(plain[held])
        if mirror is not None:
            logits["flip"][held] = (head(plain[held]) + head(mirror[held])) / 2
            scores["flip"][held] = detector.score((plain[held] + mirror[held]) / 2)
    return OutOfFold(fold, pool_y, logits, scores)


def choose_tta(oof: OutOfFold, allowed: list[str]) -> str:
    """The mode with the best mean out-of-fold top-1; "none" unless another wins by more than one standard
    error of the per-fold difference (a mirror doubles the forward pass: it must earn it)."""
    best = "none"
    for mode in allowed:
        if mode == "none" or mode not in oof.logits:
            continue
        diff = np.array(oof.top1_by_fold(mode)) - np.array(oof.top1_by_fold("none"))
        if diff.mean() > diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else diff.mean() > 0:
            best = mode
    return best
