"""
Title: Linear probe of a backbone's frozen features
Description: how much a (distilled) DenseNet121 already knows, judged in minutes, before any fine-tuning.

    python -m train.probe --weights runs/distill/densenet121_distilled.weights.h5 --input-size 64 \\
        --data ../shared/datasets/fruits
    python -m train.probe --teacher ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite --data ...  # the ceiling

Fits a multinomial logistic regression on the pooled features of DIR/train (one centre view, the whole image)
and prints `probe_top1=<f>` on DIR/val, then the same for each source group of the val files (file names
`<source>__...`, e.g. `probe_top1[grocery]=<f>` for the real store photos).

With `--out` it is the head recipe of the shipped model: `--cv 5` cross-validates the head over every labelled
photo of the `--calibrate-on` sources (train and val: train.crossval) and prints `cv_top1=<mean> +- <std>`;
the out-of-fold answers choose the test-time augmentation (`--tta auto`) and fit the temperature and the unknown
threshold (train.calibrate), which the bundle carries.
"""

from __future__ import annotations

import argparse
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
    cv=5,  # folds of the cross-validation over the --calibrate-on photos (with --out); 0: calibrate on val
    keep_rate=0.95,  # the unknown threshold passes this share of out-of-fold known photos
    tta="auto",  # none | flip | auto (flip only where it wins by cross-validation)
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.probe", description=__doc__.split("\n\n")[0].strip())
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="DenseNet121 backbone weights (e.g. from python -m train.distill)")
    source.add_argument("--teacher", help="a teacher file instead (.tflite/.onnx/.keras): the probe's ceiling")
    p.add_argument("--data", required=True, help="DIR/train/<class>/* and DIR/val/<class>/*")
    p.add_argument("--out", help="with --weights: also save the probe as a model bundle (the frozen backbone and "
                                 "the fitted linear head), usable by the demo, the workers and train.evaluate")
    p.add_argument("--scenes", help="a teacher file (.tflite/.onnx/.keras) whose features find the scene folds of "
                   "the cross-validation, the same for every backbone compared; default: the backbone's own")
    p.add_argument("--calibrate-on", nargs="*", default=None,
                   help="sources (file names <source>__...) to cross-validate and calibrate on, e.g. grocery; "
                        "default: every image")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return p.parse_args(argv)


def extract(split, embed, size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[Path], np.ndarray]:
    """Pooled features of every readable image of a split (decoded as the classifier decodes), and the images."""
    from train.data import decode_split

    x, y, paths = decode_split(split, size)
    return (in_batches(embed, x, batch_size) if len(x) else np.zeros((0, 1), np.float32)), y, paths, x


def in_batches(embed, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`embed` (images -> features) over `images`, `batch_size` at a time."""
    return np.concatenate([embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def view_features(split, embed, size: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of `args.views` augmented views of every training image (the distillation's views: a random
    resized crop, a flip and a colour jitter), so that the head also learns from crops, not only whole images.
    Returns the features, their labels and the index of the image (in `split`) each view came from."""
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
    return np.concatenate(feats), labels[image_index], np.asarray(kept)[image_index]


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, steps: int, lr: float) -> LinearHead:
    """Full-batch multinomial logistic regression (Adam with a cosine-decayed rate, L2) on standardized
    features."""
    # float32 throughout: a float64 weight matrix would copy the whole feature matrix to float64 every step.
    x = np.asarray(x, np.float32)
    mean, std = x.mean(0), x.std(0) + np.float32(1e-6)
    z = (x - mean) / std
    w, b = np.zeros((z.shape[1], n_classes), np.float32), np.zeros(n_classes, np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        # Cosine decay to zero: at a constant rate Adam circles the optimum of these separable problems, and
        # where it stops (the logits' scale, hence the temperature) would depend on the step count.
        rate = np.float32(lr * 0.5 * (1 + np.cos(np.pi * (t - 1) / steps)))
        logits = z @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grads = [z.T @ (p - onehot) / len(z) + l2 * w, (p - onehot).mean(0)]
        for i, (param, g) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            param -= rate * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
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
    from model.network import build_feature_extractor

    model = build_feature_extractor(args.input_size, weights=args.weights)
    # predict_on_batch runs the compiled graph: several times the throughput of eager calls on the CPU
    return (lambda x: np.asarray(model.predict_on_batch(x.astype(np.float32)))), args.input_size


def probe(args: argparse.Namespace) -> dict[str, float]:
    from train.data import Split, scan_dataset
    from train.metrics import top1_by_source

    classes, train_split, val_split = scan_dataset(args.data, seed=args.seed)
    embed, size = embedder(args)
    x_train, y_train, train_paths, _ = extract(train_split, embed, size, args.batch_size)
    x_val, y_val, val_paths, val_images = extract(val_split, embed, size, args.batch_size)
    x_fit, y_fit, owner = x_train, y_train, np.arange(len(y_train))
    if args.views:
        x_views, y_views, view_owner = view_features(Split(train_paths, list(y_train)), embed, size, args)
        x_fit, y_fit = np.concatenate([x_train, x_views]), np.concatenate([y_train, y_views])
        owner = np.concatenate([owner, view_owner])
    predict = fit_softmax(x_fit, y_fit, len(classes), args.l2, args.steps, args.lr)
    scores = {f"probe_{k}": v for k, v in top1_by_source(predict(x_val), y_val, val_paths).items()}
    train_acc = float((predict(x_train).argmax(1) == y_train).mean())
    print(f"train top1 {train_acc:.4f} on {len(y_train)} images (+{len(y_fit) - len(y_train)} views); "
          f"val n={len(y_val)}")
    for key, value in scores.items():
        print(f"{key}={value:.4f}")
    if args.out and args.weights:
        from train.crossval import Rows

        split_counts = {"train_counts": train_split.counts(classes), "val_counts": val_split.counts(classes)}
        fit_rows = Rows(x_fit, y_fit, owner)
        honesty_inputs = dict(rows=fit_rows, train=(x_train, y_train, train_paths),
                              val=(x_val, y_val, val_paths, val_images), embed=embed, size=size)
        save_probe_bundle(args, classes, predict, (val_images, y_val, val_paths), split_counts, honesty_inputs)
    return scores


def calibration_set(args: argparse.Namespace, classes: list[str], inputs: dict):
    """Out-of-fold logits and unknown scores of every labelled --calibrate-on photo (train.crossval), with the
    TTA mode they choose; `--cv 0` takes the val photos of those sources under the final head instead."""
    from train.calibrate import SHRINKAGE, source_mask
    from train.crossval import Rows, choose_tta, cross_fit
    from train.data import Split

    rows, (x_train, y_train, train_paths), (x_val, y_val, val_paths, _) = \
        inputs["rows"], inputs["train"], inputs["val"]
    embed, size = inputs["embed"], inputs["size"]
    val_pool = np.flatnonzero(source_mask(val_paths, args.calibrate_on))
    ids = np.concatenate([np.flatnonzero(source_mask(train_paths, args.calibrate_on)), len(y_train) + val_pool])
    if not len(ids):
        raise ValueError(f"no photos of source {', '.join(args.calibrate_on or [])} to calibrate on")
    # The val photos of the pool join the fitting rows (whole and as views) of every fold they are not held out in.
    val_rows = [x_val[val_pool]], [y_val[val_pool]], [len(y_train) + val_pool]
    if args.views:
        vx, vy, vo = view_features(Split([val_paths[i] for i in val_pool], list(y_val[val_pool])), embed, size, args)
        val_rows[0].append(vx), val_rows[1].append(vy), val_rows[2].append(len(y_train) + val_pool[vo])
    all_rows = Rows(np.concatenate([rows.x, *val_rows[0]]), np.concatenate([rows.y, *val_rows[1]]),
                    np.concatenate([rows.owner, *val_rows[2]]))
    plain = np.concatenate([x_train, x_val])[ids]
    pool_y = np.concatenate([y_train, y_val])[ids]
    pool_paths = [(list(train_paths) + list(val_paths))[i] for i in ids]
    mirror = None
    if args.tta != "none":
        from train.data import decode_split

        images, _, _ = decode_split(Split(pool_paths, list(pool_y)), size)
        mirror = in_batches(embed, np.ascontiguousarray(images[:, :, ::-1]), args.batch_size)
    scenes = scene_features(args.scenes, pool_paths, args.batch_size) if args.scenes else None

    def fit_head(x, y):
        return fit_softmax(x, y, len(classes), args.l2, args.steps, args.lr)

    oof = cross_fit(all_rows, ids, pool_y, plain, len(classes), fit_head, mirror=mirror, scenes=scenes,
                    folds=args.cv, seed=args.seed, shrinkage=SHRINKAGE)
    tta = choose_tta(oof, ["none", "flip"]) if args.tta == "auto" else args.tta
    for mode in oof.logits:
        s = oof.summary(mode)
        print(f"cv[{mode}] top1={s['top1_mean']:.4f} +- {s['top1_std']:.4f}  top5={s['top5_mean']:.4f} "
              f"+- {s['top5_std']:.4f}  (n={s['n']}, {s['folds']} folds)")
    print(f"tta: {tta}")
    return oof, tta


def scene_features(teacher_file: str, paths: list[Path], batch_size: int) -> np.ndarray:
    """A teacher's features of the photos (decoded as the classifier decodes, at the teacher's size)."""
    from model.images import load_images
    from train.teachers import load_teacher

    teacher = load_teacher(teacher_file)
    decoded = load_images(paths, teacher.input_size)  # the pool's photos were all readable at the backbone's size
    images = np.stack(decoded)
    return in_batches(teacher.features, images, batch_size)


def save_probe_bundle(args: argparse.Namespace, classes: list[str], head: LinearHead, val: tuple,
                      split_counts: dict, honesty_inputs: dict) -> None:
    """DenseNet121 with the backbone's weights and the probe as its `logits` layer: a classifier in its own right.
    The bundle folder also gets the val evaluation (metrics.json, report.txt, confusion_matrix.png), as a training
    run's bundle does, and its card carries those metrics; then its temperature, TTA mode and unknown statistics
    (train.calibrate), fitted on out-of-fold answers."""
    import datetime as dt

    from model.bundle import BundleConfig
    from model.network import build_model
    from model.unknown import fit_unknown
    from train.calibrate import SHRINKAGE, fit_honesty, source_mask, write_honesty
    from train.evaluate import save_evaluated_bundle

    model = build_model(len(classes), args.input_size, weights=args.weights)
    model.get_layer("logits").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    rows = honesty_inputs["rows"]
    detector = fit_unknown(rows.x, rows.y, len(classes), SHRINKAGE)
    x_val, y_val, val_paths, val_images = honesty_inputs["val"]
    mask = source_mask(val_paths, args.calibrate_on)
    if args.cv:
        oof, tta = calibration_set(args, classes, honesty_inputs)
        logits, labels, folds = oof.logits[tta], oof.y, oof.fold
    else:
        tta = "none" if args.tta == "auto" else args.tta
        logits, labels, folds = head(x_val[mask]), y_val[mask], 5
    # The unknown threshold passes --keep-rate of the val split's photos of those sources under the detector that
    # ships: another store visit, as new photos will be. The out-of-fold detectors, each fitted without a whole
    # scene, score held-out scenes several times farther than that: a threshold from them lets not-fruit through.
    known = x_val[mask]
    if tta == "flip":
        mirrored = np.ascontiguousarray(val_images[mask][:, :, ::-1])
        known = (known + in_batches(honesty_inputs["embed"], mirrored, args.batch_size)) / 2
    honesty = fit_honesty(logits, labels, detector.score(known), detector, args.keep_rate, folds=folds,
                          seed=args.seed)
    config = BundleConfig(labels=classes, input_size=args.input_size, weights=Path(args.weights).name,
                          temperature=honesty.temperature, tta=tta)
    card = {"architecture": "DenseNet121", "dataset": Path(args.data).resolve().name, "classes": classes,
            **split_counts, "input_size": args.input_size, "weights": config.weights,
            "head": "linear probe on the frozen backbone (python -m train.probe)",
            "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    if args.cv:
        card["cross_validation"] = {"sources": args.calibrate_on or "all", "tta": tta,
                                    "folds": "scenes: k-means per class on the features of "
                                             + (Path(args.scenes).name if args.scenes else "the backbone"),
                                    **{mode: oof.summary(mode) for mode in oof.logits}}
    save_evaluated_bundle(model, Path(args.out), config, val, card)
    write_honesty(args.out, honesty, logits, labels)


def main(argv: list[str] | None = None) -> dict[str, float]:
    return probe(parse_args(argv))


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
