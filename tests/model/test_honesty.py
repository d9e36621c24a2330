"""Calibrated confidences and the unknown flag (issue "Honest answers"), and the TTA setting, in the core."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.calibration import fit_temperature, softmax
from model.unknown import UNKNOWN_FILE, UnknownDetector, auroc, fit_unknown, fpr_at_tpr
from tests.helpers.honesty import PLANTED_TEMPERATURE
from tests.helpers.images import write_unknown_images


def test_temperature_fit_recovers_a_planted_temperature_and_changes_no_label():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (4000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(true_logits)])
    reported = true_logits * 3.0  # an over-confident model: its logits are 3x what the labels bear out
    t = fit_temperature(reported, labels)
    assert t == pytest.approx(3.0, rel=0.08)
    np.testing.assert_array_equal(softmax(reported, t).argmax(1), reported.argmax(1))
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.08)


def test_detector_separates_a_planted_cluster_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (4, 32))
    labels = rng.integers(0, 4, 800)
    known = centres[labels] + rng.normal(0, 0.3, (800, 32))
    far = rng.normal(0, 1, (200, 32)) + 3.0  # a cluster of its own, away from every class
    det = fit_unknown(known[:600], labels[:600], 4, shrinkage=0.1)
    det = det.with_threshold(det.score(known[600:700]), keep_rate=0.95)
    fresh, out = det.score(known[700:]), det.score(far)
    assert auroc(fresh, out) > 0.99 and fpr_at_tpr(fresh, out) < 0.01
    assert det.is_unknown(out).mean() > 0.95 and det.is_unknown(fresh).mean() < 0.15
    det.save(tmp_path)
    again = UnknownDetector.load(tmp_path)
    np.testing.assert_allclose(again.score(far), out, rtol=1e-5)
    assert (again.threshold, again.keep_rate) == (det.threshold, 0.95)
    assert UnknownDetector.load(tmp_path / "nowhere") is None


def test_auroc_counts_ties_half():
    assert auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    assert auroc(np.zeros(3), np.zeros(3)) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def plain(tiny_bundle, tiny_classifier):
    """The tiny bundle on TensorFlow: the session's classifier when it runs there (each load and trace costs
    seconds)."""
    from model.predict import load_classifier

    return tiny_classifier if tiny_classifier.runtime == "tf" else load_classifier(tiny_bundle, runtime="tf")


@pytest.fixture(scope="module")
def honest(honest_bundle):
    from model.predict import load_classifier

    return load_classifier(honest_bundle, runtime="tf")


def test_honest_bundle_calibrates_and_flags_planted_unknowns(plain, honest, good_images, tmp_path):
    assert honest.temperature == PLANTED_TEMPERATURE and honest.unknown is not None
    assert honest.model_version != plain.model_version  # other answers, other version: no result reused across
    known = good_images(12, seed=9000)
    odd = write_unknown_images(tmp_path / "odd", 6, seed=9000)
    p_plain, p_honest = plain.predict_probs(known), honest.predict_probs(known)
    np.testing.assert_allclose(p_honest, softmax(np.log(p_plain), PLANTED_TEMPERATURE), atol=1e-5)
    preds = honest.predict(known + odd + [tmp_path / "missing.jpg"])
    assert [p.unknown for p in preds[:12]].count(True) <= 1
    assert all(p.unknown and p.unknown_score > honest.unknown.threshold for p in preds[12:18])
    assert all(len(p.top_k) == 3 for p in preds[:18])  # an unknown still names its closest classes
    assert preds[-1].error and preds[-1].unknown is False and preds[-1].unknown_score is None
    scores = [p.unknown_score for p in preds[:18]]
    assert auroc(np.array(scores[:12]), np.array(scores[12:])) == 1.0


def test_bundle_without_statistics_loads_with_plain_softmax(tiny_bundle, plain, good_images):
    from model.card import card_markdown

    assert not (tiny_bundle / UNKNOWN_FILE).exists()
    p = plain.predict(good_images(2))[0]
    assert (plain.temperature, plain.unknown, p.unknown, p.unknown_score) == (1.0, None, False, None)
    assert "plain softmax (not calibrated); no unknown flag" in card_markdown(tiny_bundle)


def test_flip_tta_round_trips_and_demo_worker_and_evaluate_agree(honest_bundle, honest, good_images, tmp_path):
    from model.bundle import BundleConfig
    from model.explain import Explainer
    from model.predict import load_classifier
    from train.evaluate import classify_all
    from worker.pipeline import classify_items

    bundle = tmp_path / "flip"
    shutil.copytree(honest_bundle, bundle)
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "tta": "flip"}))
    assert BundleConfig.read(bundle).tta == "flip"
    flip = load_classifier(bundle, runtime="tf")
    photo = good_images(1, seed=77)[0]
    batch, _ = honest.preprocess([photo])  # the same bundle without TTA: each view's logits on their own
    mirror = np.ascontiguousarray(batch[:, :, ::-1])
    want = softmax((honest.forward_outputs(batch).logits + honest.forward_outputs(mirror).logits) / 2,
                   PLANTED_TEMPERATURE)[0]
    demo = Explainer(bundle, runtime="tf").predict([photo])[0]
    worker = classify_items(flip, [(str(photo), None)])[0]
    _, out, _ = classify_all(flip, [photo])
    probs, scores = out.probs, out.unknown_scores
    assert dict(demo.top_k)[demo.label] == pytest.approx(float(want.max()), abs=1e-5)
    assert worker["label"] == demo.label and worker["confidence"] == pytest.approx(demo.confidence, abs=1e-6)
    np.testing.assert_allclose(probs[0], want, atol=1e-5)
    assert scores[0] == pytest.approx(demo.unknown_score, rel=1e-5)
    with pytest.raises(ValueError, match="unknown tta"):
        (bundle / "config.json").write_text(json.dumps({**config, "tta": "sideways"}))
        load_classifier(bundle, runtime="tf")
