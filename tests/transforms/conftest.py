"""Tiny synthetic smears for the transform tests (colours measured on real smears, docs/synthetic-data.md)."""

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


GLASS = np.array([193.0, 194.0, 189.0])
# Beer-Lambert optical density per unit of stain, (R, G, B): haemoglobin absorbs green, chromatin red and green.
EOSIN_OD = np.array([0.04, 0.14, 0.08])
CHROMATIN_OD = np.array([0.37, 0.70, 0.0])


def drawn_smear(
    diameter_px: float,
    size=(480, 640),
    coverage=0.5,
    white_cells=3,
    vignetting=0.25,
    noise=3.0,
    overlap=0.35,
    seed=0,
):
    """A smear of red cells of one diameter (10 % size variation, central pallor, overlaps that darken),
    a few purple white cells twice as large, uneven lamp, sensor noise; HxWx3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    h, w = size
    density = np.zeros((h, w), np.float32)
    chromatin = np.zeros((h, w), np.float32)
    r = diameter_px / 2
    placed: list[tuple[float, float, float]] = []
    target = int(coverage * h * w / (np.pi * r * r))
    for _ in range(target * 20):
        if len(placed) >= target:
            break
        ri = r * rng.uniform(0.9, 1.1)
        x, y = rng.uniform(-r, w + r), rng.uniform(-r, h + r)
        # Overlap up to `overlap` of a diameter with any earlier cell, no more (a monolayer, not a pile).
        if any(np.hypot(x - px, y - py) < (ri + pr) * (1 - overlap) for px, py, pr in placed):
            continue
        placed.append((x, y, ri))
        x0, x1 = max(0, int(x - ri - 2)), min(w, int(x + ri + 3))
        y0, y1 = max(0, int(y - ri - 2)), min(h, int(y + ri + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        rho = np.sqrt((xx - x) ** 2 + (yy - y) ** 2) / ri
        disc = np.clip((1 - rho) * ri / 1.2 + 0.5, 0, 1)
        pallor = 0.6 * np.exp(-((rho / 0.45) ** 4))
        density[y0:y1, x0:x1] += (disc * (1 - pallor)).astype(np.float32)
    for _ in range(white_cells):
        x, y, rw = rng.uniform(0, w), rng.uniform(0, h), 1.0 * diameter_px
        cv2.circle(chromatin, (int(x), int(y)), int(rw), 1.0, -1)
        density[chromatin > 0] = 0  # the white cell lies on top
    od = density[..., None] * EOSIN_OD * 1.3 + chromatin[..., None] * CHROMATIN_OD * 1.2
    yy, xx = np.mgrid[:h, :w]
    lamp = 1 - vignetting * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / 2
    image = GLASS * lamp[..., None] * np.exp(-od) + rng.normal(0, noise, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def smear():
    return make_smear
