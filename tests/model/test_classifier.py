"""The prediction API on a tiny real DenseNet121: preprocessing, batching, save/load, errors, weights.

Tests that build or run a network are slow; the refusals and the preprocessing maths are quick."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from model.bundle import CONFIG_FILE, BundleConfig, load_keras_model, weights_hash
from model.images import load_image
from model.network import WeightsUnavailableError, build_model, preprocessing_layer, resolve_weights
from model.predict import load_classifier
from tests.helpers import TINY_LABELS, TINY_SIZE, assert_top1
from tests.helpers.images import random_rgb


def test_in_graph_preprocessing_equals_keras_preprocess_input():
    from keras.applications import densenet

    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    ours = np.asarray(preprocessing_layer()(x))
    np.testing.assert_allclose(ours, densenet.preprocess_input(x.copy()), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_preprocess_is_the_loader_output(tiny_classifier, good_images):
    paths = good_images(3)
    batch, errors = tiny_classifier.preprocess(paths)
    assert errors == [None] * 3 and batch.shape == (3, TINY_SIZE, TINY_SIZE, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], load_image(paths[1], TINY_SIZE).astype(np.float32))


@pytest.mark.slow
def test_batch_predictions_equal_single_image_predictions(tiny_classifier, good_images):
    paths = good_images(7)
    batched = tiny_classifier.predict_probs(paths)
    singles = np.concatenate([tiny_classifier.predict_probs([p]) for p in paths])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)
    preds = tiny_classifier.predict(paths, top_k=3, batch_size=3)  # several batches through iter_predict
    assert_top1([p.label for p in preds], singles, TINY_LABELS)
    for p, row in zip(preds, singles, strict=True):
        assert p.confidence == pytest.approx(float(row.max()), rel=1e-5)
        assert [c for _, c in p.top_k] == sorted((c for _, c in p.top_k), reverse=True)


@pytest.mark.slow
def test_probabilities_sum_to_one_and_top_k_is_clamped(tiny_classifier):
    probs = tiny_classifier.forward(np.stack([random_rgb(i, (TINY_SIZE, TINY_SIZE)) for i in range(2)]))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    (pred,) = tiny_classifier.predict([random_rgb(0)], top_k=50)
    assert len(pred.top_k) == len(TINY_LABELS)


@pytest.mark.slow
def test_accepts_paths_bytes_arrays_and_pil(tiny_classifier, good_images):
    (path,) = good_images(1)
    arr = load_image(path)
    preds = tiny_classifier.predict([path, str(path), path.read_bytes(), arr, Image.fromarray(arr)])
    want = tiny_classifier.predict_probs([arr])[0]  # the decoded pixels on their own
    for p in preds:
        assert dict(p.top_k) == pytest.approx(dict(zip(TINY_LABELS, want.tolist(), strict=True)), abs=1e-5)
    assert_top1([p.label for p in preds], [want] * len(preds), TINY_LABELS)


@pytest.mark.slow
def test_bad_files_get_an_error_and_the_rest_a_label(tiny_classifier, good_images, bad_images):
    bad = bad_images()
    good = good_images(2)
    inputs = [good[0], *bad.values(), good[1]]
    preds = tiny_classifier.predict(inputs)
    assert len(preds) == len(inputs)
    assert preds[0].ok and preds[-1].ok
    assert all(not p.ok and p.error and p.label is None for p in preds[1:-1])
    assert all(p.model_version == tiny_classifier.model_version for p in preds)


@pytest.mark.slow
def test_save_load_round_trip_gives_identical_outputs(tiny_bundle, tiny_classifier, classifier_options):
    x = np.stack([random_rgb(i, (TINY_SIZE, TINY_SIZE)) for i in range(4)]).astype(np.float32)
    again = load_classifier(tiny_bundle, **classifier_options)
    np.testing.assert_array_equal(again.forward(x), tiny_classifier.forward(x))
    assert again.labels == TINY_LABELS and again.input_size == TINY_SIZE
    assert again.model_version == weights_hash(again.model) == BundleConfig.read(tiny_bundle).model_version
    assert json.loads((tiny_bundle / "card.json").read_text())["model_version"] == again.model_version


@pytest.mark.slow
def test_model_version_changes_with_the_weights(tiny_bundle):
    model = load_keras_model(tiny_bundle)
    before = weights_hash(model)
    w = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([w[0] + 1e-3, w[1]])
    assert weights_hash(model) != before


def test_loading_never_runs_code_from_the_file(tmp_path):
    """A bundle with a Lambda layer (arbitrary Python) is refused by safe mode."""
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    bundle = tmp_path / "evil"
    bundle.mkdir()
    model.save(bundle / "model.keras")
    (bundle / CONFIG_FILE).write_text(json.dumps({"labels": ["a", "b", "c", "d"], "input_size": 4}))
    with pytest.raises(ValueError, match="(?i)unsafe|safe_mode|lambda"):
        load_classifier(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model bundle"):
        load_classifier(tmp_path)


@pytest.fixture
def offline_imagenet(monkeypatch, tmp_path):
    """Point Keras at a closed local port and an empty cache: exactly what no network looks like."""
    from keras.src.applications import densenet, imagenet_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(densenet, "BASE_WEIGHTS_PATH", "http://127.0.0.1:9/keras-applications/densenet/")
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX_PATH", "http://127.0.0.1:9/imagenet_class_index.json")


def test_imagenet_unreachable_fails_at_once_and_names_the_other_options(offline_imagenet):
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(3, TINY_SIZE, weights="imagenet")
    message = str(info.value)
    assert "ImageNet weights" in message and "weights='none'" in message and "weights=PATH" in message


def test_stock_imagenet_model_gives_the_same_clear_error(offline_imagenet):
    with pytest.raises(WeightsUnavailableError, match="weights='none'"):
        load_classifier("imagenet", input_size=TINY_SIZE)


def test_weights_choices(tmp_path):
    assert resolve_weights("none") is None and resolve_weights(None) is None
    assert resolve_weights("imagenet") == "imagenet"
    with pytest.raises(WeightsUnavailableError, match="not found"):
        resolve_weights(str(tmp_path / "missing.weights.h5"))


@pytest.mark.slow
def test_local_weights_file_is_loaded(tmp_path):
    import keras

    from model.network import base_of

    keras.utils.set_random_seed(1)
    donor = build_model(2, TINY_SIZE, weights=None)
    path = tmp_path / "densenet121_notop.weights.h5"
    base_of(donor).save_weights(path)
    model = build_model(2, TINY_SIZE, weights=str(path))
    for a, b in zip(base_of(model).weights, base_of(donor).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_a_phone_photo_decoded_at_reduced_scale_gets_the_predictions_of_a_full_decode(tmp_path, shipped_bundle,
                                                                                       classifier_options):
    """A 12 MP JPEG is decoded at 1/8 scale (libjpeg's DCT scaling, `model.images`): several times faster, and the
    shipped model's answer is that of the full-size decode resized the same way (within 0.05 of each probability)."""
    from tests.helpers import ROOT

    clf = load_classifier(shipped_bundle, **classifier_options)
    rng = np.random.default_rng(0)
    for source in ("banana/grocery__Banana__Banana_001.jpg", "apple/fruits360__apple_golden_1__r0_74.jpg"):
        photo = Image.open(ROOT / "examples" / source).convert("RGB").resize((4000, 3000), Image.BICUBIC)
        noisy = np.asarray(photo, np.int16) + rng.normal(0, 6, (3000, 4000, 3)).astype(np.int16)
        path = tmp_path / "phone.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        full = np.asarray(Image.open(path).convert("RGB").resize((clf.input_size,) * 2, Image.BILINEAR))
        reduced, whole = clf.predict_probs([path, full])
        assert reduced.argmax() == whole.argmax() and np.abs(reduced - whole).max() < 0.05, (reduced, whole)
