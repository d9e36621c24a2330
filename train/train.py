"""
Title: Train a DenseNet121 classifier on a folder-per-class image dataset
Description: by default a calibrated linear head on the frozen pretrained backbone (minutes on a CPU); with
--fine-tune, two-phase fine-tuning of the whole network (hours on a CPU), or with --weights none from scratch.

    python -m train --data ../shared/datasets/fruits --out runs/fruits
    python -m train --data ../shared/datasets/fruits --fine-tune --weights distilled --input-size 128 \\
        --epochs 10 --head-epochs 2 --fine-tune-from conv1 --fine-tune-lr 1e-4 --out runs/fruits-fine-tuned

DIR is DIR/train/<class>/* + DIR/val/<class>/*, or DIR/<class>/* with --val-split of each class held out.
The backbone (--weights auto): ImageNet's DenseNet121 weights if Keras can download them, else the distilled
backbone this repository ships (model/fruits-densenet121, docs/distillation.md).

Default (frozen backbone, python -m train.frozen's recipe): the head is fitted on the train photos' pooled features
(and --views augmented views of each), calibrated on out-of-fold answers of --folds scene folds (temperature and
unknown threshold), and written with features.npz, so that python -m train.teach can teach it. --fine-tune: the
head on a frozen base, then the top blocks from --fine-tune-from at --fine-tune-lr; the temperature and unknown
statistics are fitted on the val photos, their ECE cross-validated over scene folds.

Outputs in the run folder: the bundle (bundle/), history.csv, accuracy.png and loss.png (per step of the head fit,
or per epoch with --fine-tune), confusion_matrix.png, report.txt and metrics.json on the val set. A run folder is
never overwritten without --resume, which continues an interrupted --fine-tune run from its last finished epoch.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

"""## Parameters (one place; every one is a command-line flag)"""

DEFAULTS = dict(  # --fine-tune
    epochs=25,  # as in the seed
    batch_size=32,
    input_size=224,  # the reference size; smaller trains much faster on CPU
    weights="auto",  # auto (imagenet, else distilled) | imagenet | distilled | none | a bundle folder | a weights file
    head_epochs=5,  # pretrained only: epochs with the base frozen before fine-tuning
    lr=1e-3,  # from scratch, and for the new head
    fine_tune_lr=1e-5,  # pretrained: fine-tuning the top blocks (keras-io transfer-learning guide)
    fine_tune_from="conv5",  # pretrained: unfreeze base layers from this block on
    weight_decay=1e-4,
    label_smoothing=0.1,
    dropout=0.2,
    class_weight="sqrt",  # balanced | sqrt | none
    val_split=0.2,  # only when DIR has no train/ + val/ folders
    seed=1337,
)
# The frozen path: train.frozen's recipe, with the views a 2-core laptop affords (each view is one more forward
# pass of every training photo). Its other defaults are train.frozen's.
FROZEN_VIEWS = 1
SHARED = ("input_size", "batch_size", "lr")  # flags of both paths whose defaults differ between them
HELP = dict(
    epochs="epochs in all, head epochs included",
    head_epochs="pretrained weights: epochs of the new head on the frozen base before fine-tuning",
    fine_tune_lr="pretrained weights: peak learning rate of the fine-tuning (warm-up, then cosine decay)",
    fine_tune_from="pretrained weights: unfreeze the base from the first layer whose name starts so (conv1: all)",
    weight_decay="AdamW's weight decay",
    label_smoothing="label smoothing of the cross-entropy",
    dropout="dropout before the new head",
    class_weight="class weights against imbalance: balanced, sqrt or none",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train.cli import parser
    from train.frozen import DEFAULTS as FROZEN
    from train.frozen import HELP as FROZEN_HELP
    from train.frozen import WEIGHTS_HELP, add_options

    p = parser("python -m train", __doc__)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="DIR/train/<class>/* and DIR/val/<class>/*, or DIR/<class>/* (split by --val-split)")
    p.add_argument("--out", default=None, metavar="DIR", help="the run folder (default runs/<dataset>-frozen-<size>,"
                   " with --fine-tune runs/<dataset>-densenet121-<size>)")
    p.add_argument("--weights", default="auto", help=f"{WEIGHTS_HELP}; none: from scratch, which trains the "
                   "whole network (implies --fine-tune) (default %(default)s)")
    p.add_argument("--fine-tune", action="store_true", help="train the network itself (two phases on pretrained "
                   "weights, one from scratch) instead of a head on the frozen backbone: hours instead of minutes")
    p.add_argument("--input-size", type=int, default=None, help=f"input size in pixels (default {FROZEN['input_size']}"
                   f", with --fine-tune {DEFAULTS['input_size']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per forward pass (default "
                   f"{FROZEN['batch_size']}), with --fine-tune per training step (default {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate of the head fit (default "
                   f"{FROZEN['lr']}), with --fine-tune of the new head or from scratch (default {DEFAULTS['lr']})")
    p.add_argument("--val-split", type=float, default=DEFAULTS["val_split"],
                   help=f"{FROZEN_HELP['val_split']} (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="random seed (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="write into a run folder that is not empty: with "
                   "--fine-tune, continue an interrupted run from its last finished epoch")
    frozen = p.add_argument_group("frozen backbone (the default)")
    add_options(frozen, {k: v for k, v in {**FROZEN, "views": FROZEN_VIEWS}.items() if k not in (*SHARED, *DEFAULTS)})
    tune = p.add_argument_group("--fine-tune")
    tune.add_argument("--extra-data", default=None, metavar="DIR",
                      help="folder-per-class images used only to learn features: trained as extra classes, "
                           "dropped from the saved model")
    tune.add_argument("--run-eagerly", action="store_true",
                      help="skip graph compilation (about a minute for DenseNet121 on CPU): for tiny smoke runs")
    for key in HELP:
        tune.add_argument(f"--{key.replace('_', '-')}", type=type(DEFAULTS[key]), default=DEFAULTS[key],
                          help=f"{HELP[key]} (default %(default)s)")
    return p.parse_args(argv)


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """The path and its defaults: --weights none trains from scratch (--fine-tune), the shared flags take the
    path's defaults, and fine-tuning flags given to the frozen path are refused or noted."""
    from train.frozen import DEFAULTS as FROZEN

    if not args.fine_tune and str(args.weights).lower() in ("none", "", "scratch"):
        print("note: --weights none trains the whole network from scratch: --fine-tune")
        args.fine_tune = True
    for key in SHARED:
        if getattr(args, key) is None:
            setattr(args, key, (DEFAULTS if args.fine_tune else FROZEN)[key])
    if not args.fine_tune:
        if args.extra_data:
            raise ValueError("--extra-data trains extra classes into the network: it needs --fine-tune (the frozen "
                             "path takes photos of none of the classes as --ood)")
        ignored = [f"--{k.replace('_', '-')}" for k in HELP if getattr(args, k) != DEFAULTS[k]]
        if ignored or args.run_eagerly:
            print(f"note: {', '.join(ignored + ['--run-eagerly'] * args.run_eagerly)} only apply with --fine-tune")
    return args


def prepare_run(args: argparse.Namespace) -> Path:
    """The run folder: new, or one not empty with `--resume` (train.runs.open_run)."""
    from train.runs import open_run

    kind = "densenet121" if args.fine_tune else "frozen"
    return open_run(args.out or f"runs/{Path(args.data).resolve().name}-{kind}-{args.input_size}", args.resume)


def main(argv: list[str] | None = None) -> Path:
    from model.network import resolve_weights
    from train.frozen import backbone

    args = settle(parse_args(argv))
    run = prepare_run(args)
    args.weights = backbone(args.weights, args.input_size)
    pretrained = resolve_weights(args.weights) is not None  # a missing local weights file fails here, at once
    if not args.fine_tune:
        return train_frozen(run, args)
    return fine_tune(run, args, pretrained)


"""## The default: a calibrated head on the frozen backbone (train.frozen)"""


def train_frozen(run: Path, args: argparse.Namespace) -> Path:
    from model.bundle import BundleConfig
    from train.frozen import run as fit_head

    fit_head(args, bundle_dir=run / "bundle", run_dir=run, command="python -m train")
    print(f"run folder: {run}  model_version={BundleConfig.read(run / 'bundle').model_version}")
    return run


"""## Data: scan the folders, decode every image once (parallel threads), keep it in memory"""


@dataclass
class Data:
    classes: list[str]  # the dataset's classes: the saved model's labels
    labels: list[str]  # the classes trained on: `classes`, then any extra ones
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_paths: list[str]
    card: dict  # what the model card says about the data


def load_data(args: argparse.Namespace) -> Data:
    """Train and val arrays; images of `--extra-data` join the training set as extra classes."""
    from train.data import decode_split, scan_dataset

    classes, train_split, val_split = scan_dataset(Path(args.data), args.val_split, args.seed)
    labels = list(classes)
    x_train, y_train, _ = decode_split(train_split, args.input_size)
    if args.extra_data:
        extra_classes, extra_train, extra_val = scan_dataset(args.extra_data, args.val_split, args.seed)
        x_extra, y_extra, _ = decode_split(extra_train, args.input_size)
        x_extra2, y_extra2, _ = decode_split(extra_val, args.input_size)
        offset = len(labels)
        labels += [f"extra:{c}" for c in extra_classes]
        x_train = np.concatenate([x_train, x_extra, x_extra2])
        y_train = np.concatenate([y_train, y_extra + offset, y_extra2 + offset])
    x_val, y_val, val_paths = decode_split(val_split, args.input_size)
    print(f"{len(x_train)} train images, {len(x_val)} val images, {len(classes)} classes"
          + (f" (+{len(labels) - len(classes)} extra classes for feature learning)" if len(labels) > len(classes)
             else ""))
    card = {"dataset": str(Path(args.data).resolve().name),
            "extra_data": Path(args.extra_data).resolve().name if args.extra_data else None,
            "classes": classes, "train_counts": train_split.counts(classes), "val_counts": val_split.counts(classes)}
    return Data(classes, labels, x_train, y_train, x_val, y_val, [str(p) for p in val_paths], card)


"""## Input pipeline: tf.data with cache, shuffle, parallel augmentation and prefetch"""


def make_datasets(data: Data, args: argparse.Namespace):
    """(train dataset, val dataset or None, steps per epoch); one-hot labels, class weights per sample."""
    import tensorflow as tf

    from train.data import class_weights, make_eval_dataset, make_train_dataset

    n_classes = len(data.labels)
    cw = class_weights(data.y_train, n_classes, args.class_weight)
    onehot = np.eye(n_classes, dtype=np.float32)
    train_ds = make_train_dataset(data.x_train, onehot[data.y_train], cw[data.y_train], args.batch_size, args.seed)
    val_ds = make_eval_dataset(data.x_val, onehot[data.y_val], args.batch_size) if len(data.x_val) else None
    return train_ds, val_ds, int(tf.data.experimental.cardinality(train_ds))


"""## Model: DenseNet121 + new head; from scratch, or two phases on pretrained weights"""


def cosine_schedule(lr: float, total_steps: int, warmup_steps: int):
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr / 10, decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
        warmup_target=lr, warmup_steps=warmup_steps,
    )


def compile_model(model, lr, weight_decay: float, label_smoothing: float, run_eagerly: bool = False) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=False,  # XLA spends minutes compiling DenseNet121 on CPU for no measured gain
        run_eagerly=run_eagerly,
    )


def callbacks(run: Path, phase: str, resume: bool, bar) -> list:
    """train.runs' per-epoch checkpoint and history, one backup per phase, the last model as a file, and the
    progress bar of the whole run."""
    import keras

    from train.runs import run_callbacks

    latest = keras.callbacks.ModelCheckpoint(str(run / "checkpoint.keras"), save_freq="epoch")
    return [*run_callbacks(run, latest, backup=f"backup-{phase}", append=resume or phase != "1"), bar]


def fit(model, train_ds, val_ds, steps: int, run: Path, args: argparse.Namespace, pretrained: bool) -> None:
    """From scratch: one phase on a warm-up + cosine schedule. Pretrained: the head on a frozen base, then
    the top blocks fine-tuned at a low learning rate (the keras-io transfer-learning recipe), warmed up and decayed.
    One progress bar follows every step of both phases (its ETA is the run's), with a line per epoch."""
    from train.runs import progress_bar

    bar = progress_bar(steps, args.epochs, desc="fine-tune" if pretrained else "train")
    common = dict(x=train_ds, validation_data=val_ds, verbose=0)
    if not pretrained:
        compile_model(model, cosine_schedule(args.lr, steps * args.epochs, steps), args.weight_decay,
                      args.label_smoothing, args.run_eagerly)
        model.fit(epochs=args.epochs, callbacks=callbacks(run, "1", args.resume, bar), **common)
        return
    head_epochs = min(args.head_epochs, args.epochs)
    phase1_done = run / "phase1.weights.h5"
    if phase1_done.exists():
        model.load_weights(phase1_done)
    else:
        freeze_base(model, frozen=True)  # phase 1: train only the new head
        compile_model(model, args.lr, args.weight_decay, args.label_smoothing, args.run_eagerly)
        model.fit(epochs=head_epochs, callbacks=callbacks(run, "1", args.resume, bar), **common)
        model.save_weights(phase1_done)
    freeze_base(model, frozen=False, from_block=args.fine_tune_from)  # phase 2
    # Warm-up then cosine here too: a fresh optimizer meeting newly unfrozen layers is where fine-tuning breaks.
    schedule = cosine_schedule(args.fine_tune_lr, steps * max(1, args.epochs - head_epochs), steps)
    compile_model(model, schedule, args.weight_decay, args.label_smoothing, args.run_eagerly)
    if args.epochs > head_epochs:
        model.fit(epochs=args.epochs, initial_epoch=head_epochs, callbacks=callbacks(run, "2", True, bar),
                  **common)


def freeze_base(model, frozen: bool, from_block: str = "") -> None:
    """Freeze the whole DenseNet base, or unfreeze it from `from_block` on (BatchNorm layers stay frozen)."""
    import keras

    from model.network import base_of

    base = base_of(model)
    base.trainable = not frozen
    if frozen:
        return
    unfrozen = False
    for layer in base.layers:
        unfrozen = unfrozen or layer.name.startswith(from_block)
        layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)


"""## Export: the saved model keeps only the dataset's classes"""


def export_model(trained, n_keep: int, input_size: int, dropout: float, pretrained: bool):
    """Copy the trained weights into a model with only the first `n_keep` outputs (drops extra classes)."""
    from model.network import build_model

    if int(trained.outputs[0].shape[-1]) == n_keep:
        return trained
    final = build_model(n_keep, input_size, weights=None, dropout=dropout, base_inference_mode=pretrained)
    for layer in trained.layers:
        weights = layer.get_weights()
        if layer.name == "logits":
            weights = [weights[0][:, :n_keep], weights[1][:n_keep]]
        final.get_layer(layer.name).set_weights(weights)
    return final



"""## Evaluate the exported model through the same prediction API the demo and workers use; save the bundle"""


def evaluate_and_save(final, data: Data, run: Path, args: argparse.Namespace, pretrained: bool):
    """metrics.json, report.txt and the confusion matrix in the run folder; then the bundle, whose card
    carries those metrics (written once)."""
    from model.bundle import BundleConfig, save_bundle
    from model.predict import Classifier
    from train.evaluate import card_metrics, write_evaluation

    config = BundleConfig(labels=data.classes, input_size=args.input_size,
                          weights=args.weights if not pretrained or args.weights == "imagenet"
                          else Path(args.weights).name)
    classifier = Classifier(final, config)  # in memory: TensorFlow, no conversion to cache
    probs = (classifier.forward(data.x_val.astype(np.float32)) if len(data.x_val)
             else np.zeros((0, len(data.classes))))
    summary = write_evaluation(run, data.y_val, probs, data.classes, data.val_paths)
    metrics = card_metrics(summary)
    card = {
        "architecture": "DenseNet121", **data.card, "epochs": args.epochs, "input_size": args.input_size,
        "weights": config.weights, "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "metrics": metrics,
    }
    return save_bundle(final, run / "bundle", config, card)


"""## Report: the learning curves beside the confusion matrix"""


def plot_history(run: Path) -> None:
    from train.plots import plot_curve, read_history

    history = read_history(run / "history.csv")
    plot_curve(history, "accuracy", run / "accuracy.png", "Accuracy")
    plot_curve(history, "loss", run / "loss.png", "Loss")


"""## --fine-tune: the network itself, in one phase from scratch or two on pretrained weights"""


def fine_tune(run: Path, args: argparse.Namespace, pretrained: bool) -> Path:
    import keras

    from model.bundle import BundleConfig
    from model.network import build_model

    data = load_data(args)
    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, steps = make_datasets(data, args)
    model = build_model(len(data.labels), args.input_size, weights=args.weights, dropout=args.dropout)
    fit(model, train_ds, val_ds, steps, run, args, pretrained)
    final = export_model(model, len(data.classes), args.input_size, args.dropout, pretrained)
    config = evaluate_and_save(final, data, run, args, pretrained)
    plot_history(run)
    if len(data.x_val):  # the last step of every bundle: calibrated confidences and the unknown statistics
        from train.calibrate import calibrate_bundle

        calibrate_bundle(run / "bundle", args.data, val_fraction=args.val_split, seed=args.seed)
        config = BundleConfig.read(run / "bundle")
    print(f"run folder: {run}  model_version={config.model_version}")
    return run


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
