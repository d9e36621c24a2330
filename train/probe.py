"""
Title: Linear probe of a backbone's frozen features
Description: how much a (distilled) DenseNet121 already knows, judged in minutes, before any fine-tuning.

    python -m train.probe --weights runs/distill/densenet121_distilled.weights.h5 --input-size 64 \\
        --data ../shared/datasets/fruits
    python -m train.probe --teacher ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite --data ...  # the ceiling

Fits a multinomial logistic regression (train.head.fit_softmax, the head every frozen-backbone recipe fits) on the
pooled features of DIR/train (one centre view, the whole image; `--views N` adds N augmented views of each) and
prints `probe_top1=<f>` on DIR/val, then the same for each source group of the val files (file names
`<source>__...`, e.g. `probe_top1[grocery]=<f>` for the real store photos). A diagnostic only: the classifier
that ships, cross-validated on scene folds and calibrated, is made by `python -m train.frozen`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from train.head import LinearHead, fit_softmax

__all__ = ["LinearHead", "fit_softmax", "main", "probe"]

"""## Parameters"""

DEFAULTS = dict(
    input_size=64,
    views=0,  # augmented views per training image added to the whole images (train.views: crop, flip, colour)
    min_area=0.25,  # the views' random resized crop keeps at least this fraction of the image
    l2=1e-3,
    steps=500,
    lr=0.05,
    batch_size=64,
    seed=1337,
)


HELP = dict(
    input_size="input size in pixels of the backbone (a teacher takes its own)",
    views="augmented views (crop, flip, colour) of each training image added to the whole images",
    min_area="the views' random resized crop keeps at least this share of the image",
    l2="L2 penalty of the head (on standardized features)",
    steps="full-batch Adam steps of the head fit",
    lr="peak learning rate of the head fit",
    batch_size="images per forward pass",
    seed="random seed of the views",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train.cli import parser
    from train.frozen import WEIGHTS_HELP

    p = parser("python -m train.probe", __doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help=f"the DenseNet121 backbone to judge: {WEIGHTS_HELP.split(': ', 1)[1]}")
    source.add_argument("--teacher", help="a teacher file instead (.tflite/.onnx/.keras): the probe's ceiling")
    p.add_argument("--data", required=True, metavar="DIR", help="DIR/train/<class>/* and DIR/val/<class>/*")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                       help=f"{HELP[key]} (default %(default)s)")
    return p.parse_args(argv)


def extract(split, embed, size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Pooled features of every readable image of a split (decoded as the classifier decodes)."""
    from train.data import decode_split
    from train.features import in_batches

    x, y, paths = decode_split(split, size)
    return (in_batches(embed, x, batch_size) if len(x) else np.zeros((0, 1), np.float32)), y, paths


def embedder(args: argparse.Namespace):
    """(embed function, input size) for a DenseNet121 backbone or a teacher."""
    if args.teacher:
        from train.teachers import load_teacher

        teacher = load_teacher(args.teacher)
        return teacher.features, teacher.input_size
    from model.network import build_feature_extractor
    from train.frozen import backbone

    model = build_feature_extractor(args.input_size, weights=backbone(args.weights, args.input_size))
    # predict_on_batch runs the compiled graph: several times the throughput of eager calls on the CPU
    return (lambda x: np.asarray(model.predict_on_batch(x.astype(np.float32)))), args.input_size


def probe(args: argparse.Namespace) -> dict[str, float]:
    from train.data import scan_dataset
    from train.features import view_features
    from train.metrics import top1_by_source

    classes, train_split, val_split = scan_dataset(args.data, seed=args.seed)
    embed, size = embedder(args)
    x_train, y_train, train_paths = extract(train_split, embed, size, args.batch_size)
    x_val, y_val, val_paths = extract(val_split, embed, size, args.batch_size)
    x_fit, y_fit = x_train, y_train
    if args.views:
        views = view_features(train_paths, y_train, embed, size, args.views, args.min_area, args.seed,
                              args.batch_size)
        x_fit, y_fit = np.concatenate([x_train, views["views"]]), np.concatenate([y_train, views["view_labels"]])
    predict = fit_softmax(x_fit, y_fit, len(classes), args.l2, args.steps, args.lr)
    scores = {f"probe_{k}": v for k, v in top1_by_source(predict(x_val), y_val, val_paths).items()}
    train_acc = float((predict(x_train).argmax(1) == y_train).mean())
    print(f"train top1 {train_acc:.4f} on {len(y_train)} images (+{len(y_fit) - len(y_train)} views); "
          f"val n={len(y_val)}")
    for key, value in scores.items():
        print(f"{key}={value:.4f}")
    return scores


def main(argv: list[str] | None = None) -> dict[str, float]:
    return probe(parse_args(argv))


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
