"""What a bundle says about itself, for people: its model card as Markdown and the training plots beside it.

The card leads with what to expect on real photos (`expectations`): the scene cross-validation on the real photos
(the figure and its spread from fold to fold), the other sources' held-out figures (studio shots), what the training
photos were, and that on photos from elsewhere the model often says it does not know, with a pointer to teaching
it. Every figure is read from the bundle's card.json (or metrics.json beside it), so a recalibrated or taught
bundle shows its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.bundle import BundleConfig, read_card
from model.unknown import UNKNOWN_FILE

METRICS_FILE = "metrics.json"  # train.evaluate's report beside card.json: its `groups` are the per-source figures
# How the card names a training source (file names `<source>__...`, train.metrics.source_of) to a visitor: (where the
# figure is measured, what the model learned from). A source not listed is named as it is.
SOURCES = {"grocery": ("Real store photos", "one grocery store's photo collection"),
           "fruits360": ("Studio shots", "studio shots of single fruits on a white background")}
TEACH = "the **Teach** tab, or `python -m train.teach --model BUNDLE --data DIR --out NEW_BUNDLE`"

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


def _source(name: str, which: int) -> str:
    return SOURCES[name][which] if name in SOURCES else f"`{name}` photos"


def _groups(bundle_dir: str | Path, card: dict) -> dict[str, dict]:
    """Held-out figures per training source: card.json's metrics.val_by_source, else metrics.json's groups."""
    groups = (card.get("metrics") or {}).get("val_by_source")
    if not isinstance(groups, dict):
        try:
            groups = json.loads((Path(bundle_dir) / METRICS_FILE).read_text()).get("groups")
        except (OSError, ValueError, AttributeError):
            groups = None
    return {k: v for k, v in (groups or {}).items() if isinstance(v, dict) and isinstance(v.get("top1"), float)}


def _scene_cv(card: dict) -> tuple[list[str], dict] | None:
    """(the sources cross-validated on, [] for all; the figures) of the bundle's scene cross-validation, or of
    its base set's for a taught bundle; None when the card has none."""
    cv = card.get("cross_validation") or {}
    stats = cv.get(cv.get("tta") or "none") or cv.get("none")
    if isinstance(stats, dict) and isinstance(stats.get("top1_mean"), float):
        sources = cv.get("sources")
        sources = [] if sources in (None, "all") else [sources] if isinstance(sources, str) else list(sources)
        return sources, stats
    taught = card.get("teach_figures") or {}
    if isinstance(taught.get("base_cv_top1"), float):  # train.teach: its base set's real (store) photos, out of fold
        return ["grocery"], {"top1_mean": taught["base_cv_top1"], "top1_std": taught.get("base_cv_top1_std")}
    return None


def expectations(bundle_dir: str | Path, config: BundleConfig, card: dict) -> str:
    """What to expect on real photos, from the bundle's own figures: the first thing the card says."""
    things = card.get("dataset") if str(card.get("dataset", "")).isalpha() else "classes"
    groups, cv = _groups(bundle_dir, card), _scene_cv(card)
    lines = []
    if cv:
        sources, s = cv
        where = _source(sources[0], 0) if len(sources) == 1 else "Its own photos"
        spread = f" ± {s['top1_std']:.1%}" if isinstance(s.get("top1_std"), float) else ""
        size = f" over {s['n']:,} photos in {s['folds']} folds" if "n" in s and "folds" in s else ""
        line = (f"- **{where}, in scenes it never saw: about {s['top1_mean']:.0%} right.** Scene cross-validation"
                f"{size}: {s['top1_mean']:.1%}{spread} from fold to fold")
        line += f"; the right one in its top 5: {s['top5_mean']:.0%}" if isinstance(s.get("top5_mean"), float) else ""
        held = [f"{groups[x]['top1']:.0%} (n = {groups[x]['n']:,})" for x in sources
                if x in groups and isinstance(groups[x].get("n"), int)]
        lines.append(line + (f". Held out for validation: {', '.join(held)}." if held else "."))
        others = {k: v for k, v in groups.items() if k not in sources}
    else:
        others = groups
    for name, g in others.items():
        n = f" (n = {g['n']:,})" if isinstance(g.get("n"), int) else ""
        lines.append(f"- **{_source(name, 0)}:** {g['top1']:.0%} right{n}.")
    if not lines:
        lines.append("- **No accuracy on held-out real photos is recorded for this bundle.**")
    order = (cv[0] if cv else []) + [name for name in groups if not cv or name not in cv[0]]
    learned = [_source(name, 1) for name in order] or [str(card.get("dataset", "its training photos"))]
    taught = (card.get("taught") or {}).get("photos")
    if isinstance(taught, dict) and taught:
        learned.append(f"{sum(taught.values()):,} photos taught to it ({', '.join(sorted(taught))})")
    lines.append(f"- **It learned from** {' and '.join(learned)}. On photos from anywhere else it is right less "
                 f"often, and it often says it does not know (*Not sure*, or *not one of the {len(config.labels)} "
                 f"{things} I know*). To teach it your own photos: {TEACH}.")
    return "### What to expect\n" + "\n".join(lines)


def card_markdown(bundle_dir: str | Path) -> str:
    """The model card: what to expect on real photos first, then architecture, version, training data, every
    accuracy figure and the classes."""
    config = BundleConfig.read(bundle_dir)
    card = read_card(bundle_dir)
    data = card.get("dataset", "unknown")
    if card.get("extra_data"):
        data += f" (plus `{card['extra_data']}` as extra negative classes)"
    counts = [f"{sum(card[k].values()):,} {k.split('_')[0]}" for k in ("train_counts", "val_counts")
              if isinstance(card.get(k), dict)]
    version = f", trained {card['date'][:10]}" if card.get("date") else ""
    parts = [
        expectations(bundle_dir, config, card),
        "### Model card",
        f"**{config.architecture}**, input {config.input_size}x{config.input_size}, weights from "
        f"`{config.weights}`, version `{config.model_version}`{version}",
        f"**Training data:** {data}" + (f" ({', '.join(counts)} images)" if counts else ""),
    ]
    lines = metrics_lines(card.get("metrics") or {})
    # The pooled val figure mixes studio shots (near-perfect) with real photos: it is listed, not led with.
    parts.append("**Accuracy on the validation set** (all sources together, then per source):\n" + "\n".join(lines)
                 if lines else "**Accuracy:** not recorded in card.json")
    parts.append(honesty_line(bundle_dir, config, card))
    parts.append(f"**Classes ({len(config.labels)}):** " + ", ".join(config.labels))
    return "\n\n".join(parts)


def training_plots(bundle_dir: str | Path) -> list[tuple[Path | None, str]]:
    """(path or None, title) of each training plot, found in the bundle folder or the run folder around it."""
    folders = (Path(bundle_dir), Path(bundle_dir).parent)
    return [(next((f / name for f in folders if (f / name).is_file()), None), title) for name, title in PLOTS]
