"""Colour and stain normalisation of smear photos: white balance, Reinhard, Macenko (pure numpy/OpenCV).

Labs differ in stain batch, staining time, lamp and camera. A model trained on one lab's colours sees
another's as new; normalising every image the same way before the model (at training and at inference
alike) removes most of that difference.

- ``grey_world`` / ``percentile``: one gain per channel (``color.white_balance``); removes a colour cast.
- ``reinhard`` (Reinhard et al. 2001): each image's mean and standard deviation in CIE L*a*b* are
  mapped to a reference's; also evens out stain intensity.
- ``macenko`` (Macenko et al. 2009): the two stain vectors are estimated per image (singular vectors
  of the optical densities) and the image is re-rendered with the reference's stain vectors and
  concentration range; also changes hue, stain by stain.

Both are short numpy/OpenCV implementations of the papers (OpenCV's L*a*b* conversion for Reinhard).
torchstain's numpy backend is made for H&E: its Macenko keeps only the pixels whose optical density is
at least 0.15 in every channel, a rule that leaves out much of a blood smear's white cells (nuclei
hardly absorb blue), so the stains it found would depend on the lamp and the field.
The reference is a smear patch in the colours measured on real Wright-Giemsa smears (glass about RGB
(193,194,189), red cells (186,169,175), white-cell nuclei (133,96,213)): :func:`reference_smear`. Its
stain vectors are therefore the blood-smear stains (azure/methylene blue in nuclei, eosin in red
cells), not the H&E of histology. Macenko works on optical density, which needs the light that
reached the camera through clear glass: each image is first balanced so that its glass is white.

Images are HxWx3 uint8 RGB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.transforms.color import check_rgb, white_balance

STAIN_NORMALIZATIONS = ("grey_world", "percentile", "reinhard", "macenko", "none")

# Colours measured on real smears (glass, red cells, white-cell nuclei: 10th-90th percentiles; docs/synthetic-data.md).
REFERENCE_GLASS = (193, 194, 189)
REFERENCE_RED_CELL = (186, 169, 175)
REFERENCE_NUCLEUS_RANGE = ((107, 80, 197), (153, 116, 222))


def reference_smear(side: int = 200) -> np.ndarray:
    """A deterministic patch in real smear colours: 55 % glass, 38 % red cells, 7 % nuclei (side x side RGB).

    The shares are those of a typical monolayer field (red cells cover about 40 % of the glass, white
    cells a few per cent); nucleus pixels span the measured 10th-90th percentile colours.
    """
    rng = np.random.default_rng(0)
    n = side * side
    counts = [int(0.55 * n), int(0.38 * n)]
    counts.append(n - sum(counts))
    low, high = (np.asarray(c, np.float64) for c in REFERENCE_NUCLEUS_RANGE)
    nuclei = low + rng.uniform(0, 1, (counts[2], 1)) * (high - low)
    pixels = np.concatenate(
        [
            np.repeat(np.asarray([REFERENCE_GLASS], np.float64), counts[0], axis=0),
            np.repeat(np.asarray([REFERENCE_RED_CELL], np.float64), counts[1], axis=0),
            nuclei,
        ]
    )
    pixels = pixels + rng.normal(0, 2.0, pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8).reshape(side, side, 3)


def _lab(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def lab_stats(image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an image in CIE L*a*b* (OpenCV's float scale)."""
    mean, std = cv2.meanStdDev(_lab(image_rgb))
    return mean.ravel(), std.ravel()


@functools.lru_cache(maxsize=1)
def _reference_lab() -> tuple[np.ndarray, np.ndarray]:
    return lab_stats(reference_smear())


def reinhard(image_rgb: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer to the reference smear's L*a*b* mean and spread (HxWx3 uint8 RGB)."""
    check_rgb(image_rgb)
    lab = _lab(image_rgb)
    mean, std = cv2.meanStdDev(lab)
    target_mean, target_std = _reference_lab()
    gain = target_std / np.maximum(std.ravel(), 1e-3)
    lab = (lab - mean.ravel().astype(np.float32)) * gain.astype(np.float32) + target_mean.astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StainBasis:
    """Two stains' unit optical-density vectors (rows: nuclear stain, eosin; columns R, G, B) and their
    99th-percentile concentrations."""

    vectors: np.ndarray
    max_concentration: np.ndarray


_OD_LUT = (-np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)


def optical_density(image_rgb: np.ndarray) -> np.ndarray:
    """Optical density of every pixel, float32 (n, 3), for an image whose glass is white (255)."""
    return _OD_LUT[image_rgb.reshape(-1, 3)]


def estimate_stains(
    od: np.ndarray, min_density: float = 0.06, alpha: float = 1.0, max_samples: int = 50_000, seed: int = 0
) -> StainBasis | None:
    """Macenko's two stain vectors and concentration range from optical densities (n, 3).

    Pixels whose optical density (its length) is below ``min_density`` are glass. The stained pixels'
    densities are projected onto the plane of their two main directions; the ``alpha`` and
    ``100 - alpha`` percentiles of the angle in that plane are the two stains. The one absorbing more
    red is the nuclear stain (it comes first). None when fewer than 50 pixels are stained.
    """
    stained = od[np.linalg.norm(od, axis=1) > min_density]
    if len(stained) < 50:
        return None
    if len(stained) > max_samples:
        stained = stained[np.random.default_rng(seed).choice(len(stained), max_samples, replace=False)]
    # Second moments about the origin (densities mix stains through zero), as in the paper's SVD of the densities.
    moments = stained.T.astype(np.float64) @ stained.astype(np.float64) / len(stained)
    _, vectors = np.linalg.eigh(moments)
    plane = vectors[:, [2, 1]]  # the main direction first, then the second (eigh sorts ascending)
    plane[:, 0] *= -1.0 if plane[:, 0].sum() < 0 else 1.0  # densities are positive: angles then stay within +-90 deg
    projected = stained @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angle, [alpha, 100 - alpha])
    pair = [plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high)]
    pair = [np.clip(v, 0, None) / max(np.linalg.norm(np.clip(v, 0, None)), 1e-6) for v in pair]
    basis = np.array(sorted(pair, key=lambda v: -v[0]))  # nuclear stain (more red absorbed) first
    concentration = stained @ np.linalg.pinv(basis)
    return StainBasis(basis, np.maximum(np.percentile(concentration, 99, axis=0), 1e-3))


@functools.lru_cache(maxsize=1)
def _reference_stains() -> StainBasis:
    basis = estimate_stains(optical_density(white_glass(reference_smear())))
    assert basis is not None
    return basis


def white_glass(image_rgb: np.ndarray, brightest: float = 10.0) -> np.ndarray:
    """Scale each channel so the glass is white (255): the glass colour is the mean of the ``brightest`` %
    of pixels by luminance. (A per-channel percentile would not do: nuclei are brighter than glass in blue.)
    """
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    cut = np.percentile(grey, 100.0 - brightest)
    glass = np.array(cv2.mean(image_rgb, mask=(grey >= cut).view(np.uint8))[:3])
    table = np.clip(np.arange(256, dtype=np.float64)[:, None] * (255.0 / np.maximum(glass, 1.0)) + 0.5, 0, 255)
    return cv2.LUT(np.ascontiguousarray(image_rgb), table.astype(np.uint8).reshape(256, 1, 3))


def macenko(image_rgb: np.ndarray) -> np.ndarray:
    """Macenko stain normalisation to the reference smear's stain vectors and ranges (HxWx3 uint8 RGB).

    The image is balanced to white glass first (:func:`white_glass`); an image with too few stained
    pixels to find two stains (blank glass) comes back balanced only.
    """
    check_rgb(image_rgb)
    balanced = white_glass(image_rgb)
    od = optical_density(balanced)
    basis = estimate_stains(od)
    if basis is None:
        return balanced
    reference = _reference_stains()
    # concentrations in this image's stains, rescaled to the reference's range, re-rendered in its stains
    mixing = np.linalg.pinv(basis.vectors) * (reference.max_concentration / basis.max_concentration)[None, :]
    density = od @ (mixing @ reference.vectors).astype(np.float32)
    out = 255.0 * np.exp(-np.maximum(density, 0.0))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(image_rgb.shape)


def normalize_colour(image_rgb: np.ndarray, method: str, percentile: float = 95.0) -> np.ndarray:
    """Apply one of ``STAIN_NORMALIZATIONS`` to an HxWx3 uint8 RGB image (``none`` returns it unchanged).

    ``percentile`` is the background percentile of the ``percentile`` white balance.
    """
    if method == "none":
        return check_rgb(image_rgb)
    if method in ("grey_world", "percentile"):
        return white_balance(image_rgb, method, percentile)
    if method == "reinhard":
        return reinhard(image_rgb)
    if method == "macenko":
        return macenko(image_rgb)
    raise ValueError(f"colour normalisation must be one of {STAIN_NORMALIZATIONS}, got {method!r}")
