"""Classify and explain in one call: the top-k and a Grad-CAM heatmap over each photo, from one forward pass.

`Explainer` holds a bundle's classifier and its Grad-CAM (model.gradcam), which runs on the classifier's own
serving network: the probabilities, the unknown score and the feature map behind the heatmap come out of one pass.
It loads on first use, once, whichever thread asks first, and pays for the first calls (ONNX allocations,
TensorFlow traces) before any caller does. Each photo is decoded once: the model's input and the copy shown (the
heatmap's photo, a thumbnail) come from the same decode. The demo's Classify and Upload tabs are its users.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.gradcam import GradCAM, heatmaps, overlay
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
        if explain and clf.explainable:
            batch, errors, shown = clf.preprocess_for_display(images, OVERLAY_SIDE)
        else:
            (batch, errors), shown = clf.preprocess(images), []
        out = clf.forward_outputs(batch)
        predictions = clf.assemble(errors, clf.postprocess(out, top_k))
        if shown and out.maps is not None:
            maps = heatmaps(out.maps, cam.weights, out.probs.argmax(axis=1))
            for p, photo, heat in zip([p for p in predictions if p.ok], shown, maps, strict=True):
                p.heatmap = overlay(photo, heat)
        return predictions

    def classify(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, thumbnail_side: int = 64
                 ) -> list[tuple[Prediction, np.ndarray | None]]:
        """(Prediction, thumbnail) per image from one forward pass, no heatmap: the thumbnail (None for an
        unusable image) comes from the decode the model's input came from."""
        clf, _ = self.load()
        batch, errors, shown = clf.preprocess_for_display(images, thumbnail_side)
        predictions = clf.assemble(errors, clf.postprocess(clf.forward_outputs(batch), top_k))
        thumbs = iter(shown)
        return [(p, next(thumbs) if p.ok else None) for p in predictions]
