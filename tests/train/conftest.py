"""Fixtures of the training tests: a tiny teacher, as .keras and converted to .tflite."""

from __future__ import annotations

import pytest

SIZE = 32  # the tiny teacher's input size, and the students' in these tests


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory):
    """The same small Keras feature extractor as .keras and converted to .tflite."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(12, 3, strides=2, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    folder = tmp_path_factory.mktemp("teachers")
    model.save(folder / "tiny.keras")
    (folder / "tiny.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return folder / "tiny.keras", folder / "tiny.tflite"
