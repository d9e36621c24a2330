"""The model card's first lines set expectations (issue 26): real-photo accuracy (scene cross-validation and its
spread), studio shots, what the model learned from, that elsewhere it often says it does not know, and how to teach
it; every figure from the bundle's own files (no network load, no TensorFlow)."""

from __future__ import annotations

import json
import shutil

from model.card import card_markdown


def _cv(card: dict) -> dict:
    cv = card["cross_validation"]
    return cv[cv.get("tta") or "none"]


def test_the_card_leads_with_real_photos_and_reads_its_figures_from_the_bundle(shipped_bundle, tmp_path):
    card = json.loads((shipped_bundle / "card.json").read_text())
    text = card_markdown(shipped_bundle)
    lead, rest = text.split("### Model card")
    cv, groups = _cv(card), card["metrics"]["val_by_source"]
    real, studio = card["cross_validation"]["sources"][0], "fruits360"
    assert lead.startswith("### What to expect\n- **Real store photos, in scenes it never saw: about "
                           f"{cv['top1_mean']:.0%} right.**")
    assert f"{cv['top1_mean']:.1%} ± {cv['top1_std']:.1%} from fold to fold" in lead
    assert f"over {cv['n']:,} photos in {cv['folds']} folds" in lead
    assert f"Held out for validation: {groups[real]['top1']:.0%} (n = {groups[real]['n']:,})" in lead
    assert f"- **Studio shots:** {groups[studio]['top1']:.0%} right (n = {groups[studio]['n']:,})." in lead
    assert "one grocery store's photo collection and studio shots" in lead
    assert "often says it does not know" in lead and "not one of the 21 fruits I know" in lead
    assert "**Teach** tab" in lead and "python -m train.teach" in lead
    assert "92.4%" not in lead and "top-1 **92.4%**" in rest  # the pooled val figure: listed, not led with

    # Another calibration of the same bundle: the card follows its files.
    other = tmp_path / "recalibrated"
    shutil.copytree(shipped_bundle, other, ignore=shutil.ignore_patterns("*.keras", "*.onnx", "*.npz"))
    card["cross_validation"]["none"].update(top1_mean=0.6512, top1_std=0.0421)
    card["metrics"]["val_by_source"]["fruits360"]["top1"] = 0.987
    (other / "card.json").write_text(json.dumps(card))
    lead = card_markdown(other).split("### Model card")[0]
    assert "about 65% right" in lead and "65.1% ± 4.2%" in lead and "**Studio shots:** 99% right" in lead


def test_a_taught_or_bare_bundle_still_says_what_it_knows(shipped_bundle, tmp_path):
    card = json.loads((shipped_bundle / "card.json").read_text())
    taught = tmp_path / "taught"
    shutil.copytree(shipped_bundle, taught, ignore=shutil.ignore_patterns("*.keras", "*.onnx", "*.npz", "metrics.json"))
    for stale in ("metrics", "cross_validation"):  # as train.teach writes its card
        card.pop(stale)
    card.update(teach_figures={"base_cv_top1": 0.7123, "base_cv_top1_std": 0.05},
                taught={"photos": {"kiwi": 12, "quince": 8}})
    (taught / "card.json").write_text(json.dumps(card))
    lead = card_markdown(taught).split("### Model card")[0]
    assert "**Real store photos, in scenes it never saw: about 71% right.**" in lead and "71.2% ± 5.0%" in lead
    assert "20 photos taught to it (kiwi, quince)" in lead

    bare = tmp_path / "bare"
    shutil.copytree(taught, bare)
    (bare / "card.json").write_text(json.dumps({"dataset": "tiny test set"}))
    lead = card_markdown(bare).split("### Model card")[0]
    assert "No accuracy on held-out real photos is recorded" in lead and "It learned from** tiny test set" in lead
