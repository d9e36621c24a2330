"""The --fine-tune path of `python -m train`: the network itself, in one phase from scratch or two on pretrained
weights (a head on the frozen base, then the top blocks), keras-io's transfer-learning recipe. Every image is
decoded once, kept in memory and augmented in a tf.data pipeline; a checkpoint and history row every epoch
(train.runs), so --resume continues an interrupted run."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

"""## Parameters (one place; every one is a flag of `python -m train --fine-tune`)"""

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
