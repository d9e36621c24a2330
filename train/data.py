"""Folder-per-class datasets: scanning, splitting, decoding and the tf.data input pipeline.

Layouts understood: `DIR/train/<class>/*` + `DIR/val/<class>/*`, or `DIR/<class>/*` split by a fraction
(stratified, seeded). Decoding goes through `model.images.load_image`, the same code that serves
predictions, so training and serving see identical pixels.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.images import load_images, scan_folder


@dataclass
class Split:
    paths: list[Path]
    labels: list[int]  # index into the dataset's class list

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, classes: list[str]) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(classes)}


def class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_files(folder: Path, classes: list[str]) -> Split:
    """Every image of each class folder, listed as the workers list a job (hidden files and folders such as
    .ipynb_checkpoints skipped)."""
    paths, labels = [], []
    for idx, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            continue
        images = scan_folder(d, recursive=True).images
        paths += images
        labels += [idx] * len(images)
    return Split(paths, labels)


def stratified_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    rng = random.Random(seed)
    train, val = Split([], []), Split([], [])
    by_class: dict[int, list[Path]] = {}
    for p, y in zip(split.paths, split.labels, strict=False):
        by_class.setdefault(y, []).append(p)
    for y, files in sorted(by_class.items()):
        files = files[:]
        rng.shuffle(files)
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        for i, p in enumerate(files):
            target = val if i < n_val else train
            target.paths.append(p)
            target.labels.append(y)
    return train, val


def scan_dataset(data_dir: str | Path, val_fraction: float = 0.2, seed: int = 1337) -> tuple[list[str], Split, Split]:
    """Returns (classes, train split, val split) for either supported layout."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if (root / "train").is_dir():
        classes = [d.name for d in class_dirs(root / "train")]
        train = list_files(root / "train", classes)
        val_dir = root / "val" if (root / "val").is_dir() else root / "validation"
        if val_dir.is_dir():
            val = list_files(val_dir, classes)
        else:
            train, val = stratified_split(train, val_fraction, seed)
    else:
        classes = [d.name for d in class_dirs(root)]
        train, val = stratified_split(list_files(root, classes), val_fraction, seed)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 class folders in {root}, found {len(classes)}")
    if len(train) == 0:
        raise ValueError(f"no images found under {root}")
    return classes, train, val


def decode_split(split: Split, size: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode every image once (threads in parallel); unreadable files are reported and skipped."""
    from tqdm import tqdm

    arrays, labels, kept = [], [], []
    step = 256
    with tqdm(total=len(split), desc=f"decode@{size}px", unit="img", leave=False) as bar:
        for start in range(0, len(split), step):
            batch_paths = split.paths[start : start + step]
            decoded = load_images(batch_paths, size)
            for path, y, arr in zip(batch_paths, split.labels[start : start + step], decoded, strict=True):
                if isinstance(arr, Exception):
                    print(f"skipping {path}: {arr}")
                    continue
                arrays.append(arr)
                labels.append(y)
                kept.append(path)
            bar.update(len(batch_paths))
    x = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return x, np.asarray(labels, np.int32), kept


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "sqrt") -> np.ndarray:
    """Per-class loss weights against imbalance: 'balanced' (n / (k * count)), 'sqrt' (its square root), 'none'."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "none":
        return np.ones(num_classes, np.float32)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    if mode == "sqrt":
        w = np.sqrt(w)
    elif mode != "balanced":
        raise ValueError(f"unknown class weight mode {mode!r} (balanced, sqrt, none)")
    w[present] /= (w[present] * counts[present]).sum() / counts[present].sum()  # mean weight per sample = 1
    return w.astype(np.float32)


def augment_fn(size: int, strength: float = 1.0):
    """Random resized crop, flips, small rotations via crop boxes, and colour jitter, as one tf.data map."""
    import tensorflow as tf

    def augment(image, label, weight):
        image = tf.cast(image, tf.float32)
        # Random resized crop: scale 35-100% of the area, aspect 3/4..4/3 (as in Inception / timm).
        area = tf.random.uniform([], 0.35, 1.0)
        log_ratio = tf.random.uniform([], tf.math.log(3 / 4), tf.math.log(4 / 3))
        ratio = tf.exp(log_ratio)
        h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        y0 = tf.random.uniform([], 0.0, 1.0 - h + 1e-6)
        x0 = tf.random.uniform([], 0.0, 1.0 - w + 1e-6)
        box = tf.stack([y0, x0, y0 + h, x0 + w])[None]
        image = tf.image.crop_and_resize(image[None], box, [0], [size, size])[0]
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_flip_up_down(image)  # produce is seen from any side
        image = image / 255.0
        image = tf.image.random_brightness(image, 0.25 * strength)
        image = tf.image.random_contrast(image, 1 - 0.3 * strength, 1 + 0.3 * strength)
        image = tf.image.random_saturation(image, 1 - 0.4 * strength, 1 + 0.4 * strength)
        image = tf.image.random_hue(image, 0.04 * strength)
        image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
        return image, label, weight

    return augment


def make_train_dataset(x: np.ndarray, y_onehot: np.ndarray, weights: np.ndarray, batch_size: int, seed: int):
    """tf.data: in-memory cache of decoded images -> shuffle -> parallel augmentation -> batch -> prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y_onehot, weights)).cache()
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(augment_fn(x.shape[1]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size, drop_remainder=len(x) > batch_size).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(x: np.ndarray, y_onehot: np.ndarray, batch_size: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y_onehot))
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
