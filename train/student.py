"""The distillation's student: DenseNet121 features -> one linear projection per teacher, a cosine loss per
teacher, trained on the cached views."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from train.runs import epoch_timer, run_callbacks


def build_student(input_size: int, dims: list[int], init: str | None = None):
    import keras

    from model.network import build_feature_extractor

    backbone = build_feature_extractor(input_size, weights=init)  # None: from scratch
    projection = keras.layers.Dense(sum(dims), name="teacher_projection")(backbone.output)
    return keras.Model(backbone.input, projection, name="distill_student")


def per_teacher_cosine(dims: list[int]):
    """Mean over teachers of 1 - cos(student projection, teacher feature): every teacher counts the same."""
    import keras
    from keras import ops

    bounds = np.cumsum([0] + dims).tolist()

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        terms = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            a = keras.utils.normalize(y_true[:, lo:hi], axis=-1)
            b = keras.utils.normalize(y_pred[:, lo:hi], axis=-1)
            terms.append(1.0 - ops.sum(a * b, axis=-1))
        return ops.mean(ops.stack(terms, axis=-1), axis=-1)

    return loss


def fit_student(run: Path, views: dict, dims: list[int], args: argparse.Namespace):
    import keras

    keras.utils.set_random_seed(args.seed)
    n_images = int(views["image_index"].max()) + 1
    steps = max(1, n_images // args.batch_size)
    ds = view_dataset(views["student"], views["targets"], args.batch_size, args.seed)
    model = build_student(args.input_size, dims, args.init)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr / 10, decay_steps=steps * args.epochs, alpha=0.01, warmup_target=args.lr, warmup_steps=steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
                  loss=per_teacher_cosine(dims), jit_compile=False, run_eagerly=args.run_eagerly)
    timer = epoch_timer(steps * args.batch_size)
    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=1 if sys.stdout.isatty() else 2,
              callbacks=[*run_callbacks(run), timer])
    return model, timer


def view_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """Cached views and their targets, shuffled and repeated; pixels go to the model as float32."""
    import tensorflow as tf

    def to_float(x, y):
        return tf.cast(x, tf.float32), y

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).shuffle(len(images), seed=seed).repeat()
    return ds.batch(batch_size).map(to_float).prefetch(tf.data.AUTOTUNE)
