"""Inference runtimes (model/runtimes.py, onnx_cache.py, onnx_convert.py): selection, the conversion cache, parity.

One real tf2onnx conversion runs (the tiny bundle: `onnx_tiny` in tests/model/conftest.py); a copy whose logits are
scaled, so that top-1 means something (a random-init network's probabilities are near-uniform), reuses its graph with
the scaled kernel. Every cache test swaps the converter for a counter that hands back the real conversion's bytes
(`count_conversions`), so it checks the cache logic in milliseconds. The selection tests need no network and are
quick; the rest are slow.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest

from model import onnx_cache, runtimes
from model.bundle import BundleConfig
from model.network import SERVING_VARIANT, serving_model
from tests.helpers import TINY_LABELS, TINY_SIZE, assert_top1
from tests.helpers.images import write_good_images
from tests.model.conftest import count_conversions

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to ~/.cache: the shared cache folder's default is under this test's tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("INFERENCE_THREADS", raising=False)


# -- selection --------------------------------------------------------------------------------------------
def test_auto_picks_onnx_when_installed_and_tf_otherwise(monkeypatch):
    assert runtimes.resolve_runtime("auto") == "onnx"
    assert runtimes.resolve_runtime("auto", can_cache=False) == "tf"  # an in-memory model: nothing to reuse
    assert runtimes.available_runtimes() == ["onnx", "tf"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert runtimes.resolve_runtime("auto") == "tf"
    assert runtimes.available_runtimes() == ["tf"]


def test_explicit_names_aliases_and_the_setting(monkeypatch):
    from settings import Settings

    assert [runtimes.resolve_runtime(n) for n in ("tf", "TensorFlow", "onnx", " ORT ", "onnxruntime")] == [
        "tf", "tf", "onnx", "onnx", "onnx"]
    monkeypatch.setenv("RUNTIME", "ORT")  # what an entry point passes on to the core
    assert runtimes.resolve_runtime(Settings().classifier_options()["runtime"]) == "onnx"


def test_unknown_runtime_is_a_clear_error():
    with pytest.raises(runtimes.UnknownRuntimeError, match=r"unknown runtime 'tensorrt'.*auto, tf, onnx"):
        runtimes.resolve_runtime("tensorrt")
    with pytest.raises(runtimes.RuntimeUnavailableError, match="openvino"):
        runtimes.resolve_runtime("openvino")


def test_onnx_requested_but_not_installed_is_a_clear_error(monkeypatch, shipped_bundle):
    from model import predict

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(runtimes.RuntimeUnavailableError, match="not installed.*pip install"):
        runtimes.resolve_runtime("onnx")
    loads: list[str] = []
    monkeypatch.setattr(predict, "load_keras_model", lambda source: loads.append(str(source)))
    with pytest.raises(runtimes.RuntimeUnavailableError, match="not installed"):
        predict.load_classifier(shipped_bundle, runtime="onnx")
    assert loads == [], "must fail before the model is loaded"


def test_threads_follow_cpu_affinity_unless_set(monkeypatch):
    import os

    from settings import Settings

    assert runtimes.inference_threads() == len(os.sched_getaffinity(0))
    assert runtimes.inference_threads(Settings().classifier_options()["threads"]) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("INFERENCE_THREADS", "3")
    assert runtimes.inference_threads(Settings().classifier_options()["threads"]) == 3


# -- real conversions and parity (slow: each test below runs the tiny network or its conversion) -------------
@pytest.fixture(scope="session")
def images(tmp_path_factory):
    return write_good_images(tmp_path_factory.mktemp("parity-images"), 12, seed=100)


@pytest.fixture(scope="session")
def peaked(tf_tiny, onnx_tiny, tmp_path_factory):
    """(tf, onnx classifier, onnx file) of a copy of the tiny model whose logits are x1000: decisive top-1.

    Its ONNX graph is the tiny conversion with the same kernel scaled (tf2onnx is weight-agnostic once the
    variables are frozen, and one real conversion is enough for the test budget); it still goes through the
    cache and the probe check against TensorFlow like any conversion.
    """
    import keras
    import onnx
    from onnx import numpy_helper

    from model.predict import Classifier

    model = keras.models.clone_model(tf_tiny.model)
    model.set_weights(tf_tiny.model.get_weights())
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([kernel * 1000.0, bias])
    graph = onnx.load_from_string(onnx_tiny[1].read_bytes())
    (init,) = [i for i in graph.graph.initializer if "logits" in i.name and len(i.dims) == 2]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1000.0), init.name))
    config = BundleConfig(labels=TINY_LABELS, input_size=TINY_SIZE, model_version="peaked000000")
    cache = tmp_path_factory.mktemp("onnx-peaked")
    with pytest.MonkeyPatch.context() as mp:
        count_conversions(mp, graph.SerializeToString())
        onnx_clf = Classifier(model, config, runtime="onnx", cache_dir=cache)
    # TensorFlow eagerly: the same maths as the tf.function runtime without paying for a second trace
    tf_clf = Classifier(model, config, forward_fn=lambda batch: np.asarray(model(batch, training=False)))
    tf_clf.runtime = "tf"
    return tf_clf, onnx_clf, cache / onnx_cache.onnx_file_name(config.model_version, TINY_SIZE, SERVING_VARIANT)


def _assert_parity(tf_clf, onnx_clf, images) -> np.ndarray:
    want, got = tf_clf.predict_probs(images), onnx_clf.predict_probs(images)
    assert onnx_clf.runtime == "onnx" and tf_clf.runtime == "tf"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # Labels from either runtime are TensorFlow's top-1, up to classes that tie within the parity tolerance.
    assert_top1([p.label for p in onnx_clf.predict(images)], want, TINY_LABELS, atol=1e-4)
    assert_top1([p.label for p in tf_clf.predict(images)], want, TINY_LABELS, atol=1e-4)
    return want


@pytest.mark.slow
def test_parity_tiny_model(tf_tiny, onnx_tiny, images):
    _assert_parity(tf_tiny, onnx_tiny[0], images)


@pytest.mark.slow
def test_parity_confident_model(peaked, images):
    probs = _assert_parity(peaked[0], peaked[1], images)
    assert probs.max(1).mean() > 0.9 and len(set(probs.argmax(1))) > 1, "the scaled model should be decisive"


@pytest.mark.slow
def test_load_classifier_auto_converts_beside_the_bundle(tiny_bundle, tmp_path, onnx_tiny, monkeypatch):
    import shutil

    from model.predict import load_classifier

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    good = onnx_tiny[1].read_bytes()
    calls = count_conversions(monkeypatch, good)
    clf = load_classifier(bundle, runtime="auto")
    assert clf.runtime == "onnx"
    files = sorted(p.name for p in bundle.glob("model-*"))
    name = onnx_cache.onnx_file_name(clf.model_version, TINY_SIZE, SERVING_VARIANT)
    assert files == [name, name + ".json"]
    assert calls == [1]


# -- the cache ----------------------------------------------------------------------------------------------
@pytest.fixture
def cached(onnx_tiny, tf_tiny, tmp_path, monkeypatch):
    """A fresh cache folder with one conversion in it, and the conversion counter."""
    good = onnx_tiny[1].read_bytes()
    calls = count_conversions(monkeypatch, good)
    path = _session(tf_tiny, tmp_path)
    assert calls == [1]
    return path, calls, good


def _session(tf_clf, folder, version: str | None = None):
    runtimes.ensure_onnx_session(serving_model(tf_clf.model), TINY_SIZE, version or tf_clf.model_version, folder,
                                 SERVING_VARIANT)
    return folder / onnx_cache.onnx_file_name(version or tf_clf.model_version, TINY_SIZE, SERVING_VARIANT)


@pytest.mark.slow
def test_second_load_does_not_convert(cached, tf_tiny, tmp_path):
    path, calls, _ = cached
    mtime = path.stat().st_mtime_ns
    _session(tf_tiny, tmp_path)
    assert calls == [1] and path.stat().st_mtime_ns == mtime
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["model_version"] == tf_tiny.model_version and meta["input_size"] == TINY_SIZE


@pytest.mark.slow
def test_stale_sidecar_is_rebuilt(cached, tf_tiny, tmp_path):
    path, calls, _ = cached
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "model_version": "0123456789ab"}))
    _session(tf_tiny, tmp_path)
    assert calls == [1, 1] and json.loads(side.read_text())["model_version"] == tf_tiny.model_version


@pytest.mark.slow
def test_new_model_version_replaces_the_old_conversion(cached, tf_tiny, tmp_path):
    old, calls, _ = cached
    new = _session(tf_tiny, tmp_path, version="fedcba987654")
    assert calls == [1, 1] and new.is_file() and not old.exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage-with-matching-hash"])
def test_corrupt_file_is_rebuilt(cached, tf_tiny, tmp_path, damage):
    import hashlib

    path, calls, good = cached
    side = path.with_name(path.name + ".json")
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # the hash agrees, so only ONNX Runtime's load can tell
        path.write_bytes(b"not an onnx model")
        side.write_text(json.dumps({**json.loads(side.read_text()),
                                    "sha256": hashlib.sha256(b"not an onnx model").hexdigest()}))
    _session(tf_tiny, tmp_path)
    assert calls == [1, 1] and path.read_bytes() == good


@pytest.mark.slow
def test_concurrent_loads_convert_once(onnx_tiny, tf_tiny, tmp_path, monkeypatch):
    calls = count_conversions(monkeypatch, onnx_tiny[1].read_bytes(), delay=0.5)
    errors: list[BaseException] = []

    def load():
        try:
            _session(tf_tiny, tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and calls == [1]
    assert not list(tmp_path.glob(".*.tmp")), "no temp file left behind"


@pytest.mark.slow
def test_read_only_bundle_falls_back_to_the_cache_dir(onnx_tiny, tf_tiny, tmp_path, monkeypatch):
    bundle = tmp_path / "read-only-bundle"
    bundle.mkdir()
    real_writable = onnx_cache.writable
    monkeypatch.setattr(onnx_cache, "writable", lambda f: f != bundle and real_writable(f))
    count_conversions(monkeypatch, onnx_tiny[1].read_bytes())
    runtimes.ensure_onnx_session(serving_model(tf_tiny.model), TINY_SIZE, tf_tiny.model_version, bundle,
                                 SERVING_VARIANT, shared_cache_dir=tmp_path / "user-cache")
    name = onnx_cache.onnx_file_name(tf_tiny.model_version, TINY_SIZE, SERVING_VARIANT)
    assert not (bundle / name).exists() and (tmp_path / "user-cache" / name).is_file()


@pytest.mark.slow
def test_a_conversion_that_disagrees_with_tensorflow_is_refused(peaked, tf_tiny, tmp_path, monkeypatch):
    from model.predict import Classifier

    count_conversions(monkeypatch, peaked[2].read_bytes())  # the x300 model's graph for the plain one
    with pytest.raises(runtimes.RuntimeUnavailableError, match="does not match TensorFlow"):
        Classifier(tf_tiny.model, tf_tiny.config, runtime="onnx", cache_dir=tmp_path)
    assert Classifier(tf_tiny.model, tf_tiny.config, runtime="auto", cache_dir=tmp_path).runtime == "tf"
    assert not list(tmp_path.glob("model-*"))

