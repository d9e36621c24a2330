"""Classify and explain in one call: the top-k and a Grad-CAM heatmap over each photo, from one forward pass.

`Explainer` holds a bundle's Grad-CAM network (model.gradcam) and a classifier that runs on it: the two-output
network gives the classifier's very probabilities, so one network session (one ONNX conversion, one set of
buffers) serves the plain predictions and the explained ones. It loads on first use, once, whichever thread asks
first, and pays for the first calls (ONNX allocations, TensorFlow traces) before any caller does. Each photo is
decoded once: the model's input and the copy the heatmap is drawn on come from the same decode. The demo is its
one user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.gradcam import GradCAM, overlay
from model.images import DEFAULT_MAX_PIXELS
from model.predict import TOP_K, Classifier, Prediction, open_bundle
from model.runtimes import AUTO

OVERLAY_SIDE = 384  # the heatmap is drawn on a copy of the photo at most this big


class Explainer:
    """Top-k predictions with their Grad-CAM heatmaps for one bundle, loaded lazily."""

    def __init__(self, model_dir: str | os.PathLike, *, runtime: str = AUTO, threads: int = 0,
                 shared_cache_dir: str | os.PathLike | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        """The options are `load_classifier`'s (how the network runs, the largest image decoded)."""
        self.model_dir = Path(model_dir)
        self._options: dict[str, Any] = dict(runtime=runtime, threads=threads, shared_cache_dir=shared_cache_dir,
                                             max_pixels=max_pixels)
        self._lock = threading.Lock()
        self._loaded: tuple[Classifier, GradCAM] | None = None

    def load(self) -> tuple[Classifier, GradCAM]:
        """(Classifier, GradCAM) on one network; the first call loads and warms it up (compiles the forward)."""
        with self._lock:
            if self._loaded is None:
                o = self._options
                model, config, card = open_bundle(self.model_dir, o["runtime"], o["threads"])
                cam = GradCAM(model, input_size=config.input_size, model_version=config.model_version,
                              runtime=o["runtime"], cache_dir=self.model_dir,
                              shared_cache_dir=o["shared_cache_dir"], threads=o["threads"])
                clf = Classifier(model, config, card, forward_fn=cam.probabilities, runtime=cam.runtime,
                                 cache_dir=self.model_dir, shared_cache_dir=o["shared_cache_dir"],
                                 threads=o["threads"], max_pixels=o["max_pixels"])
                for n in (1, 2):  # the first calls allocate (ONNX) or trace (TF): pay that before any user does
                    cam(np.zeros((n, config.input_size, config.input_size, 3), np.float32))
                self._loaded = (clf, cam)
            return self._loaded

    def predict(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, explain: bool = True
                ) -> list[Prediction]:
        """One Prediction per image from a single forward pass; `explain` adds its `heatmap` overlay."""
        clf, cam = self.load()
        if not explain:
            batch, errors = clf.preprocess(images)
            return clf.assemble(errors, clf.postprocess(clf.forward(batch), top_k))
        batch, errors, shown = clf.preprocess_for_display(images, OVERLAY_SIDE)
        probs, maps = cam.explain(batch)
        predictions = clf.assemble(errors, clf.postprocess(probs, top_k))
        for p, photo, heat in zip([p for p in predictions if p.ok], shown, maps, strict=True):
            p.heatmap = overlay(photo, heat)
        return predictions

    def classify(self, images: Sequence[str | os.PathLike | bytes], top_k: int = TOP_K, thumbnail_side: int = 64
                 ) -> list[tuple[Prediction, np.ndarray | None]]:
        """(Prediction, thumbnail) per image from one forward pass, no heatmap: the thumbnail (None for an
        unusable image) comes from the decode the model's input came from."""
        clf, _ = self.load()
        batch, errors, shown = clf.preprocess_for_display(images, thumbnail_side)
        predictions = clf.assemble(errors, clf.postprocess(clf.forward(batch), top_k))
        thumbs = iter(shown)
        return [(p, next(thumbs) if p.ok else None) for p in predictions]
