"""
Title: Linear probe of a backbone's frozen features
Description: how much a (distilled) DenseNet121 already knows, judged in minutes, before any fine-tuning.

    python -m train.probe --weights runs/distill/densenet121_distilled.weights.h5 --input-size 64 \\
        --data ../shared/datasets/fruits
    python -m train.probe --teacher ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite --data ...  # the ceiling

Fits a multinomial logistic regression on the pooled features of DIR/train (one centre view, the whole image)
and prints `probe_top1=<f>` on DIR/val, then the same for each source group of the val files (file names
`<source>__...`, e.g. `probe_top1[grocery]=<f>` for the real store photos).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.probe", description=__doc__.split("\n\n")[0].strip())
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="DenseNet121 backbone weights (e.g. from python -m train.distill)")
    source.add_argument("--teacher", help="a teacher file instead (.tflite/.onnx/.keras): the probe's ceiling")
    p.add_argument("--data", required=True, help="DIR/train/<class>/* and DIR/val/<class>/*")
    p.add_argument("--out", help="with --weights: also save the probe as a model bundle (the frozen backbone and "
                                 "the fitted linear head), usable by the demo, the workers and train.evaluate")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return p.parse_args(argv)


def extract(split, embed, size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[Path], np.ndarray]:
    """Pooled features of every readable image of a split (decoded as the classifier decodes), and the images."""
    from train.data import decode_split

    x, y, paths = decode_split(split, size)
    feats = [embed(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return (np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)), y, paths, x


def view_features(split, embed, size: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Features of `args.views` augmented views of every training image (the distillation's views: a random
    resized crop, a flip and a colour jitter), so that the head also learns from crops, not only whole images."""
    from model.images import load_images
    from train.distill import DEFAULTS as DISTILL_DEFAULTS
    from train.views import ViewPolicy, render_batch, sample_specs

    decoded = load_images(split.paths, DISTILL_DEFAULTS["source_size"])  # the distillation's source size
    kept = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
    sources, labels = np.stack([decoded[i] for i in kept]), np.asarray(split.labels)[kept]
    policy = ViewPolicy(min_area=args.min_area, full_first=False)  # the whole images are in the set already
    specs = sample_specs(len(sources), args.views, policy, np.random.default_rng(args.seed))
    image_index = np.repeat(np.arange(len(sources)), args.views)
    feats = [embed(render_batch(sources, image_index[i:i + args.batch_size], specs[i:i + args.batch_size], size))
             for i in range(0, len(specs), args.batch_size)]
    return np.concatenate(feats), labels[image_index]


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, steps: int, lr: float) -> LinearHead:
    """Full-batch multinomial logistic regression (Adam, L2) on standardized features."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w, b = np.zeros((z.shape[1], n_classes)), np.zeros(n_classes)
    onehot = np.eye(n_classes)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        logits = z @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grads = [z.T @ (p - onehot) / len(z) + l2 * w, (p - onehot).mean(0)]
        for i, (param, g) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            param -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    # The standardization folded into the weights: a plain Dense layer on the raw pooled features.
    return LinearHead(kernel=w / std[:, None], bias=b - (mean / std) @ w)


@dataclass
class LinearHead:
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.kernel + self.bias


def embedder(args: argparse.Namespace):
    """(embed function, input size) for a DenseNet121 backbone or a teacher."""
    if args.teacher:
        from train.teachers import load_teacher

        teacher = load_teacher(args.teacher)
        return teacher.features, teacher.input_size
    import keras

    from model.network import build_feature_extractor

    model = build_feature_extractor(args.input_size, weights=args.weights)
    return (lambda x: keras.ops.convert_to_numpy(model(x.astype(np.float32), training=False))), args.input_size


def probe(args: argparse.Namespace) -> dict[str, float]:
    from train.data import scan_dataset
    from train.metrics import top1_by_source

    classes, train_split, val_split = scan_dataset(args.data, seed=args.seed)
    embed, size = embedder(args)
    x_train, y_train, _, _ = extract(train_split, embed, size, args.batch_size)
    x_val, y_val, val_paths, val_images = extract(val_split, embed, size, args.batch_size)
    x_fit, y_fit = x_train, y_train
    if args.views:
        x_views, y_views = view_features(train_split, embed, size, args)
        x_fit, y_fit = np.concatenate([x_train, x_views]), np.concatenate([y_train, y_views])
    predict = fit_softmax(x_fit, y_fit, len(classes), args.l2, args.steps, args.lr)
    scores = {f"probe_{k}": v for k, v in top1_by_source(predict(x_val), y_val, val_paths).items()}
    train_acc = float((predict(x_train).argmax(1) == y_train).mean())
    print(f"train top1 {train_acc:.4f} on {len(y_train)} images (+{len(y_fit) - len(y_train)} views); "
          f"val n={len(y_val)}")
    for key, value in scores.items():
        print(f"{key}={value:.4f}")
    if args.out and args.weights:
        split_counts = {"train_counts": train_split.counts(classes), "val_counts": val_split.counts(classes)}
        save_probe_bundle(args, classes, predict, (val_images, y_val, val_paths), split_counts)
    return scores


def save_probe_bundle(args: argparse.Namespace, classes: list[str], head: LinearHead, val: tuple,
                      split_counts: dict) -> None:
    """DenseNet121 with the backbone's weights and the probe as its `logits` layer: a classifier in its own right.
    The bundle folder also gets the val evaluation (metrics.json, report.txt, confusion_matrix.png), as a training
    run's bundle does, and its card carries those metrics."""
    import datetime as dt

    from model.bundle import BundleConfig
    from model.network import build_model
    from train.evaluate import save_evaluated_bundle

    model = build_model(len(classes), args.input_size, weights=args.weights)
    model.get_layer("logits").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    config = BundleConfig(labels=classes, input_size=args.input_size, weights=Path(args.weights).name)
    card = {"architecture": "DenseNet121", "dataset": Path(args.data).resolve().name, "classes": classes,
            **split_counts, "input_size": args.input_size, "weights": config.weights,
            "head": "linear probe on the frozen backbone (python -m train.probe)",
            "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    save_evaluated_bundle(model, Path(args.out), config, val, card)


def main(argv: list[str] | None = None) -> dict[str, float]:
    return probe(parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
