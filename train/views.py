"""Augmented views for distillation: one random crop, rendered twice, for the teacher and for the student.

"A good teacher is patient and consistent" (Beyer et al., CVPR 2022): the student must be taught on exactly
the image the teacher saw. A view is a crop box, a flip and a colour jitter on a decoded source image; the
same view is rendered at the teacher's size (224 px) and at the student's (e.g. 64 px) with Pillow's
bilinear resize, the same resampling that `model.images.load_image` uses when serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Columns of a view spec: crop box (fractions of the source), horizontal flip, and the colour jitter.
Y0, X0, Y1, X1, FLIP, BRIGHTNESS, CONTRAST, SATURATION = range(8)
SPEC_WIDTH = 8


@dataclass(frozen=True)
class ViewPolicy:
    min_area: float = 0.25  # random resized crop: fraction of the image area kept
    max_aspect: float = 4 / 3
    jitter: float = 0.2  # brightness / contrast / saturation amplitude
    full_first: bool = True  # view 0 of every image is the whole image, as the model sees it when serving


def sample_specs(n_images: int, views: int, policy: ViewPolicy, rng: np.random.Generator) -> np.ndarray:
    """(n_images * views, 8) float32 specs, image-major: row i * views + v is view v of image i."""
    n = n_images * views
    area = rng.uniform(policy.min_area, 1.0, n)
    aspect = np.exp(rng.uniform(-np.log(policy.max_aspect), np.log(policy.max_aspect), n))
    h = np.minimum(np.sqrt(area / aspect), 1.0)
    w = np.minimum(np.sqrt(area * aspect), 1.0)
    y0, x0 = rng.uniform(0, 1, n) * (1 - h), rng.uniform(0, 1, n) * (1 - w)
    spec = np.zeros((n, SPEC_WIDTH), np.float32)
    spec[:, Y0], spec[:, X0], spec[:, Y1], spec[:, X1] = y0, x0, y0 + h, x0 + w
    spec[:, FLIP] = rng.random(n) < 0.5
    for col in (BRIGHTNESS, CONTRAST, SATURATION):
        spec[:, col] = rng.uniform(-policy.jitter, policy.jitter, n)
    if policy.full_first:
        first = np.arange(n_images) * views
        spec[first, Y0:X1 + 1] = (0, 0, 1, 1)
        spec[first, BRIGHTNESS:] = 0
    return spec


def render(source: np.ndarray, spec: np.ndarray, size: int) -> np.ndarray:
    """One view of a uint8 HxWx3 source as a uint8 size x size x 3 image."""
    height, width = source.shape[:2]
    box = (spec[X0] * width, spec[Y0] * height, spec[X1] * width, spec[Y1] * height)
    image = np.asarray(Image.fromarray(source).resize((size, size), Image.BILINEAR, box=box), np.float32)
    if spec[FLIP]:
        image = image[:, ::-1]
    grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
    image = grey[..., None] + (image - grey[..., None]) * (1 + spec[SATURATION])
    image = (image - grey.mean()) * (1 + spec[CONTRAST]) + grey.mean()
    image = image + 255 * spec[BRIGHTNESS] / 2
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_batch(sources: np.ndarray, image_index: np.ndarray, specs: np.ndarray, size: int) -> np.ndarray:
    return np.stack([render(sources[i], s, size) for i, s in zip(image_index, specs, strict=True)])
