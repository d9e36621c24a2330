"""Teaching benchmark (`make bench-teach`): what k taught photos per class are worth on a new visit.

    python -m benchmarks.teach_curve [--model model/fruits-densenet121] [--shots 0 5 10 20] [--share 0.5]
        [--other ../shared/datasets/grocery-other] [--cache DIR]

The base set is the bundle's features.npz (its training photos as features, each with its scene fold). For each
scene fold of the real photos: the fold is held out, a head fitted on everything else (studio shots and the other
folds) is the parent, and k = 0, 5, 10, 20 photos per class of the held-out fold are taught to it (train.teach's
refit: head, temperature and unknown statistics); the rest of the fold scores it. Printed per k: top-1 mean and
spread over the folds, the share of those photos flagged unknown, the not-fruit reference photos flagged (the
bundle's stored grocery-other val features) and the seconds per teach (features cached: the refit alone).

`--other DIR` adds the new-class check: 20 photos of one class of DIR/train are taught to the whole base set as
a new class; its DIR/val photos must be recognised while the other classes' DIR/val photos stay flagged unknown.
`--share` may be given several values: the curve for each (how taught photos are weighed, train.teach).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from model.bundle import SHIPPED_MODEL_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.teach_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(SHIPPED_MODEL_DIR), help="a bundle with features.npz")
    p.add_argument("--shots", type=int, nargs="*", default=[0, 5, 10, 20])
    p.add_argument("--share", type=float, nargs="*", default=None, help="default: train.teach.TAUGHT_SHARE")
    p.add_argument("--folds", type=int, nargs="*", default=None, help="which held-out folds (default: all)")
    p.add_argument("--other", default=None, help="folder-per-class non-fruit photos (train/ and val/)")
    p.add_argument("--new-class", default=None, help="the class of --other to teach (default: the largest)")
    p.add_argument("--cache", default=None, help="keep the features of --other here")
    p.add_argument("--apart", action="store_true", help="teach and score different look-alike clusters of a fold")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def split_fold(base, fold: int, max_shots: int, rng: np.random.Generator, apart: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per class of the held-out fold, its photos shuffled: the first min(max_shots, n // 2) may be taught (in
    that order, so k photos are the first k), the rest score. Returns (teach order, test) as row indices.
    `apart`: each class's photos of the fold are first split in two clusters of look-alike shots (k-means), the
    taught photos come from one and the scored ones from the other, so a taught shot's near-twins are not scored."""
    from train.crossval import kmeans

    teach, test = [], []
    for c in np.unique(base.labels[base.folds == fold]):
        idx = rng.permutation(np.flatnonzero((base.folds == fold) & (base.labels == c)))
        if apart and len(idx) >= 4:
            z = base.features[idx] / np.linalg.norm(base.features[idx], axis=1, keepdims=True)
            side = kmeans(z, 2, rng)
            first = side == side[0]
            idx = np.concatenate([idx[first], idx[~first]])
            cut = min(max_shots, int(first.sum()), len(idx) - 1)
        else:
            cut = min(max_shots, len(idx) // 2)
        teach.append(idx[:cut]), test.append(idx[cut:])
    return np.concatenate(teach), np.concatenate(test)


def first_k(base, order: np.ndarray, k: int) -> np.ndarray:
    """The first k of `order` for each class."""
    keep = np.zeros(len(order), bool)
    for c in np.unique(base.labels[order]):
        keep[np.flatnonzero(base.labels[order] == c)[:k]] = True
    return order[keep]


def curve(base, n_classes: int, shots: list[int], share: float, folds: list[int], seed: int,
          apart: bool = False) -> dict:
    from train.head import stored_fold_heads
    from train.teach import refit

    parents = stored_fold_heads(base.extra)  # the parent of a held-out fold: the head fitted without it
    ood = base.extra.get("ood")
    ood = None if ood is None else ood.astype(np.float32)
    rows = {k: [] for k in shots}
    for fold in folds:
        order, test = split_fold(base, fold, max(shots), np.random.default_rng(seed + fold), apart)
        rest = base.take(np.flatnonzero(base.folds != fold))
        for k in shots:
            taught = first_k(base, order, k) if k else np.zeros(0, np.int64)
            start = time.monotonic()
            fitted, _, _ = refit(rest, base.features[taught], base.flip[taught], base.labels[taught],
                                 n_classes, share=share, prior=parents.get(fold))
            seconds = time.monotonic() - start
            x, y = base.features[test], base.labels[test]
            top1 = float((fitted.head(x).argmax(1) == y).mean())
            flagged = float(fitted.detector.is_unknown(fitted.detector.score(x)).mean())
            ood_flagged = float(fitted.detector.is_unknown(fitted.detector.score(ood)).mean()) if ood is not None \
                else float("nan")
            oof = fitted.oof
            base_cv = float((oof.logits["none"].argmax(1) == oof.y)[fitted.sets_threshold].mean())
            rows[k].append((top1, flagged, ood_flagged, seconds, len(taught), len(test),
                            fitted.honesty.temperature, base_cv))
            print(f"  share={share} fold={fold} k={k:2d}: top1={top1:.4f} base-cv={base_cv:.4f} flagged={flagged:.3f} "
                  f"not-fruit flagged={ood_flagged:.3f} T={fitted.honesty.temperature:.2f} "
                  f"taught={len(taught)} test={len(test)} {seconds:.1f}s", flush=True)
    return rows


def print_curve(rows: dict, share: float) -> None:
    print(f"share={share}: k | top-1 on the rest of the held-out fold (mean +- spread over folds) | other folds' "
          f"real photos, out-of-fold | flagged | not-fruit flagged | T | s per teach")
    for k, r in rows.items():
        a = np.array(r)
        print(f"  k={k:2d} | {a[:, 0].mean():.4f} +- {a[:, 0].std():.4f} | {a[:, 7].mean():.4f} | "
              f"{a[:, 1].mean():.3f} | "
              f"{a[:, 2].mean():.3f} (min {a[:, 2].min():.3f}) | {a[:, 6].mean():.2f} | {a[:, 3].mean():.1f}")


def new_class_check(base, labels: list[str], other: Path, name: str | None, cache: str | None, share: float,
                    model_dir: Path, seed: int) -> None:
    """Teach 20 photos of one non-fruit class as a new class; its val photos against the other classes' val."""
    from model.bundle import load_keras_model
    from model.images import scan_folder
    from train.data import class_dirs
    from train.features import bundle_embedder, cached, split_features
    from train.teach import refit

    classes = [d.name for d in class_dirs(other / "train") if (other / "val" / d.name).is_dir()]
    name = name or max(classes, key=lambda c: len(scan_folder(other / "train" / c).images))
    embed = []

    def lazy(x):
        if not embed:
            embed.append(bundle_embedder(load_keras_model(model_dir)))
        return embed[0](x)

    def features(split: str, cls: str) -> dict:
        paths = scan_folder(other / split / cls).images
        return cached(cache, f"teach-bench-{model_dir.name}-{other.name}-{split}-{cls}",
                      lambda: split_features(lazy, paths, [0] * len(paths), labels_size(model_dir)))

    train = features("train", name)
    pick = np.random.default_rng(seed).permutation(len(train["features"]))[:20]
    new = len(labels)
    start = time.monotonic()
    fitted, _, _ = refit(base, train["features"][pick], train["flip"][pick], np.full(len(pick), new), new + 1,
                         share=share)
    seconds = time.monotonic() - start
    val = features("val", name)["features"]
    det = fitted.detector
    recognised = float(((fitted.head(val).argmax(1) == new) & ~det.is_unknown(det.score(val))).mean())
    others = np.concatenate([features("val", c)["features"] for c in classes
                             if c != name and (other / "val" / c).is_dir()])
    print(f"new class {name!r} (20 photos taught, {seconds:.1f}s): {len(val)} val photos recognised "
          f"(top-1 and not flagged) {recognised:.3f}, top-1 {float((fitted.head(val).argmax(1) == new).mean()):.3f}; "
          f"{len(others)} val photos of the other {len(classes) - 1} classes flagged unknown "
          f"{float(det.is_unknown(det.score(others)).mean()):.3f} (taken for the new class: "
          f"{float((fitted.head(others).argmax(1) == new).mean()):.3f})")


def labels_size(model_dir: Path) -> int:
    from model.bundle import BundleConfig

    return BundleConfig.read(model_dir).input_size


def main(argv: list[str] | None = None) -> None:
    from model.bundle import BundleConfig
    from train.features import read_features
    from train.teach import TAUGHT_SHARE

    args = parse_args(argv)
    model_dir = Path(args.model)
    base = read_features(model_dir)
    if base is None:
        raise SystemExit(f"error: {model_dir} has no features.npz")
    labels = BundleConfig.read(model_dir).labels
    folds = args.folds if args.folds is not None else sorted(int(f) for f in np.unique(base.folds) if f >= 0)
    results = {}
    for share in (args.share or [TAUGHT_SHARE]) if args.shots else []:
        results[share] = curve(base, len(labels), args.shots, share, folds, args.seed, args.apart)
    for share, rows in results.items():
        print_curve(rows, share)
    if args.other:
        new_class_check(base, labels, Path(args.other), args.new_class, args.cache, (args.share or [TAUGHT_SHARE])[0],
                        model_dir, args.seed)


if __name__ == "__main__":
    main()
