"""
Evaluate a model bundle on any folder-per-class dataset whose class names are a subset of its labels.

    python -m train.evaluate --model model/fruits-densenet121 --data ../shared/datasets/fruits/val \\
        [--ood ../shared/datasets/grocery-other/val] [--json OUT] [--out DIR]

Prints the per-class report and the summary line `top1= top5= macro_f1= ece= n=` (ECE of the calibrated
confidences the core serves), then, with `--ood` (any folder of images that are none of the classes, searched
recursively), `ood_auroc= fpr95= unknown_in= unknown_ood=`: the AUROC of the unknown score between DIR and DIR2,
the share of DIR2 passed as known when 95% of DIR is, and the shares of DIR and DIR2 flagged unknown at the
bundle's threshold. Predictions go through the same `Classifier` as the demo and the workers.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

import cli
from model.predict import BATCH_SIZE, Outputs
from train.data import class_dirs, list_files
from train.metrics import source_of


def classify_all(classifier, paths: list, desc: str = "evaluate") -> tuple[list, Outputs, list]:
    """(indices of the readable paths, the classifier's outputs for them, the skipped (path, error) pairs), through
    its batched forward pass."""
    kept, outs, skipped = [], [], []
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr) as bar:
        for start in range(0, len(paths), BATCH_SIZE):
            chunk = paths[start : start + BATCH_SIZE]
            batch, errors = classifier.preprocess(chunk)
            outs.append(classifier.forward_outputs(batch))
            kept += [start + i for i, e in enumerate(errors) if e is None]
            skipped += [(str(chunk[i]), e) for i, e in enumerate(errors) if e]
            bar.update(len(chunk))
    for path, err in skipped:
        print(f"skipped {path}: {err}", file=sys.stderr)
    return kept, concat_outputs(outs), skipped


def concat_outputs(outs: list[Outputs]) -> Outputs:
    """One Outputs for several batches' (the feature maps are left out: evaluation never draws them)."""
    def cat(name: str):
        parts = [getattr(o, name) for o in outs]
        return None if not parts or any(p is None for p in parts) else np.concatenate(parts)

    return Outputs(cat("probs"), cat("unknown_scores"), None, cat("features"), cat("logits"))


def evaluate(classifier, data_dir: str | Path, out_dir: Path | None = None, ood_dir: str | Path | None = None
             ) -> dict:
    """Top-1/5, per-class P/R/F1, confusion matrix and ECE of `classifier` on `data_dir`; with `ood_dir`, how well
    its unknown score tells those images from the ones of `ood_dir`."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if (root / "val").is_dir() and not set(d.name for d in class_dirs(root)) & set(classifier.labels):
        root = root / "val"  # a DIR/train + DIR/val dataset: evaluate its val split
    folders = [d.name for d in class_dirs(root)]
    unknown = sorted(set(folders) - set(classifier.labels))
    if unknown:
        raise ValueError(f"class folders not among the model's labels: {', '.join(unknown)}")
    split = list_files(root, classifier.labels)
    if not len(split):
        raise ValueError(f"no images found under {root}")
    kept, out, skipped = classify_all(classifier, split.paths)
    probs, scores = out.probs, out.unknown_scores
    y_true = np.asarray([split.labels[i] for i in kept])
    paths = [str(split.paths[i]) for i in kept]
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:  # without out_dir the files are not kept
        summary = write_evaluation(out_dir or Path(scratch), y_true, probs, classifier.labels, paths)
    summary["skipped"] = len(skipped)
    summary["model_version"] = classifier.model_version
    summary["temperature"] = classifier.temperature
    summary["tta"] = classifier.tta
    if ood_dir is not None:
        summary["ood"] = evaluate_unknown(classifier, scores, ood_dir)
    return summary


def evaluate_unknown(classifier, in_scores: np.ndarray | None, ood_dir: str | Path) -> dict:
    """AUROC, FPR95 and the flagged shares of the unknown score on known images against `ood_dir`'s."""
    from model.images import scan_folder
    from model.unknown import auroc, fpr_at_tpr

    if in_scores is None:
        raise ValueError("this bundle has no unknown statistics (no unknown.npz): python -m train.calibrate fits them")
    folder = Path(ood_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--ood folder not found: {folder}")
    ood_paths = scan_folder(folder, recursive=True).images
    if not ood_paths:
        raise ValueError(f"no images found under {folder}")
    out_scores = classify_all(classifier, ood_paths, desc="evaluate --ood")[1].unknown_scores
    return {"n_in": int(len(in_scores)), "n_ood": int(len(out_scores)),
            "auroc": auroc(in_scores, out_scores), "fpr95": fpr_at_tpr(in_scores, out_scores),
            "unknown_in": float(classifier.unknown.is_unknown(in_scores).mean()),
            "unknown_ood": float(classifier.unknown.is_unknown(out_scores).mean()),
            "threshold": classifier.unknown.threshold}


def write_evaluation(run: Path, y_true: np.ndarray, probs: np.ndarray, labels: list[str], paths: list[str],
                     group_sep: str = "__") -> dict:
    """metrics.json, report.txt and confusion_matrix.png for one evaluated set; also per-source groups."""
    from train.metrics import format_report, summarize
    from train.plots import plot_confusion

    summary = summarize(y_true, probs, labels)
    groups = sorted({source_of(p, group_sep) for p in paths} - {""})
    if len(groups) > 1:
        names = np.array([Path(p).name for p in paths])
        summary["groups"] = {}
        for g in groups:
            mask = np.char.startswith(names, g + group_sep)
            s = summarize(y_true[mask], probs[mask], labels)
            summary["groups"][g] = {k: s[k] for k in ("n", "top1", "top5", "macro_f1", "ece")}
    (run / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = format_report(summary)
    for g, s in summary.get("groups", {}).items():
        text += f"\n[{g}] top1={s['top1']:.4f} top5={s['top5']:.4f} n={s['n']}"
    (run / "report.txt").write_text(text + "\n")
    plot_confusion(np.array(summary["confusion_matrix"]), labels, run / "confusion_matrix.png",
                   f"Confusion matrix (val, top1={summary['top1']:.3f})")
    plot_evaluated_reliability(run / "evaluation_reliability.png", y_true, probs, paths, group_sep)
    print(text)
    return summary


def plot_evaluated_reliability(out: Path, y_true: np.ndarray, probs: np.ndarray, paths: list[str],
                               group_sep: str = "__") -> None:
    """The reliability diagram of the confidences as served, overall and per source of the images."""
    from model.calibration import reliability
    from train.plots import plot_reliability

    if not len(y_true):
        return
    conf, right = probs.max(1), probs.argmax(1) == y_true
    names = np.array([Path(p).name for p in paths])
    series = {"all": reliability(conf, right)}
    for g in sorted({source_of(n, group_sep) for n in names} - {""}):
        mask = np.char.startswith(names, g + group_sep)
        series[g] = reliability(conf[mask], right[mask])
    plot_reliability(series, out, f"Reliability of the served confidences (n={len(y_true)})")


def card_metrics(summary: dict) -> dict:
    """The part of `write_evaluation`'s summary a model card carries: val figures, and per source when known."""
    metrics = {"val": {k: summary[k] for k in ("n", "top1", "top5", "macro_f1", "ece")}}
    if "groups" in summary:
        metrics["val_by_source"] = summary["groups"]
    return metrics


def save_evaluated_bundle(model, out: Path, config, val: tuple, card: dict):
    """Save `model` as a bundle whose folder also holds its val evaluation (metrics.json, report.txt, confusion
    matrix) and whose card carries those metrics: what train.probe hands over to ship."""
    from model.bundle import save_bundle
    from model.predict import Classifier

    images, y_val, paths = val
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probs = Classifier(model, config).forward(images.astype(np.float32))
    summary = write_evaluation(out, y_val, probs, config.labels, [str(p) for p in paths])
    config = save_bundle(model, out, config, {**card, "metrics": card_metrics(summary)})
    print(f"bundle: {out}  model_version={config.model_version}")
    return config


def main(argv: list[str] | None = None) -> dict:
    p = cli.parser("python -m train.evaluate", __doc__)
    p.add_argument("--model", required=True, help="model bundle folder (or 'imagenet')")
    p.add_argument("--data", required=True, help="folder-per-class images")
    p.add_argument("--json", default=None, help="write the full metrics to this JSON file")
    p.add_argument("--out", default=None, help="folder for report.txt and confusion_matrix.png")
    p.add_argument("--runtime", default=None, help="inference runtime: auto | tf | onnx (default: env RUNTIME)")
    p.add_argument("--ood", default=None, help="a folder of images that are none of the classes (recursive): adds "
                                               "the unknown detection line")
    args = p.parse_args(argv)

    from model.predict import load_classifier
    from settings import get_settings

    options = get_settings().classifier_options()
    classifier = load_classifier(args.model, **{**options, "runtime": args.runtime or options["runtime"]})
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    summary = evaluate(classifier, args.data, out, args.ood)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"top1={summary['top1']:.4f} top5={summary['top5']:.4f} macro_f1={summary['macro_f1']:.4f} "
          f"ece={summary['ece']:.4f} n={summary['n']}")
    if "ood" in summary:
        o = summary["ood"]
        print(f"ood_auroc={o['auroc']:.4f} fpr95={o['fpr95']:.4f} unknown_in={o['unknown_in']:.4f} "
              f"unknown_ood={o['unknown_ood']:.4f}")
    return summary


if __name__ == "__main__":
    from train.cli import run_cli

    run_cli(main)
