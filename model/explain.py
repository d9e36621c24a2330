"""Classify and explain in one call: the top-k and a Grad-CAM heatmap over each photo, from one forward pass.

`Explainer` holds a bundle's classifier and its Grad-CAM twin (same weights, same runtime, see model.gradcam).
It loads them on first use, once, whichever thread asks first, and pays for the first calls (ONNX allocations,
TensorFlow traces) before any caller does. The demo's Classify tab is its one user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.gradcam import GradCAM, heatmaps, overlay
from model.images import ImageError, load_thumbnail
from model.predict import TOP_K, Classifier, Prediction, load_classifier

OVERLAY_SIDE = 384  # the heatmap is drawn on a copy of the photo at most this big


class Explainer:
    """Top-k predictions with their Grad-CAM heatmaps for one bundle, loaded lazily."""

    def __init__(self, model_dir: str | os.PathLike, **load_options: Any):
        """`load_options` go to `load_classifier` (runtime, threads, shared_cache_dir, max_pixels)."""
        self.model_dir = Path(model_dir)
        self._options = load_options
        self._lock = threading.Lock()
        self._loaded: tuple[Classifier, GradCAM] | None = None

    def load(self) -> tuple[Classifier, GradCAM]:
        """(Classifier, GradCAM); the first call loads and warms them up (compiles the forward pass)."""
        with self._lock:
            if self._loaded is None:
                clf = load_classifier(self.model_dir, **self._options)
                cam = GradCAM.for_classifier(clf)
                size = clf.input_size
                for n in (1, 2):  # the first calls allocate (ONNX) or trace (TF): pay that before any user does
                    cam(np.zeros((n, size, size, 3), np.float32))
                self._loaded = (clf, cam)
            return self._loaded

    def predict(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, explain: bool = True
                ) -> list[Prediction]:
        """One Prediction per image from a single forward pass; `explain` adds its `heatmap` overlay.

        The probabilities, the unknown score and the heatmaps come out of the same pass of the classifier's
        network; without `explain` nothing is drawn.
        """
        clf, cam = self.load()
        batch, errors = clf.preprocess(images)
        out = clf.forward_outputs(batch)
        predictions = clf.assemble(errors, clf.postprocess(out, top_k))
        if explain and out.maps is not None:
            maps = heatmaps(out.maps, cam.weights, out.probs.argmax(axis=1))
            good = [(source, p) for source, p in zip(images, predictions, strict=True) if p.ok]
            for (source, p), heat in zip(good, maps, strict=True):
                p.heatmap = _overlay(source, heat, clf.max_pixels)
        return predictions


def _overlay(source: str | os.PathLike | bytes, heat: np.ndarray, max_pixels: int) -> np.ndarray | None:
    try:
        return overlay(load_thumbnail(source, OVERLAY_SIDE, max_pixels), heat)
    except ImageError:  # the file changed or vanished since it was classified: no picture, still a label
        return None
