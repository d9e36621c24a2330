"""The `honest_bundle` of the root conftest: the tiny bundle with a temperature and unknown statistics, written
by the same `train.calibrate.write_honesty` as every recipe's last step."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tests.helpers.images import write_good_images, write_unknown_images

PLANTED_TEMPERATURE = 2.0


def make_honest_bundle(tiny_bundle: Path, out: Path, scratch: Path, clf=None) -> Path:
    """Statistics fitted on 48 noisy plain colours (labels: the untrained net's own top-1); the threshold halfway
    (geometrically) between the highest score of 24 other plain colours and the lowest of the stripe patterns.
    `clf`: the tiny bundle already loaded on TensorFlow (the copy has the same weights), to save a load and trace."""
    from model.predict import load_classifier
    from model.unknown import fit_unknown
    from train.calibrate import Honesty, bundle_outputs, write_honesty

    shutil.copytree(tiny_bundle, out)
    clf = clf or load_classifier(out, runtime="tf")
    logits, features, _ = bundle_outputs(clf, write_good_images(scratch / "known", 48, seed=5000))
    labels = logits.argmax(1)
    detector = fit_unknown(features, labels, len(clf.labels), shrinkage=0.5)
    _, held_features, _ = bundle_outputs(clf, write_good_images(scratch / "held", 24, seed=6000))
    _, odd_features, _ = bundle_outputs(clf, write_unknown_images(scratch / "odd", 8, seed=5000))
    high, low = float(detector.score(held_features).max()), float(detector.score(odd_features).min())
    assert low > high, f"the planted patterns do not separate on this network ({low} <= {high})"
    detector.threshold = float(np.sqrt(high * low))
    write_honesty(out, Honesty(PLANTED_TEMPERATURE, detector, {"temperature": PLANTED_TEMPERATURE}), logits, labels)
    return out
