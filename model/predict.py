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
from model.calibration import softmax
from model.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, load_images
from model.network import SERVING_VARIANT, serving_model
from model.onnx_cache import default_cache_dir
from model.runtimes import AUTO, configure_tf_threads, make_forward, resolve_runtime
from model.unknown import UnknownDetector

IMAGENET = "imagenet"
TOP_K = 5  # labels per prediction
BATCH_SIZE = 32  # images per forward pass
UNCERTAIN_BELOW = 0.5  # a top-1 confidence under this is shown as "not sure" and listed first for review
TTA_MODES = ("none", "flip")  # test-time augmentation: "flip" averages the logits of the photo and its mirror


@dataclass
class Outputs:
    """What one forward pass gives for a batch, post-processed into plain numbers."""

    probs: np.ndarray  # (N, C) calibrated probabilities
    unknown_scores: np.ndarray | None = None  # (N,) higher: less like any known class; None without statistics
    maps: np.ndarray | None = None  # (N, h, w, K) last feature map of the photo as given (Grad-CAM)
    features: np.ndarray | None = None  # (N, K) pooled features (mirror-averaged under flip TTA)
    logits: np.ndarray | None = None  # (N, C) before the temperature (what calibration fits on)


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
                 max_pixels: int = DEFAULT_MAX_PIXELS, unknown: UnknownDetector | None = None):
        """`runtime`: tf | onnx | auto, see model.runtimes, which also explains `cache_dir` (the bundle folder),
        `shared_cache_dir` and `threads`; without a cache folder, `auto` stays on TensorFlow. `max_pixels` is
        the decompression-bomb guard of every decode. The bundle's temperature and TTA mode come from `config`,
        its unknown statistics as `unknown` (None: no unknown flag). A custom `forward_fn` returns
        probabilities and is served as it is (no temperature, TTA or unknown score)."""
        self.model = model
        self.config = config
        self.card = card or {}
        self.labels: list[str] = list(config.labels)
        self.input_size: int = int(config.input_size)
        self.model_version: str = config.model_version or weights_hash(model)
        self.max_pixels = max_pixels
        self.runtime = "custom"
        # Where runtime conversions of this model (and of its Grad-CAM twin) are kept, and on how many threads.
        self.cache_dir, self.shared_cache_dir, self.threads = cache_dir, shared_cache_dir, threads
        self.temperature = float(config.temperature)
        self.tta = config.tta
        if self.tta not in TTA_MODES:
            raise ValueError(f"unknown tta {self.tta!r} in the bundle config: use one of {', '.join(TTA_MODES)}")
        self.unknown = unknown
        # One network serves everything: [feature map, logits] from one pass (model.network.serving_model).
        net = serving_model(model) if forward_fn is None else None
        self.explainable = net is not None
        if forward_fn is None:
            forward_fn, self.runtime = make_forward(net if net is not None else model, self.input_size,
                                                    self.model_version, runtime, cache_dir,
                                                    SERVING_VARIANT if net is not None else "",
                                                    shared_cache_dir=shared_cache_dir, threads=threads)
        elif unknown is not None:
            raise ValueError("a custom forward_fn gives probabilities only: it cannot carry an unknown score")
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

    def forward_outputs(self, batch: np.ndarray) -> Outputs:
        """The network on a batch (the only step that touches the framework), then the plain-number steps:
        the TTA average, the temperature and the unknown score."""
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return Outputs(np.zeros((0, len(self.labels)), np.float32),
                           np.zeros(0, np.float32) if self.unknown else None)
        if not self.explainable:
            return Outputs(np.asarray(self._forward(batch), np.float32))
        maps, logits = self._forward(batch)
        features = maps.mean(axis=(1, 2))  # what the head's GlobalAveragePooling2D computed
        if self.tta == "flip":
            mirror_maps, mirror_logits = self._forward(np.ascontiguousarray(batch[:, :, ::-1]))
            logits = (logits + mirror_logits) / 2
            features = (features + mirror_maps.mean(axis=(1, 2))) / 2
        scores = self.unknown.score(features) if self.unknown is not None else None
        return Outputs(softmax(logits, self.temperature), scores, maps, features, logits)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, C) of a preprocessed batch."""
        return self.forward_outputs(batch).probs

    def postprocess(self, outputs: Outputs | np.ndarray, top_k: int = TOP_K) -> list[dict]:
        """Per image: its top-k (label, confidence) pairs and the unknown verdict."""
        out = outputs if isinstance(outputs, Outputs) else Outputs(np.asarray(outputs))
        k = max(1, min(int(top_k), len(self.labels)))  # clamp like transformers does
        order = np.argsort(-out.probs, axis=1, kind="stable")[:, :k]
        scores = out.unknown_scores
        flags = self.unknown.is_unknown(scores) if scores is not None else np.zeros(len(order), bool)
        return [{"top_k": [(self.labels[i], float(row[i])) for i in idx], "unknown": bool(flag),
                 "unknown_score": None if scores is None else float(scores[n])}
                for n, (row, idx, flag) in enumerate(zip(out.probs, order, flags, strict=True))]

    def assemble(self, errors: Sequence[str | None], results: Iterable[dict]) -> list[Prediction]:
        """One Prediction per input, in order: its decoding error, or the next of the good images' results."""
        results = iter(results)
        return [Prediction(error=err, model_version=self.model_version) if err
                else Prediction(**next(results), model_version=self.model_version) for err in errors]

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
        return self.assemble(errors, self.postprocess(self.forward_outputs(batch), top_k))


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
    resolve_runtime(runtime)  # a bad name or a missing package fails here, before seconds of model loading
    configure_tf_threads(threads)  # before Keras starts TensorFlow's thread pools
    options = dict(runtime=runtime, threads=threads, max_pixels=max_pixels)
    if str(source) == IMAGENET:
        from model.network import build_imagenet_model

        model = build_imagenet_model(input_size)
        config = BundleConfig(labels=imagenet_labels(), input_size=input_size, weights=IMAGENET)
        # No bundle folder: the conversion lives in the shared cache, beside other bundles' (none is removed).
        return Classifier(model, config, card={"dataset": "ImageNet-1k (stock Keras weights)"},
                          shared_cache_dir=default_cache_dir(shared_cache_dir), **options)
    config = BundleConfig.read(source)
    model = load_keras_model(source)
    return Classifier(model, config, card=read_card(source), cache_dir=source, shared_cache_dir=shared_cache_dir,
                      unknown=UnknownDetector.load(source), **options)
