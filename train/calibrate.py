"""
Title: Honest answers: calibrated confidences and "not one of the classes I know" for a model bundle
Description: the last step of every bundle recipe (`python -m train`, `train.frozen`, `train.teach`); also
runs on its own, on any bundle, to refit both.

    python -m train.calibrate --model runs/fruits-probe --data ../shared/datasets/fruits [--sources grocery]

Temperature (model.calibration): fitted on held-out photos the head never trained on: DIR/val, or only the val
photos of the given --sources (file names `<source>__...`; e.g. the real store photos, since studio shots are all
right and would sharpen it); its ECE cross-validated over scene folds of those photos (each fold's at a
temperature fitted on the others). The frozen-backbone recipes (train.head) pass out-of-fold logits of 5-fold
scene cross-validation instead, which sees every labelled real photo.

Unknown statistics (model.unknown): class means and a shared covariance of the pooled features of DIR/train; the
threshold keeps --keep-rate of the held-out photos' scores (train.head: of held-out scenes').

Both go into the bundle (config.json's `temperature`, `unknown.npz`), the card gets their figures, and the
bundle folder a reliability diagram (`reliability.png`). The bundle's model_version changes with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.calibration import fit_temperature, reliability, softmax
from model.unknown import UnknownDetector, fit_unknown
from train.metrics import expected_calibration_error, source_of

KEEP_RATE = 0.95  # the share of known photos the unknown threshold is set to pass
FOLDS = 5  # scene folds of the cross-validated ECE
SHRINKAGE = 0.1  # covariance shrinkage of the unknown statistics (model.unknown.fit_unknown)
RELIABILITY_FILE = "reliability.png"


@dataclass
class Honesty:
    temperature: float
    detector: UnknownDetector
    report: dict


def fit_honesty(heldout_logits: np.ndarray, heldout_labels: np.ndarray, heldout_scores: np.ndarray,
                detector: UnknownDetector, keep_rate: float = KEEP_RATE, folds: int | np.ndarray = 5,
                seed: int = 0) -> Honesty:
    """The temperature on held-out logits, the detector's threshold on held-out unknown scores, and the report:
    ECE before and after, with the after-ECE cross-validated (T fitted on the other folds): over all photos, and
    per fold as mean and spread.
    `folds` is a number of random folds, or a fold id per photo (the cross-validation's scene folds)."""
    labels = np.asarray(heldout_labels, np.int64)
    temperature = fit_temperature(heldout_logits, labels)
    before = expected_calibration_error(labels, softmax(heldout_logits))
    after = expected_calibration_error(labels, softmax(heldout_logits, temperature))
    pooled, per_fold = cross_validated_ece(heldout_logits, labels, folds, seed)
    detector = detector.with_threshold(heldout_scores, keep_rate)
    report = {"temperature": round(temperature, 4), "fitted_on": int(len(labels)),
              "ece_before": round(before, 4), "ece_after": round(after, 4),
              "ece_cv": round(pooled, 4), "ece_cv_mean": round(float(np.mean(per_fold)), 4),
              "ece_cv_std": round(float(np.std(per_fold)), 4), "folds": len(per_fold),
              "unknown": {"method": "mahalanobis (shared covariance, nearest class mean)", "shrinkage": SHRINKAGE,
                          "keep_rate": keep_rate, "threshold": round(detector.threshold, 4),
                          "threshold_fitted_on": int(len(heldout_scores))}}
    return Honesty(temperature, detector, report)


def cross_validated_ece(logits: np.ndarray, labels: np.ndarray, folds: int | np.ndarray,
                        seed: int) -> tuple[float, list[float]]:
    """ECE at temperatures fitted without the photo's fold (what a new photo will see): over all photos pooled,
    and per fold (small folds add binning noise: ECE's bias grows as the sample shrinks)."""
    if isinstance(folds, np.ndarray):
        parts = [np.flatnonzero(folds == k) for k in np.unique(folds)]
    else:
        order = np.random.default_rng(seed).permutation(len(labels))
        parts = [p for p in np.array_split(order, min(folds, len(labels))) if len(p)]
    if len(parts) < 2:
        ece = expected_calibration_error(labels, softmax(logits, fit_temperature(logits, labels)))
        return ece, [ece]
    probs, per_fold = np.zeros_like(logits, dtype=np.float64), []
    for part in parts:
        rest = np.ones(len(labels), bool)
        rest[part] = False
        probs[part] = softmax(logits[part], fit_temperature(logits[rest], labels[rest]))
        per_fold.append(expected_calibration_error(labels[part], probs[part]))
    return expected_calibration_error(labels, probs), per_fold


def write_honesty(bundle_dir: str | Path, honesty: Honesty, heldout_logits: np.ndarray,
                  heldout_labels: np.ndarray) -> str:
    """Temperature into config.json, unknown.npz beside model.keras, the report into card.json, the reliability
    diagram beside them; returns the bundle's new model_version."""
    from model.bundle import CARD_FILE, BundleConfig, read_card, serving_version
    from train.plots import plot_reliability

    bundle = Path(bundle_dir)
    config = BundleConfig.read(bundle)
    weights_version = config.extra.get("weights_version", config.model_version)
    config.temperature = honesty.temperature
    unknown_file = honesty.detector.save(bundle)
    config.extra = {**config.extra, "weights_version": weights_version}
    config.model_version = serving_version(weights_version, config.temperature, config.tta, unknown_file)
    config.write(bundle)
    labels = np.asarray(heldout_labels)
    probs = softmax(heldout_logits, honesty.temperature)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    raw = softmax(heldout_logits)
    plot_reliability({"softmax (T = 1)": reliability(raw.max(1), raw.argmax(1) == labels),
                      "calibrated": reliability(confidence, correct)}, bundle / RELIABILITY_FILE,
                     f"Reliability on {len(labels)} held-out photos (T = {honesty.temperature:.2f})")
    card = read_card(bundle)
    card["calibration"] = honesty.report
    card["model_version"] = config.model_version
    (bundle / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print("calibration: " + "  ".join(f"{k}={v}" for k, v in honesty.report.items() if k != "unknown")
          + f"  unknown_threshold={honesty.detector.threshold:.4f} (keeps {honesty.detector.keep_rate:.0%})")
    return config.model_version


def source_mask(paths: list, sources: list[str] | None) -> np.ndarray:
    """Which files belong to the given sources (file names `<source>__...`); all of them when None."""
    if not sources:
        return np.ones(len(paths), bool)
    return np.array([source_of(p) in sources for p in paths], bool)


def bundle_outputs(classifier, paths: list, labels: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw logits and pooled features of the readable images among `paths` through the bundle's classifier, and
    their `labels` (default: their index in `paths`)."""
    from train.evaluate import classify_all

    kept, out, _ = classify_all(classifier, paths, desc="calibrate")
    labels = np.arange(len(paths)) if labels is None else np.asarray(labels)
    return out.logits, out.features, labels[kept].astype(np.int64)


def calibrate_bundle(bundle_dir: str | Path, data_dir: str | Path, *, sources: list[str] | None = None,
                     keep_rate: float = KEEP_RATE, val_fraction: float = 0.2, seed: int = 1337) -> dict:
    """Fit and write the temperature and the unknown statistics of a bundle from the dataset's train and val
    splits (DIR/train and DIR/val, or the same stratified split of DIR/<class>/* as `python -m train` makes)."""
    from train.data import scan_dataset

    _, train_split, val_split = scan_dataset(data_dir, val_fraction, seed)
    return calibrate_splits(bundle_dir, train_split, val_split, sources=sources, keep_rate=keep_rate, seed=seed)


def calibrate_splits(bundle_dir: str | Path, train_split, val_split, *, sources: list[str] | None = None,
                     keep_rate: float = KEEP_RATE, seed: int = 1337) -> dict:
    """`calibrate_bundle` on given splits (train.data.Split; labels index the dataset's classes, which are the
    bundle's labels in order)."""
    from model.bundle import BundleConfig, load_keras_model
    from model.predict import Classifier
    from train.crossval import scene_folds

    bundle = Path(bundle_dir)
    config = BundleConfig.read(bundle)
    config.temperature = 1.0  # refitting: start from the raw logits
    classifier = Classifier(load_keras_model(bundle), config, runtime="tf")
    if not classifier.explainable:
        raise ValueError(f"{bundle} has no pooled-feature output: cannot fit unknown statistics")
    _, train_features, train_labels = bundle_outputs(classifier, train_split.paths, train_split.labels)
    val_logits, val_features, kept = bundle_outputs(classifier, val_split.paths)
    val_labels, val_paths = np.asarray(val_split.labels)[kept], [val_split.paths[i] for i in kept]
    mask = source_mask(val_paths, sources)
    if not len(val_labels) or not mask.any():
        raise ValueError(f"no val photos{' of source ' + ', '.join(sources) if sources else ''} to calibrate on")
    detector = fit_unknown(train_features, train_labels, len(classifier.labels), SHRINKAGE)
    # The ECE of a new visit: each scene fold's photos (look-alike shots together) at a temperature fitted on the
    # other folds (random folds would put a shot's twins on both sides).
    folds = scene_folds(val_features[mask], val_labels[mask], FOLDS, seed)
    honesty = fit_honesty(val_logits[mask], val_labels[mask], detector.score(val_features[mask]), detector,
                          keep_rate, folds=folds)
    honesty.report["folds_by"] = "scenes"
    write_honesty(bundle, honesty, val_logits[mask], val_labels[mask])
    return honesty.report


def main(argv: list[str] | None = None) -> dict:
    from train.cli import parser

    p = parser("python -m train.calibrate", __doc__)
    p.add_argument("--model", required=True, metavar="DIR", help="bundle folder (changed in place)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the dataset: DIR/train/<class>/* and DIR/val/<class>/*, or DIR/<class>/* (split by "
                        "--val-split as python -m train splits it)")
    p.add_argument("--sources", nargs="*", metavar="SOURCE",
                   help="fit the temperature and threshold on the val photos of these sources only (file names "
                        "<source>__...; default: every val photo)")
    p.add_argument("--keep-rate", type=float, default=KEEP_RATE,
                   help="share of the val photos the unknown threshold passes (default %(default)s)")
    p.add_argument("--val-split", type=float, default=0.2,
                   help="share of each class held out when DIR has no train/ + val/ folders (default %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="seed of that split and of the scene folds "
                   "(default %(default)s)")
    args = p.parse_args(argv)
    return calibrate_bundle(args.model, args.data, sources=args.sources, keep_rate=args.keep_rate,
                            val_fraction=args.val_split, seed=args.seed)


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
