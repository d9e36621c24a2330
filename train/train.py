"""
Title: Train DenseNet121 on a folder-per-class image dataset
Description: transfer learning from ImageNet when the weights can be had, from scratch otherwise.

    python -m train --data ../shared/datasets/fruits --weights none --input-size 64 --out runs/fruits

Outputs in the run folder: the model bundle (`bundle/`), `history.csv`, `accuracy.png`, `loss.png`,
`confusion_matrix.png`, `report.txt` and `metrics.json` on the val set. Interrupted runs continue with
`--resume` from the last finished epoch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import numpy as np

from train.data import class_weights, decode_split, make_eval_dataset, make_train_dataset, scan_dataset
from train.evaluate import write_evaluation

"""## Parameters (one place; every one is a command-line flag)"""

DEFAULTS = dict(
    epochs=25,  # as in the seed
    batch_size=32,
    input_size=224,  # the reference size; smaller trains much faster on CPU
    weights="imagenet",  # imagenet | none | PATH to a local DenseNet121 weights file
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--data", required=True, help="DIR/train/<class>/*, DIR/val/<class>/* (or DIR/<class>/*)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-densenet121-<size>)")
    p.add_argument("--extra-data", default=None,
                   help="folder-per-class images used only to learn features: trained as extra classes, "
                        "dropped from the saved model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--run-eagerly", action="store_true",
                   help="skip graph compilation (about a minute for DenseNet121 on CPU): for tiny smoke runs")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return p.parse_args(argv)


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


def callbacks(run: Path, phase: str, resume: bool, verbose: int) -> list:
    import keras

    return [
        # Saves model + optimizer + epoch every epoch; on --resume, fit() restarts from there. Kept after the
        # run ends, so that `--resume --epochs N` can also extend a finished run.
        keras.callbacks.BackupAndRestore(str(run / f"backup-{phase}"), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(run / "checkpoint.keras"), save_freq="epoch"),
        keras.callbacks.CSVLogger(str(run / "history.csv"), append=resume or phase != "1"),
        keras.callbacks.TerminateOnNaN(),
    ]


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


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    data_dir = Path(args.data)
    run = Path(args.out or f"runs/{data_dir.resolve().name}-densenet121-{args.input_size}")
    if run.exists() and any(run.iterdir()) and not args.resume:
        sys.exit(f"run folder {run} is not empty: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    verbose = 1 if sys.stdout.isatty() else 2

    """## Data: scan the folders, decode every image once (parallel threads), keep it in memory"""
    from model.network import resolve_weights

    weights = resolve_weights(args.weights)  # a missing local file fails here, before any work
    classes, train_split, val_split = scan_dataset(data_dir, args.val_split, args.seed)
    all_labels = list(classes)
    x_train, y_train, _ = decode_split(train_split, args.input_size)
    if args.extra_data:
        extra_classes, extra_train, extra_val = scan_dataset(args.extra_data, args.val_split, args.seed)
        x_extra, y_extra, _ = decode_split(extra_train, args.input_size)
        x_extra2, y_extra2, _ = decode_split(extra_val, args.input_size)
        offset = len(all_labels)
        all_labels += [f"extra:{c}" for c in extra_classes]
        x_train = np.concatenate([x_train, x_extra, x_extra2])
        y_train = np.concatenate([y_train, y_extra + offset, y_extra2 + offset])
    x_val, y_val, val_paths = decode_split(val_split, args.input_size)
    n_classes, n_keep = len(all_labels), len(classes)
    print(f"{len(x_train)} train images, {len(x_val)} val images, {n_keep} classes"
          + (f" (+{n_classes - n_keep} extra classes for feature learning)" if n_classes > n_keep else ""))

    """## Input pipeline: tf.data with cache, shuffle, parallel augmentation and prefetch"""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    cw = class_weights(y_train, n_classes, args.class_weight)
    onehot = np.eye(n_classes, dtype=np.float32)
    train_ds = make_train_dataset(x_train, onehot[y_train], cw[y_train], args.batch_size, args.seed)
    val_ds = make_eval_dataset(x_val, onehot[y_val], args.batch_size) if len(x_val) else None
    steps = int(tf.data.experimental.cardinality(train_ds))

    """## Model: DenseNet121 + new head; from scratch, or two phases on pretrained weights"""
    from model.network import base_of, build_model

    pretrained = weights is not None
    model = build_model(n_classes, args.input_size, weights=args.weights, dropout=args.dropout)
    common = dict(x=train_ds, validation_data=val_ds, verbose=verbose)
    if not pretrained:
        compile_model(model, cosine_schedule(args.lr, steps * args.epochs, steps), args.weight_decay,
                      args.label_smoothing, args.run_eagerly)
        model.fit(epochs=args.epochs, callbacks=callbacks(run, "1", args.resume, verbose), **common)
    else:
        head_epochs = min(args.head_epochs, args.epochs)
        phase1_done = run / "phase1.weights.h5"
        if not phase1_done.exists():
            base_of(model).trainable = False  # phase 1: train only the new head
            compile_model(model, args.lr, args.weight_decay, args.label_smoothing, args.run_eagerly)
            model.fit(epochs=head_epochs, callbacks=callbacks(run, "1", args.resume, verbose), **common)
            model.save_weights(phase1_done)
        else:
            model.load_weights(phase1_done)
        base = base_of(model)  # phase 2: fine-tune the top blocks at a low learning rate
        base.trainable = True
        unfrozen = False
        for layer in base.layers:
            unfrozen = unfrozen or layer.name.startswith(args.fine_tune_from)
            layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
        compile_model(model, args.fine_tune_lr, args.weight_decay, args.label_smoothing, args.run_eagerly)
        if args.epochs > head_epochs:
            model.fit(epochs=args.epochs, initial_epoch=head_epochs,
                      callbacks=callbacks(run, "2", True, verbose), **common)

    """## Save the bundle, then evaluate it through the same prediction API the demo and workers use"""
    from model.bundle import BundleConfig, save_bundle
    from model.predict import Classifier

    final = export_model(model, n_keep, args.input_size, args.dropout, pretrained)
    config = BundleConfig(labels=classes, input_size=args.input_size,
                          weights=args.weights if not pretrained or args.weights == "imagenet"
                          else Path(args.weights).name)
    card = {
        "architecture": "DenseNet121",
        "dataset": str(data_dir.resolve().name),
        "extra_data": Path(args.extra_data).resolve().name if args.extra_data else None,
        "classes": classes,
        "train_counts": train_split.counts(classes),
        "val_counts": val_split.counts(classes),
        "epochs": args.epochs,
        "input_size": args.input_size,
        "weights": config.weights,
        "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    bundle_dir = run / "bundle"
    config = save_bundle(final, bundle_dir, config, card)
    classifier = Classifier(final, config)
    probs = classifier.forward(x_val.astype(np.float32)) if len(x_val) else np.zeros((0, n_keep))
    summary = write_evaluation(run, y_val, probs, classes, [str(p) for p in val_paths])
    card["metrics"] = {"val": {k: summary[k] for k in ("n", "top1", "top5", "macro_f1", "ece")}}
    if "groups" in summary:
        card["metrics"]["val_by_source"] = summary["groups"]
    save_bundle(final, bundle_dir, config, card)

    from train.plots import plot_curve, read_history

    history = read_history(run / "history.csv")
    plot_curve(history, "accuracy", run / "accuracy.png", "Accuracy")
    plot_curve(history, "loss", run / "loss.png", "Loss")
    print(f"run folder: {run}  model_version={config.model_version}")
    return run


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
