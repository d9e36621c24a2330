"""Image loading for real files: orientation, colour modes, and a clear error for every kind of bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.images import ImageError, image_size, load_image, load_image_for_display, load_images, load_thumbnail
from tests.helpers.images import random_rgb


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# A known picture: four flat 20x20 quadrants (top-left, top-right, bottom-left, bottom-right), 40x40 in all.
QUADRANTS = [(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 60, 220)]


def _quadrants(values: list) -> np.ndarray:
    top = np.concatenate([np.full((20, 20, *np.shape(v)), v) for v in values[:2]], axis=1)
    bottom = np.concatenate([np.full((20, 20, *np.shape(v)), v) for v in values[2:]], axis=1)
    return np.concatenate([top, bottom], axis=0)


def _luma(rgb: tuple[int, int, int]) -> int:
    """ITU-R 601 luma, what a greyscale file of that colour holds."""
    return round((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000)


def _known_picture(mode: str) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """The picture in `mode`, and the RGB each quadrant must come back as."""
    rgb = Image.fromarray(_quadrants(QUADRANTS).astype(np.uint8))
    greys = [_luma(c) for c in QUADRANTS]
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), QUADRANTS
    if mode in ("RGBA", "CMYK"):
        return rgb.convert(mode), QUADRANTS  # RGBA opaque
    if mode in ("L", "LA"):
        return rgb.convert(mode), [(g, g, g) for g in greys]
    if mode == "1":  # black and white only: any other colour would be dithered
        return Image.fromarray(_quadrants([0, 255, 255, 0]).astype(np.uint8)).convert("1"), \
            [(0, 0, 0), (255, 255, 255), (255, 255, 255), (0, 0, 0)]
    assert mode == "I;16"  # 16-bit grey: its range is stretched onto 0..255
    raw = Image.fromarray(_quadrants([0, 1000, 3000, 4000]).astype(np.uint16))
    return raw, [(v, v, v) for v in (0, 64, 191, 255)]


@pytest.mark.parametrize(
    "mode,fmt",
    [("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("1", "BMP")],
)
def test_any_mode_becomes_the_same_rgb_picture(mode, fmt):
    img, expected = _known_picture(mode)
    assert img.mode == mode
    arr = load_image(_save(img, fmt, **({"quality": 95} if fmt == "JPEG" else {})), size=16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    # Each quadrant's inside (away from the edges a bilinear resize blends), in its place: not a crop, not a flip.
    tolerance = 6 if fmt == "JPEG" else 1
    for (rows, cols), colour in zip([(slice(1, 7), slice(1, 7)), (slice(1, 7), slice(9, 15)),
                                     (slice(9, 15), slice(1, 7)), (slice(9, 15), slice(9, 15))], expected,
                                    strict=True):
        got = arr[rows, cols].reshape(-1, 3)
        assert np.abs(got.astype(int) - colour).max() <= tolerance, (mode, colour, got.min(0), got.max(0))


def test_a_big_jpeg_at_model_size_is_the_same_picture(tmp_path):
    """A 1600x1600 JPEG may be decoded at reduced scale for a 64 px model input: the picture must survive."""
    big = np.kron(_quadrants(QUADRANTS), np.ones((40, 40, 1))).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    arr = load_image(tmp_path / "big.jpg", size=64)
    assert arr.shape == (64, 64, 3)
    for (rows, cols), colour in zip([(slice(4, 28), slice(4, 28)), (slice(4, 28), slice(36, 60)),
                                     (slice(36, 60), slice(4, 28)), (slice(36, 60), slice(36, 60))], QUADRANTS,
                                    strict=True):
        got = arr[rows, cols].reshape(-1, 3)
        assert np.abs(got.astype(int) - colour).max() <= 8, (colour, got.min(0), got.max(0))


def test_sixteen_bit_keeps_its_range():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    arr = load_image(_save(Image.fromarray(ramp), "PNG"))  # uint16 array -> mode I;16
    assert arr.min() == 0 and arr.max() == 255  # scaled, not clipped to white


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    arr = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (arr == 255).all()


def test_exif_orientation_is_applied():
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # white band at the top of a tall image
    img = Image.fromarray(tall)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    arr = load_image(_save(img, "JPEG", exif=exif, quality=95))
    assert arr.shape[:2] == (20, 40)  # displayed landscape
    assert arr[:, -10:].mean() > 200  # the band ends up on the right after the 90 degree turn


def test_resize_matches_pillow_bilinear():
    src = random_rgb(3, (50, 30))
    expected = np.asarray(Image.fromarray(src).resize((24, 24), Image.BILINEAR))
    np.testing.assert_array_equal(load_image(src, size=24), expected)


@pytest.mark.parametrize("kind,words", [
    ("empty", "empty file"),
    ("not_an_image", "not an image"),
    ("truncated", "truncated"),
    ("corrupt", "corrupt"),
    ("too_large", "too large"),
])
def test_bad_files_give_a_clear_error(bad_images, kind, words):
    path = bad_images()[kind]
    with pytest.raises(ImageError, match=words):
        load_image(path, size=32)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    assert load_image(path, size=8, max_pixels=20_000).shape == (8, 8, 3)
    with pytest.raises(ImageError, match="too large"):
        load_image(path, size=8, max_pixels=19_999)


def test_load_images_keeps_order_and_reports_errors_in_place(tmp_path, bad_images):
    bad = bad_images()
    good = tmp_path / "good.png"
    Image.fromarray(random_rgb(5)).save(good)
    out = load_images([good, bad["empty"], good, bad["truncated"]], size=16)
    assert [type(o).__name__ for o in out] == ["ndarray", "ImageError", "ndarray", "ImageError"]
    np.testing.assert_array_equal(out[0], out[2])


def test_thumbnail_keeps_the_aspect_and_reports_bad_files_like_load_image(tmp_path, bad_images):
    photo = tmp_path / "wide.jpg"
    yy, xx = np.mgrid[0:600, 0:1200]
    smooth = np.stack([xx * 255 // 1199, yy * 255 // 599, (xx + yy) * 255 // 1798], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(photo, quality=90)
    thumb = load_thumbnail(photo, 100)
    assert thumb.shape == (50, 100, 3) and thumb.dtype == np.uint8
    # Decoded at reduced scale, yet the same picture as a full decode shrunk the same way.
    full = Image.fromarray(load_image(photo))
    full.thumbnail((100, 100), Image.BILINEAR)
    assert np.abs(thumb.astype(int) - np.asarray(full, dtype=int)).mean() < 3
    words = {"empty": "empty file", "not_an_image": "not an image", "truncated": "truncated", "corrupt": "corrupt",
             "too_large": "too large"}
    for kind, path in bad_images().items():
        with pytest.raises(ImageError, match=words[kind]):
            load_thumbnail(path, 100)


def test_display_copy_comes_from_the_same_decode_as_the_model_input(tmp_path, bad_images):
    """`load_image_for_display` gives `load_image`'s array exactly (what the model sees does not change) and a
    display copy with the aspect kept; a big JPEG is decoded once, at the reduced scale the model allows."""
    yy, xx = np.mgrid[0:900, 0:1600]
    smooth = np.stack([xx * 255 // 1599, yy * 255 // 899, (xx + yy) * 255 // 2498], axis=-1).astype(np.uint8)
    for name in ("big.jpg", "big.png"):
        Image.fromarray(smooth).save(tmp_path / name)
        model_input, shown = load_image_for_display(tmp_path / name, 64, 384)
        np.testing.assert_array_equal(model_input, load_image(tmp_path / name, 64))
        assert shown.dtype == np.uint8 and max(shown.shape[:2]) <= 384
        assert abs(shown.shape[1] / shown.shape[0] - 16 / 9) < 0.05, shown.shape
    assert load_image_for_display(tmp_path / "big.png", 64, 384)[1].shape == (216, 384, 3)  # no draft for a PNG
    assert image_size(tmp_path / "big.jpg") == (1600, 900)  # from the header alone
    for kind, path in bad_images().items():
        with pytest.raises(ImageError):
            load_image_for_display(path, 64, 384)
        if kind in ("empty", "not_an_image", "too_large"):  # what the header already shows
            with pytest.raises(ImageError):
                image_size(path)


def test_a_big_jpeg_decoded_at_reduced_scale_is_the_full_decode_resized(tmp_path):
    """The model input of a big JPEG comes from a 1/8-scale decode (`Image.draft`): within a grey level or so of the
    full-size decode resized the same way, pixel by pixel, on a noisy photo as on a smooth one."""
    yy, xx = np.mgrid[0:1500, 0:2000]
    smooth = np.stack([xx * 255 // 1999, yy * 255 // 1499, (xx + yy) * 255 // 3498], axis=-1)
    noise = np.random.default_rng(0).normal(0, 12, smooth.shape)
    for pixels in (smooth, smooth + noise):
        path = tmp_path / "big.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.BILINEAR), dtype=int)
        reduced = load_image(path, 64).astype(int)
        assert np.abs(reduced - full).mean() < 1 and np.abs(reduced - full).max() <= 8
        assert load_image_for_display(path, 64, 2000)[1].shape == (188, 250, 3)  # decoded at 1/8: 250x188
