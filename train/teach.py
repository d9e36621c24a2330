"""
Teach a model bundle your own photos, a new model version in seconds: refits the head, the temperature and the
unknown statistics of the bundle on its frozen backbone.

    python -m train.teach --model model/fruits-densenet121 --data my-photos --out data/models/mine

DIR is folder-per-class: a folder named like one of the bundle's classes adds photos to it, a new name adds a
class. The head is refitted (train.head) on the bundle's base training set as features (its features.npz) and the
new photos' features (each photo and its mirror image), the new photos weighted up (TAUGHT_SHARE); temperature and
unknown threshold come from out-of-fold answers on scene folds of the base set's real photos and the new photos.
The new bundle has a new model_version, its parent's version in config.json, and a card saying what was taught
and the figures before and after. Unreadable photos are skipped and counted; an empty class folder or a bundle
without features.npz (it cannot be taught) ends with one line `error: ...` and exit code 2.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.features import BaseFeatures
from train.head import Fitted, HeadParams, LinearHead, Pool, Rows, fit_calibrated

TAUGHT_SOURCE = "taught"
FOLDS = 5  # scene folds of the taught photos, as the base set's real photos have
# The taught photos of a class weigh, together, as much as the class's photos in the base set (each at least as
# much as one base photo). Chosen on the k-shot curve (benchmarks/teach_curve.py --apart, 20 photos per class taught
# from a held-out scene fold, scored on its other shots; docs/training.md): with the parent's head as prior,
# unweighted 82.3%, 1 86.0%, 2 86.2%, the other folds' real photos 71.5-71.6% throughout.
TAUGHT_SHARE = 1.0

Progress = Callable[[float, str], None]


class TeachError(ValueError):
    """What keeps a bundle from being taught, in one line a person can act on (the CLI's `error:`, exit 2)."""


@dataclass
class TeachReport:
    out_dir: Path
    model_version: str
    parent_version: str
    taught: dict[str, int]  # class -> photos taught (readable ones)
    new_classes: list[str]
    skipped: int  # unreadable photos left out
    before: dict
    after: dict
    seconds: float
    skipped_files: list[str] = field(default_factory=list)


def scan_classes(data_dir: str | Path) -> dict[str, list[Path]]:
    """DIR/<class>/* (recursive, hidden files skipped): every class folder must hold at least one image file."""
    from model.images import scan_folder
    from train.data import class_dirs

    root = Path(data_dir)
    if not root.is_dir():
        raise TeachError(f"photo folder not found: {root}")
    folders = class_dirs(root)
    if not folders:
        raise TeachError(f"no class folders in {root}: put the photos of each class in DIR/<class>/")
    classes = {d.name: scan_folder(d, recursive=True).images for d in folders}
    empty = [name for name, photos in classes.items() if not photos]
    if empty:
        raise TeachError(f"class folder {root / empty[0]} has no photos" + (
            f" (nor {len(empty) - 1} more: {', '.join(empty[1:4])})" if len(empty) > 1 else ""))
    return classes


def taught_weights(base: BaseFeatures, y: np.ndarray, n_classes: int, share: float = TAUGHT_SHARE) -> np.ndarray:
    """The loss weight of each taught photo: `share` of its class's weight in the base set over the class's taught
    photos, and at least 1 (a base photo's); a new class's photos weigh 1 each (TAUGHT_SHARE)."""
    base_w = np.bincount(base.labels, weights=base.weights, minlength=n_classes)
    count = np.bincount(y, minlength=n_classes).astype(np.float64)
    per_photo = np.maximum(1.0, share * base_w / np.maximum(count, 1))
    return per_photo[y].astype(np.float32)


def refit(base: BaseFeatures, x: np.ndarray, x_flip: np.ndarray, y: np.ndarray, n_classes: int, *,
          params: HeadParams | None = None, share: float = TAUGHT_SHARE, seed: int = 1337,
          prior: LinearHead | None = None, progress: Progress | None = None
          ) -> tuple[Fitted, BaseFeatures, np.ndarray]:
    """The head, temperature and unknown statistics on the base set and the taught photos' features (x, its
    mirror x_flip, labels y), each fit pulled towards the parent's: `prior` (its served head) for the served fit,
    the fold heads its features.npz stores for the folds. Returns the fit, the new base set (the old one and the
    taught photos, with this fit's fold heads, for the next teach) and which pool entries are the photos taught
    now."""
    from train.crossval import scene_folds
    from train.head import fold_heads, stored_fold_heads

    n = len(base)
    fold = scene_folds(x, y, FOLDS, seed) if len(y) else np.zeros(0, np.int64)
    weight = taught_weights(base, y, n_classes, share)
    taught = BaseFeatures(x, x_flip, y, np.full(len(y), TAUGHT_SOURCE), fold, weight, {})
    both = BaseFeatures.concat([base, taught]) if len(y) else base
    both.extra = {k: v for k, v in base.extra.items()}
    # Every photo as served, and the taught photos also as their mirror image: a view a few photos gain from.
    # The base set's own mirror images are left out: by scene-CV they gained nothing (71.8% without, 71.2% with,
    # on all its photos) and would double the rows, hence the seconds, of every fit.
    ids, mirrored = np.arange(len(both)), np.flatnonzero(both.sources == TAUGHT_SOURCE)
    rows = Rows(np.concatenate([both.features, both.flip[mirrored]]), np.concatenate([both.labels,
                both.labels[mirrored]]), np.concatenate([ids, mirrored]),
                np.concatenate([both.weights, both.weights[mirrored]]))
    held = np.flatnonzero(both.folds >= 0)
    # The threshold keeps its share of the base set's held-out scenes only: photos unlike the base set (a new
    # kind of photo taught) would otherwise raise it for everything, and let not-fruit photos through.
    pool = Pool(held, both.labels[held], both.features[held], both.folds[held],
                sets_threshold=both.sources[held] != TAUGHT_SOURCE)
    fitted = fit_calibrated(rows, pool, n_classes, params, priors=stored_fold_heads(base.extra), final_prior=prior,
                            progress=progress)
    both.extra.update(fold_heads(fitted))
    return fitted, both, held >= n


def figures(fitted: Fitted, is_taught: np.ndarray, ood: np.ndarray | None) -> dict:
    """Out-of-fold figures of a fit: top-1 on the base set's real photos (scene-CV, mean and spread) and on the
    taught photos, the shares flagged unknown, and the not-fruit reference photos flagged."""
    from train.head import ood_figures

    oof = fitted.oof
    right = oof.logits["none"].argmax(1) == oof.y
    flagged = fitted.detector.is_unknown(oof.scores["none"])
    base = fitted.sets_threshold  # the base set's own real photos (not those taught, now or before)
    per_fold = [float(right[base & (oof.fold == k)].mean()) for k in np.unique(oof.fold[base])]
    out = {"base_cv_top1": round(float(np.mean(per_fold)), 4), "base_cv_top1_std": round(float(np.std(per_fold)), 4),
           "base_flagged_cv": round(float(flagged[base].mean()), 4),
           "temperature": round(fitted.honesty.temperature, 4), "ece_cv": fitted.honesty.report["ece_cv"]}
    if is_taught.any():
        out["taught_top1_cv"] = round(float(right[is_taught].mean()), 4)
        out["taught_flagged_cv"] = round(float(flagged[is_taught].mean()), 4)
    if ood is not None and len(ood):
        out["not_fruit_flagged"] = ood_figures(fitted, ood)["flagged"]
    return out


def parent_figures(head: LinearHead, detector, x: np.ndarray, y: np.ndarray, parent_card: dict) -> dict:
    """What the parent says of the taught photos (photos of a new class count as wrong), and its own figures."""
    before = {"taught_top1": round(float((head(x).argmax(1) == y).mean()), 4) if len(y) else None}
    if detector is not None and len(y):
        before["taught_flagged"] = round(float(detector.is_unknown(detector.score(x)).mean()), 4)
    own = parent_card.get("teach_figures")
    if own is None:  # a root model: its recipe's figures (train.frozen's card)
        cal = parent_card.get("calibration", {})
        cv, ood = cal.get("top1_cv", {}), cal.get("unknown", {}).get("ood", {})
        own = {"base_cv_top1": cv.get("top1_mean"), "base_cv_top1_std": cv.get("top1_std"),
               "base_flagged_cv": cal.get("unknown", {}).get("known_flagged_cv_mean"),
               "temperature": cal.get("temperature"), "ece_cv": cal.get("ece_cv"),
               "not_fruit_flagged": ood.get("flagged")}
    return {**{k: v for k, v in own.items() if not k.startswith("taught") and v is not None}, **before}


def teach(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *, progress: Progress | None = None,
          settings=None) -> TeachReport:
    """Teach the bundle at `model_dir` the photos of `data_dir` (DIR/<class>/*) and write the new bundle to
    `out_dir` (new or empty). `progress(fraction, message)` is called as it goes."""
    from model.bundle import BundleConfig, load_keras_model, read_card
    from model.unknown import UnknownDetector
    from train.bundles import head_model, write_head_bundle
    from train.features import bundle_embedder, decode_photos, image_features, read_features

    start = time.monotonic()
    report_progress = progress or (lambda fraction, message: None)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    try:
        config = BundleConfig.read(model_dir)
    except FileNotFoundError as exc:
        raise TeachError(str(exc)) from None
    try:
        base = read_features(model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise TeachError(f"{model_dir} cannot be taught: its features.npz cannot be read ({exc})") from None
    if base is None:
        raise TeachError(f"{model_dir} cannot be taught: it carries no features of its training set (features.npz); "
                         "teach a bundle made by python -m train.frozen or python -m train.teach")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TeachError(f"output folder {out_dir} is not empty: choose a new --out")
    photos = scan_classes(data_dir)
    labels = list(config.labels) + [name for name in photos if name not in config.labels]
    report_progress(0.02, "loading the model")
    parent = load_keras_model(model_dir)
    embed = bundle_embedder(parent)
    paths = [p for name in photos for p in photos[name]]
    y_all = np.array([labels.index(name) for name in photos for _ in photos[name]], np.int64)
    report_progress(0.05, f"reading {len(paths)} photos")
    images, kept, bad = decode_photos(paths, config.input_size)
    y = y_all[kept]
    unread = [name for name in photos if labels.index(name) not in set(y.tolist())]
    if unread:
        raise TeachError(f"no readable photo in class folder {Path(data_dir) / unread[0]} "
                         f"({len(photos[unread[0]])} unreadable)")
    x, x_flip = _features_with_progress(embed, images, image_features, report_progress)
    dense = parent.get_layer("logits").get_weights()
    before = parent_figures(LinearHead(dense[0], dense[1]), UnknownDetector.load(model_dir), x, y,
                            read_card(model_dir))

    def fit_progress(fraction: float, message: str) -> None:
        report_progress(0.45 + 0.45 * fraction, message)

    fitted, both, is_taught = refit(base, x, x_flip, y, len(labels), params=_params(base), progress=fit_progress,
                                    prior=LinearHead(dense[0], dense[1]))
    ood = base.extra.get("ood")
    after = figures(fitted, is_taught, None if ood is None else ood.astype(np.float32))
    report_progress(0.92, "writing the new bundle")
    taught = {name: int((y == labels.index(name)).sum()) for name in photos}
    new_classes = [name for name in photos if name not in config.labels]
    card = {**read_card(model_dir), "classes": labels, "parent_version": config.model_version,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "head": "linear head on the frozen backbone, taught (python -m train.teach)",
            "taught": {"photos": taught, "new_classes": new_classes, "skipped_unreadable": len(bad),
                       "weight_share": TAUGHT_SHARE, "before": before, "after": after},
            "teach_figures": after}
    for stale in ("metrics", "cross_validation", "features", "previous_version"):  # the parent's: not this model's
        card.pop(stale, None)
    new_config = BundleConfig(labels=labels, input_size=config.input_size, weights=config.weights,
                              temperature=fitted.honesty.temperature, parent_version=config.model_version)
    model = head_model(len(labels), config.input_size, parent=parent)
    version = write_head_bundle(out_dir, model, new_config, fitted, both, card)
    report_progress(1.0, f"taught: model_version {version}")
    return TeachReport(out_dir, version, config.model_version, taught, new_classes, len(bad), before, after,
                       round(time.monotonic() - start, 2), [f"{p}: {why}" for p, why in bad])


def _params(base: BaseFeatures) -> HeadParams:
    """The parent recipe's head settings where its features.npz names them."""
    params = HeadParams()
    for key in ("l2", "steps", "lr", "keep_rate"):
        if key in base.extra:
            setattr(params, key, type(getattr(params, key))(float(base.extra[key])))
    return params


def _features_with_progress(embed, images, image_features, report_progress: Progress):
    from tqdm import tqdm

    total = 2 * len(images)
    with tqdm(total=total, desc="teach: features", unit="img", leave=False) as bar:
        def step(n: int) -> None:
            bar.update(n)
            report_progress(0.05 + 0.4 * bar.n / max(total, 1), f"features of the photos: {bar.n} of {total}")

        return image_features(embed, images, 32, step)


def main(argv: list[str] | None = None) -> TeachReport:
    import cli
    from train.cli import ProgressBar

    p = cli.parser("python -m train.teach", __doc__)
    p.add_argument("--model", required=True, help="the bundle to teach (it must carry features.npz)")
    p.add_argument("--data", required=True, help="DIR/<class>/*: existing class names add photos, new ones classes")
    p.add_argument("--out", required=True, help="the new bundle's folder (new or empty)")
    args = p.parse_args(argv)
    cli.quiet_frameworks()
    bar = ProgressBar("teach")
    try:
        report = teach(args.model, args.data, args.out, progress=bar)
    except TeachError as exc:
        bar.close()
        cli.fail(str(exc))
    print(json.dumps({"model_version": report.model_version, "parent_version": report.parent_version,
                      "taught": report.taught, "new_classes": report.new_classes, "skipped": report.skipped,
                      "before": report.before, "after": report.after, "seconds": report.seconds}, indent=2))
    for line in report.skipped_files[:10]:
        print(f"skipped {line}")
    return report


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
