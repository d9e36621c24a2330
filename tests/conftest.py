"""Shared fixtures: a tiny real DenseNet121 bundle (weights=None, 32x32 input, 3 classes) and images."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run on TensorFlow unless RUNTIME says otherwise: with "auto" every bundle a test (or a worker process it
# starts) loads would first be converted to ONNX. tests/test_runtimes.py covers the ONNX runtime and its cache;
# `RUNTIME=auto make test` runs the whole suite on the default runtime.
os.environ.setdefault("RUNTIME", "tf")

TINY_LABELS = ["apple", "banana", "cherry"]
TINY_SIZE = 32


def classifier_options() -> dict:
    """`load_classifier`'s options as the entry points take them: from the settings (so RUNTIME above)."""
    from settings import Settings

    return Settings().classifier_options()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A saved bundle of a real, untrained DenseNet121: fast to run, deterministic outputs."""
    import keras

    from model.bundle import BundleConfig, save_bundle
    from model.network import build_model

    keras.utils.set_random_seed(0)
    model = build_model(len(TINY_LABELS), TINY_SIZE, weights=None)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(model, path, BundleConfig(labels=TINY_LABELS, input_size=TINY_SIZE),
                card={"dataset": "tiny test set", "classes": TINY_LABELS})
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_bundle):
    from model.predict import load_classifier

    return load_classifier(tiny_bundle, **classifier_options())
