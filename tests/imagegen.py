"""Transitional: moved to tests/helpers/images.py. Kept only while tests/demo/reviewapp.py (being written in
parallel) imports it from here; delete this file once it imports tests.helpers.images."""

from tests.helpers.images import fruit_samples, random_rgb, write_bad_images, write_good_images

__all__ = ["fruit_samples", "random_rgb", "write_bad_images", "write_good_images"]
