"""
Title: Match the teachers' fruit classifier on the same views (task distillation)
Description: the second distillation step. `train.distill` gave DenseNet121 the teachers' features; here the
whole classifier learns to give the same class probabilities as a classifier built on the teachers, on
exactly the augmented views the teachers saw.

    python -m train.match --teacher ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite [--teacher ...] \\
        --labels ../shared/datasets/fruits \\
        --data ../shared/datasets/fruits/train --data ../shared/datasets/grocery-other \\
        --init model/fruits-densenet121 --input-size 96 --epochs 4 --out runs/match [--resume]

"Function matching" (Beyer et al., "Knowledge distillation: a good teacher is patient and consistent", 2022):
the teacher is a linear classifier on the teachers' concatenated pooled features, fitted on the labelled
views of `--labels DIR/train` (the strongest fruit classifier this machine holds). The student, a DenseNet121
classifier started from a bundle (`--init`, e.g. the distilled backbone with its linear probe), minimises the
KL divergence to the teacher's probabilities on every cached view, the unlabelled ones (grocery-other)
included: it learns the teacher's function on many more images than there are labels.

Outputs in the run folder: `bundle/` (the classifier, with its val report, confusion matrix and card),
`history.csv` (loss and val top-1 per epoch, overall and per source), `loss.png`, `accuracy.png`, `card.json`
and `views.npz`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

from train.metrics import top1_by_source

"""## Parameters (one place; every one is a command-line flag)"""

DEFAULTS = dict(
    epochs=4,  # an epoch is one pass over every cached view
    views=4,  # augmented views per image, each run through every teacher once and cached
    input_size=96,  # the student's input; 2 CPU cores train ~20 img/s at 96 px
    source_size=256,
    batch_size=64,
    lr=5e-4,  # a fine-tuning rate: the student starts from a trained classifier
    weight_decay=0.05,
    min_area=0.25,
    temperature=1.0,  # softens the teacher's probabilities; 1 = match them as they are
    l2=1e-3,  # the teacher classifier's regularisation (train.probe.fit_softmax)
    seed=1337,
    threads=0,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.match", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--teacher", action="append", required=True, help=".tflite, .onnx or .keras (repeatable)")
    p.add_argument("--labels", required=True, help="the labelled dataset: DIR/train/<class>/*, DIR/val/<class>/*")
    p.add_argument("--data", action="append", required=True, help="folders of training images, labelled or not "
                                                                   "(repeatable; never a val/test split)")
    p.add_argument("--init", required=True, help="the model bundle the student starts from (any input size)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (also to extend --epochs)")
    p.add_argument("--run-eagerly", action="store_true", help="skip graph compilation: for tiny smoke runs")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return p.parse_args(argv)


"""## The teacher classifier: a linear probe on the teachers' features of the labelled views"""


def view_labels(views: dict, train_paths: list[Path], train_labels: list[int]) -> np.ndarray:
    """The class of every view whose image is a labelled training image, else -1."""
    label_of = {str(Path(p).resolve()): y for p, y in zip(train_paths, train_labels, strict=True)}
    per_image = np.array([label_of.get(str(Path(p).resolve()), -1) for p in views["paths"]])
    return per_image[views["image_index"]]


def teacher_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def teacher_val_scores(teachers: list, head, views: dict, val: tuple) -> dict[str, float]:
    """The teacher classifier's own val top-1 (whole image at each teacher's size): what the student chases."""
    from model.images import load_images

    images, y, paths = val
    feats = []
    for teacher in teachers:
        pixels = np.stack(load_images(paths, teacher.input_size))
        feats.append(np.concatenate([teacher.features(pixels[i:i + 64]) for i in range(0, len(pixels), 64)]))
    z = (np.concatenate(feats, axis=1) - views["target_mean"]) / views["target_std"]
    return top1_by_source(head(z), y, paths)


"""## The student: a DenseNet121 classifier started from a bundle, KL to the teacher, val top-1 every epoch"""


def build_student(init: str, n_classes: int, input_size: int):
    """DenseNet121 at `input_size` holding the weights of the bundle in `init` (convolutions take any size).
    BatchNorm trains (base_inference_mode=False): its statistics must follow the new input size."""
    from model.bundle import BundleConfig, load_keras_model
    from model.network import build_model

    config = BundleConfig.read(init)
    if len(config.labels) != n_classes:
        raise ValueError(f"--init {init} has {len(config.labels)} classes, the labelled data {n_classes}")
    student = build_model(n_classes, input_size, weights=None, base_inference_mode=False)
    student.set_weights(load_keras_model(init).get_weights())
    return student, config


def val_callback(images: np.ndarray, y: np.ndarray, paths: list, batch_size: int):
    """Adds val top-1 (overall and per source) to each epoch's logs, before CSVLogger writes them."""
    import keras

    class ValTop1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
            scores = top1_by_source(probs, y, paths)
            logs.update({f"val_{k}": v for k, v in scores.items()})
            print("  ".join(f"val_{k}={v:.4f}" for k, v in scores.items()))

    return ValTop1()


def fit_student(run: Path, student, x: np.ndarray, targets: np.ndarray, val: tuple, args: argparse.Namespace):
    import keras

    from train.distill import epoch_timer, run_callbacks, view_dataset

    keras.utils.set_random_seed(args.seed)
    steps = max(1, len(x) // args.batch_size)
    ds = view_dataset(x, targets, args.batch_size, args.seed)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr / 10, decay_steps=steps * args.epochs, alpha=0.01, warmup_target=args.lr,
        warmup_steps=max(1, steps // 4))
    student.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
                    loss=keras.losses.KLDivergence(), jit_compile=False, run_eagerly=args.run_eagerly)
    timer = epoch_timer(steps * args.batch_size)
    images, y, paths = val
    student.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=1 if sys.stdout.isatty() else 2,
                callbacks=run_callbacks(run, timer, val_callback(images, y, paths, args.batch_size)))
    return timer


def main(argv: list[str] | None = None) -> Path:
    from train.data import decode_split, scan_dataset
    from train.distill import cost_report, open_run, teachers_and_views
    from train.probe import fit_softmax

    args = parse_args(argv)
    run = open_run(args.out, args.resume)

    """## Data, teachers and the cached views (train.distill's: every view through every teacher, once)"""
    classes, train_split, val_split = scan_dataset(args.labels, seed=args.seed)
    teachers, views = teachers_and_views(run, args)

    """## The teacher classifier, fitted on the labelled views; its probabilities on every view are the targets"""
    y_views = view_labels(views, train_split.paths, train_split.labels)
    if not (y_views >= 0).any():
        sys.exit(f"no --data image is a training image of {args.labels}: the teacher classifier needs labels")
    z = views["targets"].astype(np.float32)
    head = fit_softmax(z[y_views >= 0], y_views[y_views >= 0], len(classes), args.l2, steps=500, lr=0.05)
    targets = teacher_probs(head(z), args.temperature)
    val = decode_split(val_split, args.input_size)
    teacher_scores = teacher_val_scores(teachers, head, views, val)
    print(f"{int((y_views >= 0).sum())} labelled views of {len(y_views)}; teacher classifier on val: "
          + "  ".join(f"{k}={v:.4f}" for k, v in teacher_scores.items()))

    """## Fit the student on the cached views; a checkpoint every epoch (--resume continues there)"""
    student, init_config = build_student(args.init, len(classes), args.input_size)
    timer = fit_student(run, student, views["student"], targets, val, args)

    """## Save the classifier as a bundle with its val evaluation, the curves and the card"""
    from model.bundle import BundleConfig
    from train.evaluate import save_evaluated_bundle
    from train.plots import plot_curve, plot_series, read_history

    history = read_history(run / "history.csv")
    plot_curve(history, "loss", run / "loss.png", "Task distillation loss (KL to the teacher classifier)")
    plot_series(history, sorted(k for k in history if k.startswith("val_top1")), run / "accuracy.png",
                "Val top-1 per epoch, overall and per source", "top-1")
    card = {
        "architecture": "DenseNet121",
        "dataset": Path(args.labels).resolve().name,
        "classes": classes,
        "train_counts": train_split.counts(classes),
        "val_counts": val_split.counts(classes),
        "input_size": args.input_size,
        "weights": f"bundle {init_config.model_version} ({init_config.weights})",
        "head": "whole classifier matched to a linear classifier on the teachers' features (python -m train.match)",
        "teachers": [t.card() for t in teachers],
        "teacher_classifier_val": teacher_scores,
        "data": [str(Path(d).resolve()) for d in args.data],
        "views": len(views["student"]),
        "labelled_views": int((y_views >= 0).sum()),
        "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
        "epochs_done": len(history.get("loss", [])),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if timer.seconds:
        card["cost"] = cost_report(views, teachers, timer, args.epochs)
    config = BundleConfig(labels=classes, input_size=args.input_size, weights=init_config.weights)
    save_evaluated_bundle(student, run / "bundle", config, val, card)
    (run / "card.json").write_text(json.dumps(card, indent=2))
    return run


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
