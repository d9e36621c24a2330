"""A saved model is a folder (a "bundle") that describes itself:

    model.keras   the Keras model (weights + architecture, loadable in safe mode)
    config.json   ordered labels, input size, model_version, weights source, temperature, TTA mode
    unknown.npz   optional: the statistics of the unknown score (model.unknown); without it, no unknown flag
    features.npz  optional: the base training set's pooled features (train.features), what teaching needs
                  (python -m train.teach); without it the bundle cannot be taught
    card.json     the model card: dataset, classes and counts, epochs, metrics, date

`model_version` is a content hash of the weights, so two bundles with the same version give the same
predictions, and every stored prediction can be traced to the exact weights that made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "fruits-densenet121"  # package data: the fruit model
CONFIG_FILE = "config.json"
CARD_FILE = "card.json"
FEATURES_FILE = "features.npz"


@dataclass
class BundleConfig:
    labels: list[str]
    input_size: int
    model_version: str = ""
    architecture: str = "DenseNet121"
    weights: str = "none"  # what the network started from: imagenet, none, or a file name
    temperature: float = 1.0  # logits / temperature before the softmax (model.calibration); 1.0: uncalibrated
    tta: str = "none"  # test-time augmentation applied by the core: none | flip
    parent_version: str = ""  # the model_version this one was taught from (python -m train.teach); "": a root model
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, bundle_dir: str | Path) -> BundleConfig:
        path = Path(bundle_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"not a model bundle (no {CONFIG_FILE}): {bundle_dir}")
        data = json.loads(path.read_text())
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__}
        return cls(**known)

    def write(self, bundle_dir: str | Path) -> None:
        (Path(bundle_dir) / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (teachers in a card, ONNX conversions in the cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(model) -> str:
    """sha256 over every weight array (order, shape, dtype and bytes); the first 12 hex digits."""
    import numpy as np

    digest = hashlib.sha256()
    for w in model.weights:
        arr = np.ascontiguousarray(np.asarray(w))
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:12]


def serving_version(weights_version: str, temperature: float, tta: str, unknown_file: str | Path | None) -> str:
    """The model_version of a bundle whose answers also depend on its temperature, TTA mode and unknown
    statistics: recalibrating the same weights is a new version, so no stored result is reused across it."""
    if temperature == 1.0 and tta == "none" and unknown_file is None:
        return weights_version
    stats = file_sha256(unknown_file) if unknown_file is not None else "-"
    return hashlib.sha256(f"{weights_version}|{temperature!r}|{tta}|{stats}".encode()).hexdigest()[:12]


def save_bundle(model, bundle_dir: str | Path, config: BundleConfig, card: dict | None = None) -> BundleConfig:
    """Write the model, its config (with a fresh model_version) and its card; returns the config."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    n_out = int(model.outputs[0].shape[-1])
    if n_out != len(config.labels):
        raise ValueError(f"model has {n_out} outputs but {len(config.labels)} labels were given")
    model.save(bundle_dir / MODEL_FILE)
    config.model_version = weights_hash(model)
    config.write(bundle_dir)
    if card is not None:
        card = {**card, "model_version": config.model_version}
        (bundle_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return config


def read_card(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_keras_model(bundle_dir: str | Path):
    """Load model.keras in Keras safe mode: a bundle can never execute arbitrary code (no Lambda layers)."""
    import keras

    path = Path(bundle_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model bundle has no {MODEL_FILE}: {bundle_dir}")
    return keras.saving.load_model(path, compile=False, safe_mode=True)
