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
from pathlib import Path

import numpy as np

import cli

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


# What each parameter's flag says in --help (the defaults are appended there).
HELP = dict(
    epochs="epochs; an epoch draws one view per image on average from the view pool",
    views="augmented views per image, each run through every teacher once and cached",
    input_size="the student's input size in pixels",
    source_size="the size images are decoded at once; views are cropped from it",
    batch_size="views per training step",
    lr="peak learning rate of AdamW (after one epoch of warm-up, then cosine decay)",
    weight_decay="AdamW's weight decay",
    min_area="random resized crop: the smallest fraction of the image a view keeps",
    seed="random seed of the views and the training",
    threads="threads per teacher; 0 = all cores",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    head, example = __doc__.strip("\n").split("\n\n")[:2]  # "Title: ...\nDescription: ...", then the example
    doc = head.removeprefix("Title: ").replace("\nDescription: ", ": ", 1) + "\n\n" + example
    p = cli.parser("python -m train.distill", doc)
    p.add_argument("--teacher", action="append", required=True, help=".tflite, .onnx or .keras (repeatable)")
    p.add_argument("--data", action="append", required=True, help="folder of images, any layout (repeatable)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (also to extend --epochs)")
    p.add_argument("--init", help="a DenseNet121 backbone weights file to start from (an earlier distillation's, "
                   "to continue it on fresh views, another seed or input size); default: from scratch")
    p.add_argument("--run-eagerly", action="store_true", help="skip graph compilation: for tiny smoke runs")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                       help=f"{HELP[key]} (default %(default)s)")
    return p.parse_args(argv)


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


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.init:
        from model.network import resolve_weights

        resolve_weights(args.init)  # a missing file fails now, not after the teachers' pass
    from train.runs import open_run
    from train.student import fit_student
    from train.targets import teachers_and_views

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
    from train.cli import run_cli

    run_cli(main)
