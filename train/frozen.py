"""
Title: A classifier on a frozen backbone: the shipped model's recipe, and what `python -m train` does by default
Description: a linear head (train.head) on a backbone's pooled features, calibrated for a new visit, as a bundle.

    python -m train.frozen --weights model/fruits-densenet121 --input-size 128 --views 4 --folds 5 \\
        --scenes ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite --calibrate-on grocery \\
        --data ../shared/datasets/fruits --ood ../shared/datasets/grocery-other/val --out runs/fruits-head

DIR is DIR/train/<class>/* + DIR/val/<class>/*, or DIR/<class>/* with --val-split of each class held out. The
head fits the train photos (whole, and --views augmented views of each); the val photos stay for the val report
(metrics.json, report.txt, confusion_matrix.png).

Calibration: --folds scene folds over every labelled photo of the --calibrate-on sources (train and val; default:
every photo but the near-duplicate studio frames, every photo when the file names carry no `<source>__` prefix)
give the out-of-fold answers that the temperature and the unknown threshold are fitted on (train.head), and the
cross-validated figures with their fold-to-fold spread (`cv_top1=<mean> +- <std>`). The folds cluster the
--scenes teacher's features, else the backbone's.

The bundle also gets features.npz (train.features): the base set's features (train and val, each photo as served;
--studio-every N keeps one in N frames of the near-duplicate sources), so that python -m train.teach can teach it,
and with --ood the features of not-fruit photos as a reference the card reports on. --cache DIR keeps every
feature set computed, keyed by the backbone, so that a rerun costs seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np

from train.feature_sets import (
    NEAR_DUPLICATE_SOURCES,
    FeatureSets,
    backbone_file,
    feature_sets,
    teacher_features,
)

DEFAULTS = dict(input_size=128, views=4, min_area=0.25, l2=1e-3, steps=500, lr=0.05, batch_size=64, seed=1337,
                folds=5, keep_rate=0.70, studio_every=8, val_split=0.2)
# What each parameter's flag says in --help (the default is appended there).
HELP = dict(
    input_size="input size in pixels (the shipped distilled backbone was trained at 128)",
    views="augmented views (crop, flip, colour) of each training photo that the head also fits on; 0: whole "
          "photos only (each view costs one more forward pass per photo)",
    min_area="the views' random resized crop keeps at least this share of the photo",
    l2="L2 penalty of the head (on standardized features)",
    steps="full-batch Adam steps of each head fit (the rate decays to zero along a cosine)",
    lr="peak learning rate of the head fit",
    batch_size="photos per forward pass of the backbone",
    seed="random seed of the val split, the views and the scene folds",
    folds="scene folds of the cross-validation that the temperature and the unknown threshold are fitted on",
    keep_rate="share of the held-out known photos that the unknown threshold passes",
    studio_every="features.npz keeps one in N frames of the near-duplicate studio sources (fruits360)",
    val_split="share of each class held out for the val report when DIR has no train/ + val/ folders",
)
WEIGHTS_HELP = ("the backbone: auto (ImageNet if Keras can download its DenseNet121 weights, else distilled), "
                "imagenet, distilled (the shipped fruit model's backbone, distilled offline from ImageNet teachers), "
                "a bundle folder (its backbone) or a DenseNet121 weights file (.h5, e.g. from python -m "
                "train.distill)")


def add_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: dict | None = None) -> None:
    """The frozen-backbone options, also `python -m train`'s (which passes the defaults of its own choosing, and
    declares the options it shares with --fine-tune itself)."""
    p.add_argument("--scenes", metavar="TEACHER", help="a teacher file (.tflite/.onnx/.keras) whose features "
                   "cluster the photos into scene folds (default: the backbone's features)")
    p.add_argument("--calibrate-on", nargs="*", default=None, metavar="SOURCE",
                   help="sources (file names <source>__...) whose photos the cross-validation holds out and the "
                        "calibration is fitted on, e.g. grocery (default: every photo but those of the "
                        f"near-duplicate studio sources, {', '.join(NEAR_DUPLICATE_SOURCES)})")
    p.add_argument("--ood", metavar="DIR", help="photos of none of the classes (a folder, searched recursively): "
                   "how many the unknown detector flags goes on the card; their features into features.npz")
    p.add_argument("--cache", metavar="DIR", help="folder to keep computed features in, keyed by backbone, input "
                   "size and dataset, so that a rerun never computes them twice (default: no cache)")
    for key, value in (DEFAULTS if defaults is None else defaults).items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                       help=f"{HELP[key]} (default %(default)s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train.cli import parser

    p = parser("python -m train.frozen", __doc__)
    p.add_argument("--weights", default="auto", help=f"{WEIGHTS_HELP} (default %(default)s)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="DIR/train/<class>/* and DIR/val/<class>/*, or DIR/<class>/* (split by --val-split)")
    p.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to write")
    add_options(p)
    return p.parse_args(argv)


def backbone(weights: str, input_size: int) -> str:
    """The `--weights` choice with `auto` decided: `imagenet` when Keras can fetch ImageNet's DenseNet121 weights,
    else `distilled`, the backbone of the shipped fruit model (docs/distillation.md), with a note saying why;
    `imagenet` itself fails here, before any work, when they cannot be had."""
    from model.network import DISTILLED, WeightsUnavailableError, build_feature_extractor

    if weights not in ("auto", "imagenet"):
        return weights
    try:
        build_feature_extractor(input_size, weights="imagenet")  # fetched once, then from Keras's cache
        return "imagenet"
    except WeightsUnavailableError as exc:
        if weights == "imagenet":
            raise  # asked for by name: the one-line error, before any work
        why = " ".join(str(exc.__cause__ or exc).split(" -- ")[-1].split())  # Keras's: "URL fetch failure ... -- why"
        print(f"note: --weights auto: no ImageNet weights ({why[:160]}); using the distilled backbone "
              "(--weights distilled)", flush=True)
        return DISTILLED


def run(args: argparse.Namespace, *, bundle_dir: str | Path | None = None, run_dir: str | Path | None = None,
        command: str = "python -m train.frozen") -> dict:
    """Fit, calibrate and write the bundle to `bundle_dir` (default `args.out`); returns the calibration report.
    The val report goes beside the bundle's files, or to `run_dir`, which then also gets the head fit's curves
    (history.csv, loss.png, accuracy.png: loss and accuracy every 10 steps of the served head's fit)."""
    from model.bundle import BundleConfig
    from train.bundles import head_model, write_head_bundle
    from train.cli import ProgressBar
    from train.head import HeadParams, fit_calibrated, fold_heads, ood_figures

    weights, tag = backbone_file(args)
    sets = feature_sets(args, weights, tag)
    rows, train_rows, pool = fit_sets(args, sets)
    history = HeadHistory(sets.val["features"], sets.val["labels"]) if run_dir is not None else None
    bar = ProgressBar("head (cross-validation)")
    fitted = fit_calibrated(rows, pool, len(sets.classes), HeadParams(args.l2, args.steps, args.lr, args.keep_rate),
                            final_rows=train_rows, progress=bar, trace=history)
    bar(1.0, "done")
    s = fitted.honesty.report["top1_cv"]
    print(f"cv_top1={s['top1_mean']:.4f} +- {s['top1_std']:.4f}  top5={s['top5_mean']:.4f} (n={s['n']}, "
          f"{s['folds']} scene folds)")
    base = base_features(sets, pool.fold, args)
    base.extra.update(fold_heads(fitted))  # the priors of a refit's folds (train.teach)
    config = BundleConfig(labels=sets.classes, input_size=args.input_size, weights=Path(args.weights).name,
                          temperature=fitted.honesty.temperature)
    card = {**sets.card, "input_size": args.input_size, "weights": config.weights,
            "head": f"linear head on the frozen backbone ({command})",
            "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cross_validation": {"sources": sets.sources or "all", "tta": "none", "none": s,
                                 "folds": "scenes: k-means per class on the features of "
                                          + (Path(args.scenes).name if args.scenes else "the backbone")}}
    if sets.ood is not None:
        fitted.honesty.report["unknown"]["ood"] = ood_figures(fitted, sets.ood)
    model = head_model(len(sets.classes), args.input_size, weights_file=weights)
    val = (sets.val["features"], sets.val["labels"], list(sets.val["paths"]))
    write_head_bundle(Path(bundle_dir or args.out), model, config, fitted, base, card, val=val, report_dir=run_dir)
    if history is not None:
        history.write(Path(run_dir))
    return fitted.honesty.report


def fit_sets(args: argparse.Namespace, sets: FeatureSets):
    """(rows of the fold fits, rows of the served fit, the calibration pool with its scene folds)."""
    from train.crossval import scene_folds
    from train.head import Pool, Rows

    tr, va, vv = sets.train, sets.val, sets.val_views
    n_tr = len(tr["labels"])
    vpool = np.flatnonzero(sets.in_pool[n_tr:])
    views = bool(args.views) and "views" in tr
    train_rows = Rows(np.concatenate([tr["features"], *([tr["views"]] if views else [])]),
                      np.concatenate([tr["labels"], *([tr["view_labels"]] if views else [])]),
                      np.concatenate([np.arange(n_tr), *([tr["view_owner"]] if views else [])]))
    # The val photos of the pool join the fitting rows (whole and as views) of the folds they are not held out in.
    rows = Rows(np.concatenate([train_rows.x, va["features"][vpool], *([vv["views"]] if vv else [])]),
                np.concatenate([train_rows.y, va["labels"][vpool], *([vv["view_labels"]] if vv else [])]),
                np.concatenate([train_rows.owner, n_tr + vpool, *([n_tr + vpool[vv["view_owner"]]] if vv else [])]))
    plain = np.concatenate([tr["features"], va["features"]])
    labels = np.concatenate([tr["labels"], va["labels"]])
    ids = np.flatnonzero(sets.in_pool)
    if args.scenes:
        from train.features import cached

        paths = [(list(tr["paths"]) + list(va["paths"]))[i] for i in ids]
        scenes = cached(args.cache, f"scenes-{Path(args.scenes).stem}-{sets.tag}",
                        lambda: {"x": teacher_features(args.scenes, paths, args.batch_size)})["x"]
    else:
        scenes = plain[ids]
    return rows, train_rows, Pool(ids, labels[ids], plain[ids], scene_folds(scenes, labels[ids], args.folds,
                                                                            args.seed))


def base_features(sets: FeatureSets, pool_fold: np.ndarray, args: argparse.Namespace):
    """The bundle's features.npz content: every photo of the other sources, one in `studio_every` frames of the
    near-duplicate studio sources. Every row weighs 1: by scene-CV of a head refitted on these rows (and their
    mirror images), 1 in 8 studio frames gave 71.9% on the real photos against 71.2% with all of them (and 71.6%
    with the kept frames weighing 8), in a third of the rows."""
    from train.features import BaseFeatures
    from train.metrics import source_of

    plain = np.concatenate([sets.train["features"], sets.val["features"]])
    labels = np.concatenate([sets.train["labels"], sets.val["labels"]])
    paths = list(sets.train["paths"]) + list(sets.val["paths"])
    fold = np.full(len(labels), -1)
    fold[sets.in_pool] = pool_fold
    sources = np.array([source_of(p) for p in paths])
    keep = np.ones(len(paths), bool)
    for src in NEAR_DUPLICATE_SOURCES:
        idx = np.flatnonzero(sources == src)
        if args.studio_every > 1 and len(idx):
            keep[idx] = False
            keep[idx[::args.studio_every]] = True
    extra = {k: str(getattr(args, k)) for k in ("l2", "steps", "lr", "keep_rate", "studio_every")}
    if sets.ood is not None:
        extra["ood"] = sets.ood.astype(np.float16)
    # Mirror images are kept for taught photos only (train.teach): zeros here, which compress to nothing.
    base = BaseFeatures(plain, np.zeros_like(plain), labels, sources, fold, np.ones(len(paths), np.float32), extra)
    return base.take(np.flatnonzero(keep))


class HeadHistory:
    """The served head's fit, step by step (train.head.Trace): loss and accuracy on the rows it fits and on the
    val photos, as history.csv and the curves `python -m train` has always drawn."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray) -> None:
        self.x_val, self.y_val, self.rows = np.asarray(x_val, np.float32), np.asarray(y_val), []

    def __call__(self, step: int, head, loss: float, accuracy: float) -> None:
        row = {"step": step, "loss": loss, "accuracy": accuracy}
        if len(self.y_val):
            logits = head(self.x_val)
            logp = logits - logits.max(1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(1, keepdims=True))
            row.update(val_loss=float(-logp[np.arange(len(self.y_val)), self.y_val].mean()),
                       val_accuracy=float((logits.argmax(1) == self.y_val).mean()))
        self.rows.append(row)

    def write(self, run: Path) -> None:
        from train.plots import plot_curve, read_history

        keys = list(self.rows[0]) if self.rows else ["step", "loss", "accuracy"]
        lines = [",".join(keys)] + [",".join(f"{r[k]:.6g}" for k in keys) for r in self.rows]
        (run / "history.csv").write_text("\n".join(lines) + "\n")
        history = read_history(run / "history.csv")
        plot_curve(history, "accuracy", run / "accuracy.png", "Head fit: accuracy (before calibration)", x="step")
        plot_curve(history, "loss", run / "loss.png", "Head fit: cross-entropy (before calibration)", x="step")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.weights = backbone(args.weights, args.input_size)
    return run(args)


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
