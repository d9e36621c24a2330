"""What a bundle says about itself, for people: its model card as Markdown and the training plots beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.bundle import BundleConfig, read_card
from model.unknown import UNKNOWN_FILE

PLOTS = (("accuracy.png", "Accuracy per epoch"), ("loss.png", "Loss per epoch"),
         ("confusion_matrix.png", "Confusion matrix (validation set)"),
         ("reliability.png", "Reliability: confidence against accuracy on held-out photos"))


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else str(value)


def metrics_lines(metrics: dict) -> list[str]:
    """One Markdown bullet per evaluated split (top-1, top-5, macro-F1, n) or per-group breakdown."""
    lines = []
    for split, m in metrics.items():
        if not isinstance(m, dict):
            continue
        if "top1" in m:
            parts = [f"top-1 **{_pct(m['top1'])}**"]
            parts += [f"top-5 {_pct(m['top5'])}"] if "top5" in m else []
            parts += [f"macro-F1 {m['macro_f1']:.3f}"] if isinstance(m.get("macro_f1"), (int, float)) else []
            parts += [f"n = {m['n']:,}"] if isinstance(m.get("n"), int) else []
            lines.append(f"- {split}: " + ", ".join(parts))
        else:  # a group breakdown, e.g. val_by_source: {"grocery": {"top1": ..}, "fruits360": {...}}
            groups = [f"{g} {_pct(v.get('top1', v.get('accuracy', '?')))}" for g, v in m.items() if isinstance(v, dict)]
            if groups:
                lines.append(f"- {split} (top-1): " + ", ".join(groups))
    return lines


def honesty_line(bundle_dir: str | Path, config: BundleConfig, card: dict) -> str:
    """What the confidences mean: calibrated or plain softmax, with or without the unknown flag."""
    cal = card.get("calibration") or {}
    if config.temperature != 1.0:
        if "ece_cv" in cal:
            ece = (f", ECE {cal['ece_cv']:.3f} cross-validated over {cal.get('fitted_on', '?')} held-out photos; "
                   f"per fold {cal['ece_cv_mean']:.3f} ± {cal['ece_cv_std']:.3f}")
        elif "ece_cv_mean" in cal:  # bundles calibrated before the pooled figure existed
            ece = (f", ECE {cal['ece_cv_mean']:.3f} ± {cal['ece_cv_std']:.3f} (cross-validated, on "
                   f"{cal.get('fitted_on', '?')} held-out photos)")
        else:
            ece = ""
        conf = f"calibrated by temperature scaling (T = {config.temperature:.2f}{ece})"
    else:
        conf = "plain softmax (not calibrated)"
    if (Path(bundle_dir) / UNKNOWN_FILE).is_file():
        keep = (cal.get("unknown") or {}).get("keep_rate")
        unknown = "flags photos unlike every class as unknown" + (f" (set to pass {keep:.0%} of known photos)"
                                                                   if isinstance(keep, float) else "")
    else:
        unknown = "no unknown flag (this bundle has no unknown statistics)"
    tta = f"; test-time augmentation: {config.tta}" if config.tta != "none" else ""
    return f"**Confidence:** {conf}; {unknown}{tta}."


def card_markdown(bundle_dir: str | Path) -> str:
    """The model card: architecture, version, training data, accuracy and classes."""
    config = BundleConfig.read(bundle_dir)
    card = read_card(bundle_dir)
    data = card.get("dataset", "unknown")
    if card.get("extra_data"):
        data += f" (plus `{card['extra_data']}` as extra negative classes)"
    counts = [f"{sum(card[k].values()):,} {k.split('_')[0]}" for k in ("train_counts", "val_counts")
              if isinstance(card.get(k), dict)]
    version = f", trained {card['date'][:10]}" if card.get("date") else ""
    parts = [
        "### Model card",
        f"**{config.architecture}**, input {config.input_size}x{config.input_size}, weights from "
        f"`{config.weights}`, version `{config.model_version}`{version}",
        f"**Training data:** {data}" + (f" ({', '.join(counts)} images)" if counts else ""),
    ]
    lines = metrics_lines(card.get("metrics") or {})
    parts.append("**Accuracy:**\n" + "\n".join(lines) if lines else "**Accuracy:** not recorded in card.json")
    parts.append(honesty_line(bundle_dir, config, card))
    parts.append(f"**Classes ({len(config.labels)}):** " + ", ".join(config.labels))
    return "\n\n".join(parts)


def training_plots(bundle_dir: str | Path) -> list[tuple[Path | None, str]]:
    """(path or None, title) of each training plot, found in the bundle folder or the run folder around it."""
    folders = (Path(bundle_dir), Path(bundle_dir).parent)
    return [(next((f / name for f in folders if (f / name).is_file()), None), title) for name, title in PLOTS]
