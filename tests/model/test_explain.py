"""model.explain on the tiny real DenseNet121: one network serves the plain and the explained predictions, with the
classifier's own numbers, and each photo is decoded once."""

from __future__ import annotations

import numpy as np
import pytest

from model.explain import Explainer

pytestmark = pytest.mark.slow  # runs the tiny network


def test_one_network_serves_both_and_matches_the_classifier(tiny_bundle, tiny_classifier, good_images, bad_images,
                                                            monkeypatch):
    from model import gradcam, images, predict

    made = []  # the networks that got a forward function (an ONNX session, a TF trace)
    for module in (predict, gradcam):
        original = module.make_forward
        monkeypatch.setattr(module, "make_forward",
                            lambda *a, _o=original, _m=module.__name__, **k: made.append(_m) or _o(*a, **k))
    explainer = Explainer(tiny_bundle, runtime="tf")
    clf, cam = explainer.load()
    assert made == ["model.predict"] and clf.runtime == cam.runtime == "tf"  # one network serves both

    paths = [*good_images(3, seed=30), bad_images()["truncated"]]
    decodes = []
    opened = images._open
    monkeypatch.setattr(images, "_open", lambda *a, **k: decodes.append(a[0]) or opened(*a, **k))
    want = tiny_classifier.predict_probs(paths[:3])  # the plain network on TensorFlow
    decodes.clear()
    explained = explainer.predict(paths, top_k=3)
    assert sorted(map(str, decodes)) == sorted(map(str, paths))  # each photo decoded once, heatmap included
    plain = explainer.predict(paths, top_k=3, explain=False)
    for p, q, probs in zip(explained, plain, want, strict=False):
        top = {label: conf for label, conf in p.top_k}
        assert top == pytest.approx(dict(zip(["apple", "banana", "cherry"], probs.tolist(), strict=True)), abs=1e-5)
        assert dict(q.top_k) == pytest.approx(top, abs=1e-6) and q.heatmap is None
        assert p.heatmap is not None and p.heatmap.dtype == np.uint8
    assert not explained[3].ok and "truncated" in explained[3].error and explained[3].heatmap is None

    rows = explainer.classify(paths, top_k=3, thumbnail_side=20)
    assert [p.ok for p, _ in rows] == [True, True, True, False]
    assert all(max(t.shape[:2]) <= 20 for _, t in rows[:3]) and rows[3][1] is None
