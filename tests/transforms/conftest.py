"""Tiny synthetic smears for the transform tests (colours measured on real smears, see METHOD.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

BACKGROUND = (193, 194, 189)  # grey-green
RED_CELL = (186, 169, 175)  # pink
NUCLEUS = (133, 96, 213)  # purple-blue


def make_smear(gains=(1.0, 1.0, 1.0), noise=3.0, seed=0):
    """A 96x128 RGB smear: four red cells and one purple white cell (radius 16 at x=64, y=48).

    Returns:
        (image HxWx3 uint8 RGB, truth HxW uint8 0/255 mask of the white cell).
    """
    rng = np.random.default_rng(seed)
    image = np.empty((96, 128, 3), np.float64)
    image[:] = BACKGROUND
    for centre in [(20, 20), (100, 70), (30, 75), (110, 15)]:
        cv2.circle(image, centre, 12, RED_CELL, -1)
    cv2.circle(image, (64, 48), 16, NUCLEUS, -1)
    truth = np.zeros((96, 128), np.uint8)
    cv2.circle(truth, (64, 48), 16, 255, -1)
    image = image * np.asarray(gains) + rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture
def smear():
    return make_smear
