"""The feature sets of the frozen-backbone recipe (train.frozen, `python -m train`): the backbone's pooled features
of the train and val photos, views of the photos calibrated on, not-fruit photos, and a teacher's features for
the scene folds; each computed once, with a progress bar, or read from `--cache`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NEAR_DUPLICATE_SOURCES = ("fruits360",)  # rotating-fruit studio frames: a few in a row look alike


@dataclass
class FeatureSets:
    """What the head recipe fits and calibrates on, as pooled features."""

    classes: list[str]
    tag: str  # backbone, input size and dataset: the cache key's start
    card: dict  # what the model card says about the data
    train: dict  # train.features.split_features of the train split (with its views)
    val: dict  # of the val split
    val_views: dict | None  # views of the val photos that are in the calibration pool
    sources: list[str] | None  # the sources calibrated on; None: every photo
    in_pool: np.ndarray  # (train + val,) bool: held out by the cross-validation, calibrated on
    ood: np.ndarray | None


def backbone_file(args: argparse.Namespace) -> tuple[str, str]:
    """(the backbone's weights: 'imagenet' or a file, the tag its cached features are kept under)."""
    from model.bundle import file_sha256
    from model.network import resolve_weights

    weights = resolve_weights(args.weights)
    if weights is None:
        raise ValueError("--weights none: a backbone from scratch has no features worth freezing; train the whole "
                         "network (python -m train --fine-tune --weights none) or pick pretrained weights")
    backbone_id = "imagenet" if weights == "imagenet" else file_sha256(weights)[:12]
    return weights, f"{backbone_id}-{args.input_size}-{Path(args.data).resolve().name}"


def feature_sets(args: argparse.Namespace, weights: str, tag: str) -> FeatureSets:
    """Every feature set the recipe needs, each computed once (or read from `--cache`), with progress bars."""
    from model.network import build_feature_extractor
    from train.calibrate import source_mask
    from train.data import scan_dataset
    from train.features import cached, split_features, view_features

    classes, train_split, val_split = scan_dataset(args.data, args.val_split, args.seed)
    print(f"{len(train_split)} train photos, {len(val_split)} val photos, {len(classes)} classes; backbone "
          f"{args.weights} at {args.input_size} px, {args.views} views per training photo", flush=True)
    embed = _lazy_embed(lambda: build_feature_extractor(args.input_size, weights=weights))
    size, vkw = args.input_size, dict(min_area=args.min_area, seed=args.seed, batch_size=args.batch_size)
    # Mirror images are not computed: features.npz keeps them for taught photos only (train.teach).
    tr = cached(args.cache, f"{tag}-train-v{args.views}", lambda: split_features(
        embed, train_split.paths, train_split.labels, size, views=args.views, mirror=False, desc="features: train",
        **vkw))
    va = cached(args.cache, f"{tag}-val", lambda: split_features(
        embed, val_split.paths, val_split.labels, size, mirror=False, desc="features: val", **vkw))
    tr_paths, va_paths = list(tr["paths"]), list(va["paths"])
    sources = args.calibrate_on or calibration_sources(tr_paths + va_paths)
    in_pool = source_mask(tr_paths + va_paths, sources)
    if not in_pool.any():
        raise ValueError(f"no photos of source {', '.join(sources or [])} to calibrate on")
    vpool = np.flatnonzero(in_pool[len(tr_paths):])
    vv = None
    if args.views and len(vpool):
        def val_views():
            with _bar(args.views * len(vpool), "features: val views") as bar:
                return view_features([va_paths[i] for i in vpool], va["labels"][vpool], embed, size, args.views,
                                     progress=bar.update, **vkw)

        vv = cached(args.cache, f"{tag}-val-{'-'.join(sources or ['all'])}-v{args.views}", val_views)
    ood = None
    if args.ood:
        from model.images import scan_folder

        ood_paths = scan_folder(args.ood, recursive=True).images
        ood = cached(args.cache, f"{tag}-ood-{Path(args.ood).resolve().parent.name}-{Path(args.ood).name}",
                     lambda: split_features(embed, ood_paths, [0] * len(ood_paths), size, mirror=False,
                                            desc="features: ood", **vkw))["features"]
    card = {"architecture": "DenseNet121", "dataset": Path(args.data).resolve().name, "classes": classes,
            "train_counts": train_split.counts(classes), "val_counts": val_split.counts(classes)}
    return FeatureSets(classes, tag, card, tr, va, vv, sources, in_pool, ood)


def calibration_sources(paths: list) -> list[str] | None:
    """The default pool of the cross-validation: every photo but the near-duplicate studio frames. Held out by
    scene (a whole rotating fruit at a time) they are missed far more often than new frames of a fruit already
    seen, and their temperature leaves the served studio shots under-confident: on the fruits, val ECE 0.080
    calibrated on every photo against 0.044 without them. None (every photo) where that leaves none or takes none
    away (file names without a `<source>__` prefix)."""
    from train.metrics import source_of

    present = {source_of(p) for p in paths}
    kept = sorted(present - set(NEAR_DUPLICATE_SOURCES))
    return kept if kept and len(kept) < len(present) else None


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def _lazy_embed(build):
    """The backbone is built on the first call only: with every feature set cached, no network is loaded."""
    model = []

    def embed(x):
        if not model:
            model.append(build())
        return np.asarray(model[0].predict_on_batch(np.asarray(x, np.float32)))

    return embed


def teacher_features(teacher_file: str, paths: list, batch_size: int) -> np.ndarray:
    from model.images import load_images
    from train.features import in_batches
    from train.teachers import load_teacher

    teacher = load_teacher(teacher_file)
    with _bar(len(paths), "features: scenes") as bar:
        return in_batches(teacher.features, np.stack(load_images(paths, teacher.input_size)), batch_size,
                          bar.update)
