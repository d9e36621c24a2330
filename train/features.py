"""Pooled features of a frozen backbone: what every head recipe (train.head) fits on.

A bundle's backbone is its `model.keras` up to the `avg_pool` layer, so features of new photos come out exactly
as the classifier computes them when serving (same decoder, same network). `image_features` gives a photo's
features and those of its mirror image (the flip view every head recipe adds); `read_features` and
`write_features` are the bundle's `features.npz` (model.bundle.FEATURES_FILE), what teaching needs of the base
training set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Embed = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[float, str], None]


def bundle_embedder(model) -> Embed:
    """images (N, S, S, 3) uint8 -> pooled features (N, D) float32 of a classifier built by model.network."""
    import keras

    pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    # predict_on_batch runs the compiled graph: several times the throughput of eager calls on the CPU
    return lambda x: np.asarray(pooled.predict_on_batch(np.asarray(x, np.float32)))


def in_batches(embed: Embed, images: np.ndarray, batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """`embed` over `images`, `batch_size` at a time; `progress(n)` after each batch of n."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(embed(images[i:i + batch_size]))
        if progress is not None:
            progress(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def mirrored(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


def image_features(embed: Embed, images: np.ndarray, batch_size: int = 64,
                   progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flipped) pooled features of decoded images: the photo as served, and its mirror image."""
    plain = in_batches(embed, images, batch_size, progress)
    flip = in_batches(embed, mirrored(images), batch_size, progress)
    return plain, flip


def decode_photos(paths: Sequence[Path], size: int) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Decode photos as the classifier does: (images, index of each kept path, [(path, why)] of the unreadable)."""
    from model.images import load_images

    decoded = load_images(list(paths), size)
    kept = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
    bad = [(paths[i], str(d)) for i, d in enumerate(decoded) if isinstance(d, Exception)]
    images = np.stack([decoded[i] for i in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    return images, kept, bad


@dataclass
class BaseFeatures:
    """The base training set of a bundle as features: every row a photo (`flip`: its mirror image, the same
    order), its class index, its source (`<source>__...` file names: grocery, fruits360, taught, ...), its scene
    fold for the cross-validation (-1: never held out, e.g. studio shots) and its weight in the head's loss."""

    features: np.ndarray  # (N, D) float16 on disk
    flip: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,) int
    sources: np.ndarray  # (N,) str
    folds: np.ndarray  # (N,) int, -1: never held out
    weights: np.ndarray  # (N,) float32 per-row loss weight (a row kept of several near-duplicates counts for them)
    extra: dict = field(default_factory=dict)  # anything else the recipe stored (its settings, as strings)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> BaseFeatures:
        return BaseFeatures(self.features[index], self.flip[index], self.labels[index], self.sources[index],
                            self.folds[index], self.weights[index], dict(self.extra))

    @staticmethod
    def concat(parts: Sequence[BaseFeatures]) -> BaseFeatures:
        def cat(name):
            return np.concatenate([getattr(p, name) for p in parts])

        return BaseFeatures(cat("features"), cat("flip"), cat("labels"), cat("sources"), cat("folds"),
                            cat("weights"), dict(parts[0].extra))


def write_features(bundle_dir: str | Path, base: BaseFeatures) -> Path:
    """features.npz: float16 features (compressed), no pickled objects."""
    from model.bundle import FEATURES_FILE

    path = Path(bundle_dir) / FEATURES_FILE
    np.savez_compressed(path, features=base.features.astype(np.float16), flip=base.flip.astype(np.float16),
                        labels=base.labels.astype(np.int32), sources=np.asarray(base.sources, dtype=np.str_),
                        folds=base.folds.astype(np.int32), weights=base.weights.astype(np.float32),
                        **{f"extra_{k}": np.asarray(v) for k, v in base.extra.items()})
    return path


def read_features(bundle_dir: str | Path) -> BaseFeatures | None:
    """The bundle's base training set as features, or None when it has none (it cannot be taught)."""
    from model.bundle import FEATURES_FILE

    path = Path(bundle_dir) / FEATURES_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        extra = {k[len("extra_"):]: data[k] for k in data.files if k.startswith("extra_")}
        return BaseFeatures(data["features"].astype(np.float32), data["flip"].astype(np.float32),
                            data["labels"].astype(np.int64), data["sources"].astype(str),
                            data["folds"].astype(np.int64), data["weights"].astype(np.float32), extra)


def cached(cache_dir: str | Path | None, key: str, compute: Callable[[], dict]) -> dict:
    """`compute()` (a dict of arrays), kept as `cache_dir/<key>.npz` so that the same features are never computed
    twice (a backbone's features of a dataset cost minutes on a CPU); no cache_dir: always computed."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in out.items()})
    tmp.replace(path)
    return out


def split_features(embed: Embed, paths: Sequence[Path], labels: Sequence[int], size: int, *, views: int = 0,
                   min_area: float = 0.25, seed: int = 1337, batch_size: int = 64, mirror: bool = True,
                   desc: str = "features") -> dict:
    """Features of every readable photo of a split: `features` and (with `mirror`) `flip`, its mirror image's,
    `labels`, `paths` (str), and with `views` that many augmented views per photo (train.views: crop, flip,
    colour; the probe's recipe) as `views`, `view_labels` and `view_owner` (row index of the photo each came from).
    A progress bar with its ETA (`desc`) follows the forward passes."""
    from tqdm import tqdm

    images, kept, _ = decode_photos(list(paths), size)
    y = np.asarray(labels)[kept]
    with tqdm(total=(1 + mirror + views) * len(images), desc=desc, unit="img") as bar:
        out = {"labels": y, "paths": np.asarray([str(paths[i]) for i in kept])}
        if mirror:
            out["features"], out["flip"] = image_features(embed, images, batch_size, bar.update)
        else:
            out["features"] = in_batches(embed, images, batch_size, bar.update)
        if views:
            out.update(view_features([paths[i] for i in kept], y, embed, size, views, min_area, seed, batch_size,
                                     bar.update))
    return out


def view_features(paths: Sequence[Path], labels: np.ndarray, embed: Embed, size: int, views: int,
                  min_area: float, seed: int, batch_size: int, progress: Callable[[int], None] | None = None
                  ) -> dict:
    """`views` augmented views of every photo (the distillation's views: a random resized crop, a flip and a
    colour jitter), so that a head also learns from crops, not only whole images."""
    from model.images import load_images
    from train.distill import DEFAULTS as DISTILL_DEFAULTS
    from train.views import ViewPolicy, render_batch, sample_specs

    decoded = load_images(list(paths), DISTILL_DEFAULTS["source_size"])  # the distillation's source size
    kept = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
    sources = np.stack([decoded[i] for i in kept])
    policy = ViewPolicy(min_area=min_area, full_first=False)  # the whole images are in the set already
    specs = sample_specs(len(sources), views, policy, np.random.default_rng(seed))
    image_index = np.repeat(np.arange(len(sources)), views)
    feats = []
    for i in range(0, len(specs), batch_size):
        feats.append(embed(render_batch(sources, image_index[i:i + batch_size], specs[i:i + batch_size], size)))
        if progress is not None:
            progress(len(feats[-1]))
    owner = np.asarray(kept)[image_index]
    return {"views": np.concatenate(feats), "view_labels": np.asarray(labels)[owner], "view_owner": owner}
