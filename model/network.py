"""The DenseNet121 network: Keras layers only (no TensorFlow calls), so it also runs on the JAX backend.

The model takes raw RGB pixels (0..255, any float dtype) and returns class probabilities. DenseNet's
`preprocess_input` ("torch" mode: /255, minus the ImageNet mean, over its std) is a `Normalization` layer
inside the graph, so a saved `.keras` file carries its own preprocessing and no caller can forget it.
"""

from __future__ import annotations

from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BASE_NAME = "densenet121"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no network, missing file)."""


IMAGENET_HINT = (
    "Could not get the ImageNet weights for DenseNet121 (Keras downloads them from "
    "storage.googleapis.com, which is not reachable from here{why}). Use one of the other options: "
    "weights='none' (--weights none) to train from scratch, or weights=PATH (--weights PATH) to a local "
    "DenseNet121 weights file such as densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5."
)


def preprocessing_layer():
    """DenseNet's preprocess_input as a layer: (x/255 - mean)/std == (x - 255*mean) / (255*std)."""
    import keras

    return keras.layers.Normalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
        name="densenet_preprocess",
    )


def _base(input_size: int, weights: str | None, include_top: bool = False):
    import keras

    try:
        return keras.applications.DenseNet121(
            include_top=include_top,
            weights=weights,
            input_shape=(input_size, input_size, 3),
            pooling=None,
            name=BASE_NAME,
        )
    except Exception as exc:  # Keras raises plain Exception/URLError/OSError when the fetch fails
        if weights == "imagenet":
            raise WeightsUnavailableError(IMAGENET_HINT.format(why=f": {exc}")) from exc
        raise


def resolve_weights(weights: str | None) -> str | None:
    """Normalise the user's choice: 'imagenet', None ('none'), or an existing local file path."""
    if weights is None or str(weights).lower() in ("none", "", "scratch"):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file not found: {path}. Use weights='imagenet' (needs network) or 'none' (from scratch)."
        )
    return str(path)


def build_model(
    num_classes: int,
    input_size: int = 224,
    weights: str | None = None,
    dropout: float = 0.2,
    base_inference_mode: bool | None = None,
):
    """DenseNet121 with a new classification head.

    With pretrained weights the base is called with `training=False`, so its BatchNorm layers stay in
    inference mode during fine-tuning (the keras-io transfer-learning recipe). From scratch it trains normally.
    """
    import keras

    weights = resolve_weights(weights)
    pretrained = weights is not None if base_inference_mode is None else base_inference_mode
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = preprocessing_layer()(inputs)
    base = _weighted_base(input_size, weights)
    features = base(x, training=False) if pretrained else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    # Softmax in float32 even under mixed precision, so probabilities sum to 1 exactly enough.
    probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(inputs, probs, name="densenet121_classifier")


def _weighted_base(input_size: int, weights: str | None):
    """The DenseNet121 base (no top) with resolved weights: ImageNet, none, or a local weights file."""
    base = _base(input_size, "imagenet" if weights == "imagenet" else None)
    if weights not in (None, "imagenet"):
        base.load_weights(weights, skip_mismatch=False)
    return base


def build_feature_extractor(input_size: int = 224, weights: str | None = None):
    """DenseNet121 without a head: raw pixels -> the globally pooled 1024-d feature.

    The student in distillation (trained from scratch) and the frozen backbone of a linear probe.
    """
    import keras

    weights = resolve_weights(weights)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _weighted_base(input_size, weights)(preprocessing_layer()(inputs))
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name="densenet121_features")


def build_imagenet_model(input_size: int = 224):
    """The stock 1000-class ImageNet DenseNet121 (include_top=True), wrapped to take raw 0..255 pixels."""
    import keras

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = preprocessing_layer()(inputs)
    base = _base(input_size, "imagenet", include_top=True)
    probs = base(x)
    return keras.Model(inputs, probs, name="densenet121_imagenet")


def base_of(model):
    """The nested DenseNet121 base of a classifier built by `build_model`."""
    return model.get_layer(BASE_NAME)
