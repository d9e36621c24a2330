"""The `teachable_bundle` of the root conftest: the tiny bundle with the features.npz that `train.teach` needs (its
base training set as pooled features), so the demo's Teach view and the workers can be tested on a taught bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tests.helpers import TINY_LABELS, TINY_SIZE
from tests.helpers.images import write_colour_dataset

# The tiny bundle's classes stand for these noisy plain colours in its base set.
BASE_COLOURS = {"apple": "red", "banana": "green", "cherry": "blue"}


def make_teachable_bundle(tiny_bundle: Path, out: Path, scratch: Path) -> Path:
    """A copy of the tiny bundle with 6 photos of a colour per class as its base set (three scene folds per class),
    two exaggerated feature rows as its not-fruit reference, and a head fit of 100 steps (train.teach reads the
    recipe's settings from features.npz): each teach costs seconds, most of them TensorFlow's."""
    from model.bundle import load_keras_model
    from train.data import list_files
    from train.features import BaseFeatures, bundle_embedder, decode_photos, image_features, write_features

    shutil.copytree(tiny_bundle, out)
    data = write_colour_dataset(scratch, n_train=6, n_val=0) / "train"
    split = list_files(data, [BASE_COLOURS[c] for c in TINY_LABELS])
    images, kept, _ = decode_photos(split.paths, TINY_SIZE)
    plain, flip = image_features(bundle_embedder(load_keras_model(out)), images)
    labels = np.asarray(split.labels)[kept]
    folds = np.concatenate([np.arange((labels == c).sum()) % 3 for c in range(len(TINY_LABELS))])
    write_features(out, BaseFeatures(plain, flip, labels, np.full(len(labels), "src0"), folds,
                                     np.ones(len(labels), np.float32), {"ood": plain[:2] * 3, "steps": 100}))
    return out
