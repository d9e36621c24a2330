"""Grad-CAM on the tiny real DenseNet121: one pass gives the model's own probabilities and CAM = ReLU(A . W_c)."""

from __future__ import annotations

import numpy as np
import pytest

from model.gradcam import GradCAM, class_weights, feature_maps, heatmaps, overlay
from tests.model.conftest import count_conversions


@pytest.fixture(scope="module")
def tf_cam(tiny_classifier):
    """Grad-CAM of the tiny network on TensorFlow (its trace costs seconds: both slow tests share it)."""
    return GradCAM(tiny_classifier.model)


@pytest.mark.slow
def test_cam_probabilities_and_heatmaps(tiny_classifier, tf_cam):
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    features, probs = tf_cam(batch)
    np.testing.assert_allclose(probs, tiny_classifier.forward(batch), atol=1e-6)
    np.testing.assert_allclose(features, np.asarray(feature_maps(tiny_classifier.model, batch)), atol=1e-5)
    w = class_weights(tiny_classifier.model)
    top = probs.argmax(axis=1)
    maps = heatmaps(features, w, top)
    manual = np.maximum((features * w[:, top].T[:, None, None, :]).sum(-1), 0)
    peak = manual.reshape(3, -1).max(1)
    np.testing.assert_allclose(maps, manual / np.where(peak > 0, peak, 1)[:, None, None], atol=1e-5)
    assert maps.min() >= 0 and maps.max() <= 1


def test_heatmaps_follow_planted_evidence():
    """Each image has one feature channel lit at one place; a class's map peaks where the channels it weighs
    positively are lit, and is all zero (ReLU, no division by zero) where there is only negative evidence."""
    rng = np.random.default_rng(1)
    features = rng.uniform(0, 0.05, (2, 7, 7, 16)).astype(np.float32)  # faint positive background everywhere
    features[0, 1, 5, 3] = 2.0  # image 0: channel 3 at row 1, column 5
    features[1, 5, 1, 8] = 2.0  # image 1: channel 8 at row 5, column 1
    weights = np.zeros((16, 4), np.float32)
    weights[3, 0], weights[8, 0] = 1.0, -1.0  # class 0: channel 3 for, channel 8 against
    weights[3, 2], weights[8, 2] = -1.0, 1.0  # class 2: the reverse
    weights[:, 1] = -0.1  # class 1: no positive evidence anywhere
    maps = heatmaps(features, weights, [0, 2])
    assert maps.shape == (2, 7, 7) and np.isclose(maps.max(axis=(1, 2)), 1).all()
    assert [np.unravel_index(m.argmax(), m.shape) for m in maps] == [(1, 5), (5, 1)]
    swapped = heatmaps(features, weights, [2, 0])  # each image explained by the class its feature argues against
    assert swapped[0, 1, 5] == 0 and swapped[1, 5, 1] == 0
    assert not heatmaps(features, weights, [1, 1]).any()


def test_overlay_blends_the_colormap_where_the_map_is():
    """The map is stretched over the image (rows to rows, columns to columns) and blended as
    (1 - alpha) * image + alpha * colormap(value), with the colormap computed here by matplotlib."""
    from matplotlib import colormaps

    heat = np.zeros((7, 7), np.float32)
    heat[0, -1] = 1.0  # top right: the corner pixels of a bilinear resize keep the corner values
    image = np.full((40, 60, 3), 128, np.uint8)  # wider than tall: a transposed map would land elsewhere
    alpha = 0.45
    out = overlay(image, heat, alpha=alpha)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    for (y, x), value in (((0, 59), 1.0), ((39, 0), 0.0), ((0, 0), 0.0)):
        want = (1 - alpha) * 128 + alpha * np.array(colormaps["jet"](value)[:3]) * 255
        np.testing.assert_allclose(out[y, x], want, atol=1.5, err_msg=f"pixel {(y, x)}")


@pytest.mark.slow
def test_cam_on_onnx_runtime_matches_tensorflow_and_is_cached(tiny_classifier, tf_cam, onnx_tiny, tmp_path,
                                                              monkeypatch):
    from model.network import SERVING_VARIANT
    from model.onnx_cache import onnx_file_name

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the shared cache folder: never ~/.cache
    # The converter hands back the session's real conversion of the tiny serving network: the cache still checks
    # it against TensorFlow before keeping it, and a conversion of any other network would be a second call.
    calls = count_conversions(monkeypatch, onnx_tiny[1].read_bytes())
    batch = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    version = tiny_classifier.model_version
    on_tf = tf_cam
    on_onnx = GradCAM(tiny_classifier.model, model_version=version, runtime="onnx", cache_dir=tmp_path)
    assert (on_tf.runtime, on_onnx.runtime) == ("tf", "onnx")
    # The serving network's conversion: the one the classifier itself uses, so a process holds one session.
    assert calls == [1] and (tmp_path / onnx_file_name(version, 32, SERVING_VARIANT)).is_file()
    assert not (tmp_path / onnx_file_name(version, 32, "cam")).exists()
    (f_tf, p_tf), (f_onnx, p_onnx) = on_tf(batch), on_onnx(batch)
    np.testing.assert_allclose(p_onnx, p_tf, atol=1e-5)
    np.testing.assert_allclose(f_onnx, f_tf, atol=1e-4 * max(1.0, float(np.abs(f_tf).max())))
    maps_tf, maps_onnx = on_tf.explain(batch)[1], on_onnx.explain(batch)[1]
    np.testing.assert_allclose(maps_onnx, maps_tf, atol=1e-3)
    # The twin of a loaded classifier runs where the classifier runs (TensorFlow in the test settings).
    assert GradCAM.for_classifier(tiny_classifier).runtime == tiny_classifier.runtime
