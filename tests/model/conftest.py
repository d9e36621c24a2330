"""Fixtures of the model tests: the tiny bundle on TensorFlow, and its one real ONNX conversion.

A tf2onnx conversion of the tiny network takes 15 to 30 s here: it runs once per session, and every other test that
needs a conversion (the runtimes' cache, Grad-CAM on ONNX) gets its bytes through `count_conversions`, which stands
in for the converter, so those tests check what they are about in milliseconds.
"""

from __future__ import annotations

import time

import pytest

from model import onnx_cache, runtimes
from model.network import SERVING_VARIANT
from tests.helpers import TINY_SIZE


def count_conversions(monkeypatch: pytest.MonkeyPatch, data: bytes, delay: float = 0.0) -> list[int]:
    """Replace the converter with one that hands back `data` (a real conversion's bytes); one entry per call."""
    calls: list[int] = []

    def fake_convert(model, input_size):
        calls.append(1)
        time.sleep(delay)
        return data

    monkeypatch.setattr(runtimes, "convert_to_onnx", fake_convert)  # where the cache calls it from
    return calls


@pytest.fixture(scope="session")
def tf_tiny(tiny_bundle, tiny_classifier):
    """The tiny bundle on TensorFlow: the session's `tiny_classifier` when the settings run TensorFlow (the
    suite's default), so that no test pays for another load and trace of the same network."""
    from model.predict import load_classifier

    return tiny_classifier if tiny_classifier.runtime == "tf" else load_classifier(tiny_bundle, runtime="tf")


@pytest.fixture(scope="session")
def onnx_tiny(tf_tiny, tmp_path_factory):
    """(classifier, file): the tiny model through the ONNX runtime, converted for real into its own cache folder."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from model.predict import Classifier

    cache = tmp_path_factory.mktemp("onnx-tiny")
    clf = Classifier(tf_tiny.model, tf_tiny.config, runtime="onnx", cache_dir=cache)
    return clf, cache / onnx_cache.onnx_file_name(tf_tiny.model_version, TINY_SIZE, SERVING_VARIANT)
