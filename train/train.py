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
from pathlib import Path

from train.fine_tune import DEFAULTS  # the --fine-tune flags and their defaults (the paths' shared flags too)

"""## Parameters (one place; every one is a command-line flag)"""

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
    from train.fine_tune import fine_tune

    return fine_tune(run, args, pretrained)


"""## The default: a calibrated head on the frozen backbone (train.frozen)"""


def train_frozen(run: Path, args: argparse.Namespace) -> Path:
    from model.bundle import BundleConfig
    from train.frozen import run as fit_head

    fit_head(args, bundle_dir=run / "bundle", run_dir=run, command="python -m train")
    print(f"run folder: {run}  model_version={BundleConfig.read(run / 'bundle').model_version}")
    return run


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
