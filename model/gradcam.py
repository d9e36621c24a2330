"""Grad-CAM heatmaps for the DenseNet121 classifier: which pixels drove a label.

Our head is GlobalAveragePooling2D -> Dense ("logits") -> softmax, so the gradient of a class logit with
respect to the last feature map is the same at every position (W[k, c] / (h*w)). Grad-CAM's channel weights
are then exactly the Dense kernel column, and Grad-CAM reduces to the original CAM (Zhou et al. 2016):

    heatmap_c = ReLU(sum_k W[k, c] * A_k)

No gradients are needed, so the feature map and the probabilities come out of ONE forward pass: explaining a
prediction costs no more than making it. Keras layers and `keras.ops` only (no TensorFlow calls), so this
also runs on the JAX backend, and on ONNX Runtime like the classifier itself.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from model.bundle import weights_hash
from model.calibration import softmax
from model.network import BASE_NAME, SERVING_VARIANT, serving_model
from model.runtimes import RUNTIMES, TF, make_forward

PREPROCESS_LAYER = "densenet_preprocess"
LOGITS_LAYER = "logits"


def feature_maps(model, batch):
    """The last DenseNet feature map A (N, h, w, K) for a batch of raw 0..255 RGB images, eagerly."""
    x = model.get_layer(PREPROCESS_LAYER)(batch)
    return model.get_layer(BASE_NAME)(x, training=False)


def class_weights(model) -> np.ndarray:
    """The Dense kernel W (K features x C classes): the CAM channel weights of every class."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(model.get_layer(LOGITS_LAYER).kernel), dtype=np.float32)


def heatmaps(features: np.ndarray, weights: np.ndarray, class_ids: np.ndarray | list[int]) -> np.ndarray:
    """ReLU(sum_k W[k, c] A_k) for class c = class_ids[i] of image i, scaled to 0..1 per image: (N, h, w)."""
    features = np.asarray(features, dtype=np.float32)
    w = weights[:, np.asarray(class_ids, dtype=np.int64)].T  # (N, K)
    cams = np.maximum(np.einsum("nhwk,nk->nhw", features, w), 0.0)
    peak = cams.reshape(len(cams), -1).max(axis=1) if len(cams) else np.zeros(0, np.float32)
    # An all-zero map means no positive evidence anywhere; leave it at zero rather than divide by zero.
    return cams / np.where(peak > 0, peak, 1.0)[:, None, None]


@lru_cache(maxsize=4)
def _lut(colormap: str) -> np.ndarray:
    """The colormap as a 256 x 3 float table: indexing it is ~10x cheaper than calling matplotlib per request."""
    from matplotlib import colormaps

    return (colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a 0..1 heatmap (any h x w) over an RGB uint8 image; returns RGB uint8 of the image's size."""
    from PIL import Image

    height, width = image.shape[:2]
    # Bilinear on the float map: a 2x2 or 7x7 map becomes a smooth blob, not a checkerboard.
    heat = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR)
    colored = _lut(colormap)[(np.clip(np.asarray(heat), 0.0, 1.0) * 255.0).astype(np.uint8)]
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colored
    return np.clip(blended, 0, 255).astype(np.uint8)


class GradCAM:
    """Probabilities and class heatmaps for a batch in one forward pass of a classifier's network.

    `GradCAM.for_classifier` shares the classifier's own forward pass (one network, one ONNX session per
    process: its probabilities are the calibrated ones the classifier gives). Built from a bare Keras model it
    runs the serving network (`model.network.serving_model`) itself, converted once and cached beside the bundle
    on ONNX Runtime.
    """

    def __init__(self, model, *, input_size: int | None = None, model_version: str = "", runtime: str = TF,
                 cache_dir=None, shared_cache_dir=None, threads: int = 0, forward=None):
        """`forward`: a batch function returning (feature maps, probabilities); default: the serving network."""
        self.weights = class_weights(model)
        self.runtime = runtime
        if forward is None:
            size = int(input_size or model.inputs[0].shape[1])
            version = model_version or weights_hash(model)  # names the cached conversion: never shared
            # The classifier's own conversion (same network): one file in the bundle's cache serves both.
            net_forward, self.runtime = make_forward(serving_model(model), size, version, runtime, cache_dir,
                                                     SERVING_VARIANT, shared_cache_dir=shared_cache_dir,
                                                     threads=threads)

            def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                features, logits = net_forward(batch)
                return features, softmax(logits)
        self._forward = forward

    @classmethod
    def for_classifier(cls, classifier) -> GradCAM:
        """The Grad-CAM of a loaded `Classifier`, on the classifier's own forward pass."""
        if not classifier.explainable:
            raise ValueError("this classifier's network has no feature map output to explain")

        def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = classifier.forward_outputs(batch)
            return out.maps, out.probs

        return cls(classifier.model, runtime=classifier.runtime if classifier.runtime in RUNTIMES else TF,
                   forward=forward)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw 0..255 float32 batch (N, H, W, 3) -> (features (N, h, w, K), probabilities (N, C))."""
        if len(batch) == 0:
            return np.zeros((0, 1, 1, self.weights.shape[0]), np.float32), np.zeros((0, self.weights.shape[1]))
        features, probs = self._forward(np.asarray(batch, dtype=np.float32))
        return np.asarray(features), np.asarray(probs)

    def explain(self, batch: np.ndarray, class_ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, C), heatmaps (N, h, w)) for class_ids, or for each image's top class."""
        features, probs = self(batch)
        ids = np.argmax(probs, axis=1) if class_ids is None else np.asarray(class_ids)
        return probs, heatmaps(features, self.weights, ids)
