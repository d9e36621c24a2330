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


DISTILLED = "distilled"  # the shipped bundle's backbone: DenseNet121 distilled from three ImageNet MobileNets


def resolve_weights(weights: str | None) -> str | None:
    """Normalise the user's choice: 'imagenet', None ('none'), 'distilled' (the shipped fruit model's backbone,
    learned offline from ImageNet teachers: docs/distillation.md), a model bundle folder (its backbone), or an
    existing local weights file. Bundles' backbones are extracted once into a weights file beside the user's
    cache; DenseNet121's convolutions take any input size, so a backbone serves every size."""
    if weights is None or str(weights).lower() in ("none", "", "scratch"):
        return None
    if weights == "imagenet":
        return "imagenet"
    if weights == DISTILLED:
        from model.bundle import SHIPPED_MODEL_DIR

        weights = str(SHIPPED_MODEL_DIR)
    path = Path(weights)
    if path.is_dir() and (path / "model.keras").is_file():
        return str(backbone_of_bundle(path))
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file not found: {path}. Use weights='distilled' (offline, the shipped backbone), "
            "'imagenet' (needs network), 'none' (from scratch), a bundle folder or a weights file."
        )
    return str(path)


def backbone_of_bundle(bundle_dir: Path) -> Path:
    """The DenseNet121 layer's weights of a bundle's model.keras, as a weights file (cached by model_version)."""
    import json
    import os

    version = json.loads((bundle_dir / "config.json").read_text()).get("model_version", "") or "unversioned"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "densenet121-classifier"
    out = cache / f"backbone-{version}.weights.h5"
    if not out.is_file():
        from model.bundle import load_keras_model

        cache.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.weights.h5")  # Keras wants the .weights.h5 ending
        load_keras_model(bundle_dir).get_layer(BASE_NAME).save_weights(tmp)
        os.replace(tmp, out)  # a second process never reads half a file
    return out


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


# Names the serving network's ONNX conversion apart from any earlier single-output one of the same weights.
SERVING_VARIANT = "serve"


def serving_model(model):
    """The network as the core serves it: [last feature map (N, h, w, K), logits (N, C)] from one pass.

    Built from the classifier's own layers (same weights): the logits give calibrated probabilities
    (model.calibration), their pooled mean the unknown score (model.unknown) and, with the head's kernel, the
    Grad-CAM heatmap (model.gradcam). Dropout is skipped: it is the identity at inference. None for a model
    without the `build_model` head (the stock ImageNet network), which is then served as it is.
    """
    import keras

    names = {layer.name for layer in model.layers}
    if not {"densenet_preprocess", BASE_NAME, "avg_pool", "logits"} <= names:
        return None
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    x = model.get_layer("densenet_preprocess")(inputs)
    features = model.get_layer(BASE_NAME)(x, training=False)
    logits = model.get_layer("logits")(model.get_layer("avg_pool")(features))
    return keras.Model(inputs, [features, logits], name="densenet121_serving")
