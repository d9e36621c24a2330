"""The one prediction API, used by the demo, the workers and evaluation alike.

Reads like a `transformers` pipeline: inputs are checked, `preprocess` decodes and resizes (model.images),
`forward` runs the network on a batch (the only step that touches the framework) and `postprocess`
turns probabilities into plain (label, confidence) lists. Every step takes batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.bundle import SHIPPED_MODEL_DIR, BundleConfig, load_keras_model, read_card, weights_hash
from model.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, load_images
from model.onnx_cache import default_cache_dir
from model.runtimes import AUTO, RUNTIMES, configure_tf_threads, make_forward, resolve_runtime

IMAGENET = "imagenet"
TOP_K = 5  # labels per prediction
BATCH_SIZE = 32  # images per forward pass
UNCERTAIN_BELOW = 0.5  # a top-1 confidence under this is shown as "not sure" and listed first for review


@dataclass
class Prediction:
    """One image's result: top-k (label, confidence) pairs, or the error that stopped it."""

    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    model_version: str = ""
    heatmap: np.ndarray | None = None  # from `model.explain`: the Grad-CAM heatmap drawn over the photo
    # "Not one of the classes I know" (model.unknown): the top-k labels are still given. The score is None, and
    # `unknown` False, for a bundle without unknown statistics.
    unknown: bool = False
    unknown_score: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        return self.top_k[0][0] if self.top_k else None

    @property
    def confidence(self) -> float | None:
        return self.top_k[0][1] if self.top_k else None


class Classifier:
    def __init__(self, model, config: BundleConfig, card: dict | None = None, forward_fn=None,
                 runtime: str = AUTO, cache_dir: str | os.PathLike | None = None, *,
                 shared_cache_dir: str | os.PathLike | None = None, threads: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        """`runtime`: tf | onnx | auto, see model.runtimes, which also explains `cache_dir` (the bundle folder),
        `shared_cache_dir` and `threads`; without a cache folder, `auto` stays on TensorFlow. With `forward_fn`
        (a batch function that runs the network some other way) `runtime` only names where it runs ("custom"
        unless tf or onnx). `max_pixels` is the decompression-bomb guard of every decode."""
        self.model = model
        self.config = config
        self.card = card or {}
        self.labels: list[str] = list(config.labels)
        self.input_size: int = int(config.input_size)
        self.model_version: str = config.model_version or weights_hash(model)
        self.max_pixels = max_pixels
        self.runtime = runtime if runtime in RUNTIMES else "custom"
        # Where runtime conversions of this model (and of its Grad-CAM twin) are kept, and on how many threads.
        self.cache_dir, self.shared_cache_dir, self.threads = cache_dir, shared_cache_dir, threads
        if forward_fn is None:
            forward_fn, self.runtime = make_forward(model, self.input_size, self.model_version, runtime, cache_dir,
                                                    shared_cache_dir=shared_cache_dir, threads=threads)
        self._forward = forward_fn

    # -- the three steps -------------------------------------------------------------------------
    def preprocess(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, list[str | None]]:
        """Decode in parallel; returns the batch of the good images and a per-input error (or None)."""
        decoded = load_images(images, self.input_size, self.max_pixels)
        return self._batch([d for d in decoded if not isinstance(d, ImageError)]), _errors(decoded)

    def preprocess_for_display(self, images: Sequence[ImageInput], display_side: int
                               ) -> tuple[np.ndarray, list[str | None], list[np.ndarray]]:
        """`preprocess`, and a copy of each good image for display from the same decode (a page shows the photo
        it classified without decoding it again; see `model.images.load_image_for_display`)."""
        decoded = load_images(images, self.input_size, self.max_pixels, display_side)
        good = [d for d in decoded if not isinstance(d, ImageError)]
        return self._batch([g[0] for g in good]), _errors(decoded), [g[1] for g in good]

    def _batch(self, arrays: list[np.ndarray]) -> np.ndarray:
        if arrays:
            return np.stack(arrays).astype(np.float32)
        return np.zeros((0, self.input_size, self.input_size, 3), np.float32)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self._forward(np.asarray(batch, dtype=np.float32))

    def postprocess(self, probs: np.ndarray, top_k: int = TOP_K) -> list[list[tuple[str, float]]]:
        k = max(1, min(int(top_k), len(self.labels)))  # clamp like transformers does
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[i], float(row[i])) for i in idx] for row, idx in zip(probs, order, strict=False)]

    def assemble(self, errors: Sequence[str | None], ranked: Iterable[list[tuple[str, float]]]) -> list[Prediction]:
        """One Prediction per input, in order: its decoding error, or the next of the good images' results."""
        results = iter(ranked)
        return [Prediction(error=err, model_version=self.model_version) if err
                else Prediction(top_k=next(results), model_version=self.model_version) for err in errors]

    # -- public API --------------------------------------------------------------------------------
    def predict(self, images: Sequence[ImageInput], top_k: int = TOP_K, batch_size: int = BATCH_SIZE
                ) -> list[Prediction]:
        """Classify a list of images (paths, bytes, arrays or PIL images); one `Prediction` per input."""
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        ):
            images = [images]
        return list(self.iter_predict(list(images), top_k=top_k, batch_size=batch_size))

    __call__ = predict

    def iter_predict(
        self, images: Iterable[ImageInput], top_k: int = TOP_K, batch_size: int = BATCH_SIZE
    ) -> Iterator[Prediction]:
        """Stream predictions, decoding batch i+1 in a thread while the network runs on batch i."""
        chunks = _chunks(images, batch_size)
        if isinstance(images, Sequence) and len(images) <= batch_size:  # one batch: nothing to overlap
            for chunk in chunks:
                yield from self._finish(*self.preprocess(chunk), top_k)
            return
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            pending = None
            for chunk in chunks:
                nxt = prefetch.submit(self.preprocess, chunk)
                if pending is not None:
                    yield from self._finish(*pending.result(), top_k)
                pending = nxt
            if pending is not None:
                yield from self._finish(*pending.result(), top_k)

    def predict_probs(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Full probability vectors for images that must all be valid (raises ImageError otherwise)."""
        batch, errors = self.preprocess(images)
        for err in errors:
            if err:
                raise ImageError(err)
        return self.forward(batch)

    def _finish(self, batch: np.ndarray, errors: list[str | None], top_k: int) -> list[Prediction]:
        return self.assemble(errors, self.postprocess(self.forward(batch), top_k))


def _errors(decoded: Sequence) -> list[str | None]:
    return [str(d) if isinstance(d, ImageError) else None for d in decoded]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def imagenet_labels() -> list[str]:
    """Human-readable names of the 1000 ImageNet classes, fetched (and cached) by Keras like the weights."""
    import keras
    from keras.src.applications.imagenet_utils import CLASS_INDEX_PATH

    from model.network import IMAGENET_HINT, WeightsUnavailableError

    try:
        path = keras.utils.get_file("imagenet_class_index.json", CLASS_INDEX_PATH, cache_subdir="models")
    except Exception as exc:
        raise WeightsUnavailableError(IMAGENET_HINT.format(why=f": {exc}")) from exc
    data = json.loads(Path(path).read_text())
    return [data[str(i)][1] for i in range(1000)]


def load_classifier(source: str | os.PathLike = SHIPPED_MODEL_DIR, input_size: int = 224, runtime: str = AUTO, *,
                    threads: int = 0, shared_cache_dir: str | os.PathLike | None = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Classifier:
    """Load a bundle folder (default: the shipped fruit model), or the stock ImageNet DenseNet121 with
    source='imagenet'.

    Loading never executes code from the file (Keras safe mode). The first call imports Keras. `runtime`,
    `threads` and `shared_cache_dir` choose how it runs (see model.runtimes; an ONNX conversion is cached beside
    the bundle), `max_pixels` the largest image it decodes. Entry points take them from settings.
    """
    options = dict(runtime=runtime, threads=threads, max_pixels=max_pixels)
    if str(source) == IMAGENET:
        prepare_runtime(runtime, threads)
        from model.network import build_imagenet_model

        model = build_imagenet_model(input_size)
        config = BundleConfig(labels=imagenet_labels(), input_size=input_size, weights=IMAGENET)
        # No bundle folder: the conversion lives in the shared cache, beside other bundles' (none is removed).
        return Classifier(model, config, card={"dataset": "ImageNet-1k (stock Keras weights)"},
                          shared_cache_dir=default_cache_dir(shared_cache_dir), **options)
    model, config, card = open_bundle(source, runtime, threads)
    return Classifier(model, config, card=card, cache_dir=source, shared_cache_dir=shared_cache_dir, **options)


def prepare_runtime(runtime: str = AUTO, threads: int = 0) -> None:
    """What comes before any model loads: a bad runtime name or a missing package fails here, before seconds of
    loading, and the thread count reaches TensorFlow before Keras starts its thread pools."""
    resolve_runtime(runtime)
    configure_tf_threads(threads)


def open_bundle(source: str | os.PathLike, runtime: str = AUTO, threads: int = 0) -> tuple[object, BundleConfig, dict]:
    """(Keras model, config, card) of a bundle folder, after `prepare_runtime`: what a `Classifier` is made of."""
    prepare_runtime(runtime, threads)
    config = BundleConfig.read(source)  # "not a model bundle" before seconds of loading
    return load_keras_model(source), config, read_card(source)
