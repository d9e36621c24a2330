"""Scene folds: near-identical shots of one visit stay in one fold (train.crossval), and the cross-validated
ECE of the calibration uses those folds (train.calibrate)."""

from __future__ import annotations

import numpy as np

from model.calibration import softmax
from train.calibrate import cross_validated_ece
from train.crossval import Rows, cross_fit, scene_folds
from train.probe import fit_softmax


def planted_scenes(rng, n_classes=3, scenes=5, shots=12, dim=16):
    """Per class, `scenes` tight clusters of shots (one shelf photographed many times), far from each other."""
    x, y, scene = [], [], []
    for c in range(n_classes):
        for s in range(scenes):
            centre = rng.normal(0, 5.0, dim)
            x.append(centre + rng.normal(0, 0.05, (shots, dim)))
            y += [c] * shots
            scene += [c * scenes + s] * shots
    return np.concatenate(x).astype(np.float32), np.array(y), np.array(scene)


def test_scene_folds_keep_each_scene_in_one_fold_and_spread_a_class_over_all():
    x, y, scene = planted_scenes(np.random.default_rng(0))
    fold = scene_folds(x, y, 5, seed=1)
    for s in np.unique(scene):
        assert len(set(fold[scene == s])) == 1  # a shot's twins are never on the other side
    for c in np.unique(y):
        assert sorted(set(fold[y == c])) == [0, 1, 2, 3, 4]  # every fold holds out one scene of every class
    assert np.array_equal(fold, scene_folds(x, y, 5, seed=1))  # seeded


def test_a_class_with_fewer_photos_than_folds_is_dealt_out():
    x = np.random.default_rng(0).normal(size=(3, 4))
    fold = scene_folds(x, np.zeros(3, int), 5, seed=0)
    assert len(set(fold)) == 3 and fold.max() < 5


def test_scene_folds_tell_the_truth_where_random_folds_leak():
    """Labels that only a photo's scene predicts: a head can memorise scenes, not generalise to new ones. Random
    folds would score it near 100% (every scene is in the fitting set); scene folds score chance."""
    rng = np.random.default_rng(0)
    x, _, scene = planted_scenes(rng, n_classes=1, scenes=30, shots=8)
    y = rng.permutation(np.arange(30) % 3)[scene]  # each scene gets a random class of 3
    pool = np.arange(len(y))

    def fit_head(xs, ys):
        return fit_softmax(xs, ys, 3, 1e-3, 200, 0.05)

    oof = cross_fit(Rows(x, y, pool), pool, y, x, 3, fit_head, folds=5, seed=0)
    for s in np.unique(scene):
        assert len(set(oof.fold[scene == s])) == 1
    assert oof.summary("none")["top1_mean"] < 0.7
    memorised = fit_head(x, y)(x).argmax(1) == y
    assert memorised.mean() > 0.95


def test_cross_validated_ece_pools_the_folds_and_reports_each():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3.0, (600, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits / 2.0)])  # over-confident by T = 2
    fold = np.arange(600) % 3
    pooled, per_fold = cross_validated_ece(logits, labels, fold, seed=0)
    assert len(per_fold) == 3
    raw, _ = cross_validated_ece(logits, labels, np.zeros(600, int), seed=0)  # one fold: in-sample T
    assert pooled < 0.06 and raw < 0.06
    assert pooled < float(np.mean(per_fold))  # 200-photo folds add binning noise the pooled figure has less of
