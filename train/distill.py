"""
Title: Distil ImageNet teachers into a DenseNet121 backbone
Description: where DenseNet121's ImageNet weights cannot be downloaded, teach it what small ImageNet-pretrained
models know about photos, then fine-tune it on the labelled data with `python -m train --weights`.

    python -m train.distill --teacher ../shared/teachers/mobilenet_v2_1.0_224_quant.tflite \\
        --data ../shared/datasets/fruits/train --data ../shared/datasets/grocery-other \\
        --input-size 64 --epochs 20 --out runs/distill [--resume]

A DenseNet121 (include_top=False, from scratch) learns to reproduce each teacher's pooled feature (cosine
loss on standardized features, through one linear projection per teacher) on exactly the augmented view
the teacher saw (Beyer et al., "Knowledge distillation: a good teacher is patient and consistent", 2022).
Labels are not used: any folder of images counts, but never a val or test split.

Outputs in the run folder: `densenet121_distilled.weights.h5` (the start for `python -m train --weights`),
`history.csv`, `loss.png`, `card.json` (teachers by file name and sha256, data, timings) and `views.npz`,
the cached views and teacher targets, so that `--resume` never runs a teacher again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

"""## Parameters (one place; every one is a command-line flag)"""

DEFAULTS = dict(
    epochs=20,  # an epoch draws one view per image on average from the view pool
    views=4,  # augmented views per image, each run through every teacher once and cached
    input_size=64,  # the student's input; 2 CPU cores train ~37 img/s at 64 px, <19 img/s at 96 px
    source_size=256,  # images are decoded once at this size; views are cropped from it
    batch_size=64,
    lr=2e-3,
    weight_decay=0.05,
    min_area=0.25,  # random resized crop: smallest fraction of the image a view keeps
    seed=1337,
    threads=0,  # teacher threads; 0 = all cores
)
WEIGHTS_FILE = "densenet121_distilled.weights.h5"
HELD_OUT_SPLITS = {"val", "validation", "test", "testing"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--teacher", action="append", required=True, help=".tflite, .onnx or .keras (repeatable)")
    p.add_argument("--data", action="append", required=True, help="folder of images, any layout (repeatable)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (also to extend --epochs)")
    p.add_argument("--init", help="a DenseNet121 backbone weights file to start from (an earlier distillation's, "
                   "to continue it on fresh views, another seed or input size); default: from scratch")
    p.add_argument("--run-eagerly", action="store_true", help="skip graph compilation: for tiny smoke runs")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return p.parse_args(argv)


def list_images(folders: list[str]) -> list[Path]:
    """Every image under the folders, sorted. A folder that is itself a val/test split is refused; a dataset
    root is taken whole (its val images are then distilled on: fine for extra data such as grocery-other,
    never for the dataset the model is judged on), and the count of such images is printed."""
    from model.images import scan_folder

    paths = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
        if folder.resolve().name.lower() in HELD_OUT_SPLITS:
            raise ValueError(f"{folder} is a val/test split: distil on training images only, so the "
                             "evaluation images stay unseen")
        scan = scan_folder(folder, recursive=True)  # the batch path's listing: hidden files are skipped
        held_out = [f for f in scan.images
                    if HELD_OUT_SPLITS & {p.lower() for p in f.relative_to(scan.folder).parts[:-1]}]
        if held_out:
            print(f"note: {len(held_out)} images under {folder} sit in val/test folders and are used as "
                  "unlabelled distillation data")
        paths += scan.images
    if not paths:
        raise ValueError(f"no images found under {', '.join(folders)}")
    return paths


"""## Views and teacher targets: decode once, render every view twice, run each teacher once per view"""


def build_views(paths: list[Path], teachers: list, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from model.images import load_images
    from train.views import ViewPolicy, render_batch, sample_specs

    sources = load_images(paths, args.source_size)
    kept = [i for i, s in enumerate(sources) if not isinstance(s, Exception)]
    for i in sorted(set(range(len(paths))) - set(kept)):
        print(f"skipping {paths[i]}: {sources[i]}")
    sources = np.stack([sources[i] for i in kept])
    rng = np.random.default_rng(args.seed)
    specs = sample_specs(len(sources), args.views, ViewPolicy(min_area=args.min_area), rng)
    image_index = np.repeat(np.arange(len(sources)), args.views)
    student = np.empty((len(specs), args.input_size, args.input_size, 3), np.uint8)
    targets = [np.empty((len(specs), t.dim), np.float32) for t in teachers]
    seconds = np.zeros(len(teachers))
    for start in tqdm(range(0, len(specs), 64), desc="teacher targets", unit="batch"):
        sl = slice(start, start + 64)
        student[sl] = render_batch(sources, image_index[sl], specs[sl], args.input_size)
        seen_at = {}  # teachers of one input size see one rendering
        for k, teacher in enumerate(teachers):
            if teacher.input_size not in seen_at:
                seen_at[teacher.input_size] = render_batch(sources, image_index[sl], specs[sl], teacher.input_size)
            seen = seen_at[teacher.input_size]
            t0 = time.perf_counter()
            targets[k][sl] = teacher.features(seen)
            seconds[k] += time.perf_counter() - t0
    # Standardized per dimension, so that no few high-variance channels dominate the cosine.
    stats = [(t.mean(0), t.std(0) + 1e-6) for t in targets]
    y = np.concatenate([(t - m) / s for t, (m, s) in zip(targets, stats, strict=True)], axis=1)
    return dict(student=student, targets=y.astype(np.float16), specs=specs, image_index=image_index,
                target_mean=np.concatenate([m for m, _ in stats]), target_std=np.concatenate([s for _, s in stats]),
                paths=np.asarray([str(paths[i]) for i in kept]), teacher_seconds=seconds,
                teacher_sha256=np.asarray([t.sha256 for t in teachers]))


def load_or_build_views(run: Path, paths: list[Path], teachers: list, args: argparse.Namespace) -> dict:
    cache = run / "views.npz"
    if cache.exists():
        views = dict(np.load(cache))
        if list(views["teacher_sha256"]) != [t.sha256 for t in teachers] or \
                views["student"].shape[1] != args.input_size:
            sys.exit(f"{cache} was made with other teachers or another input size: use a new --out")
        return views
    views = build_views(paths, teachers, args)
    np.savez(run / "views.tmp.npz", **views)
    os.replace(run / "views.tmp.npz", cache)  # a killed run never leaves half a cache behind
    return views


"""## Student: DenseNet121 features -> one linear projection per teacher, cosine loss per teacher"""


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
              callbacks=run_callbacks(run, timer))
    return model, timer


def run_callbacks(run: Path, timer, *extra) -> list:
    """A checkpoint every epoch (what --resume continues from), then `extra` (which may add to the epoch's logs),
    the history CSV, a stop on NaN and the epoch timer."""
    import keras

    return [keras.callbacks.BackupAndRestore(str(run / "backup"), save_freq="epoch", delete_checkpoint=False), *extra,
            keras.callbacks.CSVLogger(str(run / "history.csv"), append=True), keras.callbacks.TerminateOnNaN(), timer]


def view_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """Cached views and their targets, shuffled and repeated; pixels go to the model as float32."""
    import tensorflow as tf

    def to_float(x, y):
        return tf.cast(x, tf.float32), y

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).shuffle(len(images), seed=seed).repeat()
    return ds.batch(batch_size).map(to_float).prefetch(tf.data.AUTOTUNE)


def epoch_timer(images_per_epoch: int):
    """A Keras callback recording seconds per epoch, for the printed cost of distillation."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.images_per_epoch, self.seconds, self._t0 = images_per_epoch, [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


"""## Report: what the teachers cost against what the student costs"""


def cost_report(views: dict, teachers: list, timer, epochs: int) -> dict:
    n_views = len(views["student"])
    teacher_ips = n_views / max(views["teacher_seconds"].sum(), 1e-9)  # views/s through all teachers
    epoch_s = float(np.median(timer.seconds)) if timer.seconds else float("nan")
    student_ips = timer.images_per_epoch / epoch_s
    teacher_s_per_epoch = timer.images_per_epoch / teacher_ips
    report = {
        "teacher_views_per_s": round(teacher_ips, 1),
        "teacher_img_per_s": {t.name: round(float(n_views / s), 1) for t, s in zip(teachers, views["teacher_seconds"],
                                                                             strict=True)},
        "student_train_img_per_s": round(student_ips, 1),
        "epoch_s": round(epoch_s, 1),
        "teacher_share_if_online": round(teacher_s_per_epoch / (teacher_s_per_epoch + epoch_s), 3),
        "teacher_share_cached": round(views["teacher_seconds"].sum() / (views["teacher_seconds"].sum()
                                                                       + epoch_s * max(epochs, 1)), 3),
    }
    print("distillation cost: " + "  ".join(f"{k}={v}" for k, v in report.items()))
    return report


def open_run(out: str, resume: bool) -> Path:
    """The run folder: new, or an existing one only with --resume, so that no run is overwritten by accident."""
    run = Path(out)
    if run.exists() and any(run.iterdir()) and not resume:
        sys.exit(f"run folder {run} is not empty: pass --resume to continue it, or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    return run


def teachers_and_views(run: Path, args: argparse.Namespace) -> tuple[list, dict]:
    """The teachers (--teacher) and the cached views of every image under --data with the teachers' features."""
    from train.teachers import load_teacher

    teachers = [load_teacher(t, args.threads) for t in args.teacher]
    paths = list_images(args.data)
    print(f"{len(paths)} images, {args.views} views each; teachers: "
          + ", ".join(f"{t.name} ({t.dim}-d)" for t in teachers))
    return teachers, load_or_build_views(run, paths, teachers, args)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.init:
        from model.network import resolve_weights

        resolve_weights(args.init)  # a missing file fails now, not after the teachers' pass
    run = open_run(args.out, args.resume)

    """## Data and teachers: every image under --data; teachers by file; views and targets cached"""
    teachers, views = teachers_and_views(run, args)

    """## Fit the student on the cached views; a checkpoint every epoch (--resume continues there)"""
    dims = [t.dim for t in teachers]
    model, timer = fit_student(run, views, dims, args)

    """## Export the backbone weights, the loss curve and the card"""
    from model.bundle import file_sha256
    from train.plots import plot_curve, read_history

    model.get_layer("densenet121").save_weights(run / WEIGHTS_FILE)
    history = read_history(run / "history.csv")
    plot_curve(history, "loss", run / "loss.png", "Distillation loss (1 - cosine to the teachers)")
    card = {
        "architecture": "DenseNet121 backbone (include_top=False), distilled "
                        + (f"from {Path(args.init).name}" if args.init else "from scratch"),
        "init": {"file": Path(args.init).name,  # "imagenet" names no file to hash
                 "sha256": file_sha256(args.init) if Path(args.init).is_file() else None} if args.init else None,
        "teachers": [t.card() for t in teachers],
        "data": [str(Path(d).resolve()) for d in args.data],
        "images": int(views["image_index"].max()) + 1,
        "views": len(views["student"]),
        "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
        "epochs_done": len(history.get("loss", [])),
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if timer.seconds:
        card["cost"] = cost_report(views, teachers, timer, args.epochs)
    (run / "card.json").write_text(json.dumps(card, indent=2))
    print(f"distilled weights: {run / WEIGHTS_FILE}  (python -m train --weights {run / WEIGHTS_FILE})")
    return run


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
