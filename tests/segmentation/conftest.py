"""Tiny synthetic smears for the segmentation tests: purple-blue cells on grey-green, with truth masks."""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND = (193, 194, 189)  # grey-green, as measured on real smears (docs/synthetic-data.md)
RED_CELL = (186, 169, 175)  # pink
NUCLEUS = (133, 96, 213)  # purple-blue


def make_slide(size=(240, 320), cells=((80, 70, 22), (220, 150, 26)), red=((160, 60, 14), (40, 190, 14)), seed=0):
    """An HxW RGB smear with white cells (x, y, r) and red cells.

    Returns:
        (image HxWx3 uint8 RGB, truth HxW uint8 0/255 white-cell mask).
    """
    rng = np.random.default_rng(seed)
    image = np.empty((*size, 3), np.float64)
    image[:] = BACKGROUND
    truth = np.zeros(size, np.uint8)
    for x, y, r in red:
        cv2.circle(image, (x, y), r, RED_CELL, -1)
    for x, y, r in cells:
        cv2.circle(image, (x, y), r, NUCLEUS, -1)
        cv2.circle(truth, (x, y), r, 255, -1)
    image = np.clip(image + rng.normal(0.0, 3.0, image.shape), 0, 255).astype(np.uint8)
    return image, truth


def downscaled_probability(truth: np.ndarray, scale: float) -> np.ndarray:
    """The truth mask as a working-scale probability map, as a perfect U-Net would give it."""
    h, w = truth.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(truth.astype(np.float32) / 255.0, size, interpolation=cv2.INTER_AREA)
