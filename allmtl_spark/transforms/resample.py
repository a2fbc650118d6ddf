"""Bring images to a pixel size (micrometres per pixel), and map coordinates between the two grids.

Every model of the pipeline works at one canonical pixel size, so one model serves photos of any
magnification: a slide (or a cell crop) is resampled from its own pixel size to that one first.
Pixel centres map as ``x_new = (x_old + 0.5) * factor - 0.5`` with ``factor = old pixel size / new``
(``units.resample_factor``), so both grids cover the same field.

Images are HxWx3 (or HxW) uint8; masks HxW uint8 0/255.
"""

from __future__ import annotations

import cv2
import numpy as np

from allmtl_spark import units
from allmtl_spark.transforms.color import to_mask


def resampled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """``(w, h)`` of a ``width x height`` image scaled by ``factor`` (each side at least 1 pixel)."""
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_by(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale an image by ``factor``: area averaging when it shrinks, bilinear when it grows; same dtype."""
    size = resampled_size(image.shape[1], image.shape[0], factor)
    if size == (image.shape[1], image.shape[0]):
        return image
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def resample_image(image: np.ndarray, pixel_size_um: float, target_pixel_size_um: float) -> np.ndarray:
    """An image (HxW or HxWxC) at ``pixel_size_um`` micrometres per pixel, brought to ``target_pixel_size_um``.

    A 0.0775 um/px photo brought to 0.31 um/px shrinks to a quarter of its sides; a 0.5 um/px one grows.
    """
    return resize_by(image, units.resample_factor(pixel_size_um, target_pixel_size_um))


def mask_by(mask: np.ndarray, factor: float) -> np.ndarray:
    """A 0/255 mask scaled by ``factor``: a pixel is inside when at least half of what it covers was."""
    size = resampled_size(mask.shape[1], mask.shape[0], factor)
    if size == (mask.shape[1], mask.shape[0]):
        return to_mask(mask > 0)
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return to_mask(cv2.resize((mask > 0).astype(np.float32), size, interpolation=interpolation) >= 0.5)


def to_new_grid(xy: np.ndarray, factor: float) -> np.ndarray:
    """``(n, 2)`` pixel coordinates on the old grid -> the grid scaled by ``factor``."""
    return (np.asarray(xy, np.float64) + 0.5) * factor - 0.5


def to_old_grid(xy: np.ndarray, factor: float) -> np.ndarray:
    """``(n, 2)`` pixel coordinates on the grid scaled by ``factor`` -> the original grid."""
    return (np.asarray(xy, np.float64) + 0.5) / factor - 0.5


def odd_size_px(length_um: float, pixel_size_um: float) -> int:
    """A side in pixels for a physical length, rounded to the nearest odd number (a crop with a centre pixel)."""
    return max(1, 2 * int(round((units.um_to_px(length_um, pixel_size_um) - 1) / 2)) + 1)
