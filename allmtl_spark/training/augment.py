"""Training-side augmentation (pure numpy/OpenCV): flips, rotation, shift, scale, class balancing.

Runs after the split and only on the training part. Every copy is seeded by (seed, image key,
copy number), so a rerun produces the same training set whatever the Spark partitioning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    flip: bool = True
    rotate_max_deg: float = 180.0
    shift_fraction: float = 0.08
    scale_range: tuple[float, float] = (0.9, 1.1)


def copy_rng(seed: int, key: str, copy: int) -> np.random.Generator:
    """Generator for one augmented copy, independent of where and in which order it runs."""
    digest = hashlib.sha256(f"{seed}|{key}|{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def augment_image(image: np.ndarray, rng: np.random.Generator, params: AugmentParams) -> np.ndarray:
    """One random flip / rotation / shift / scale of an image; the background stays black.

    Args:
        image: HxWx3 uint8 RGB (cells on a black backdrop).
        rng: the copy's generator.
        params: the augmentation ranges.

    Returns:
        HxWx3 uint8 RGB, same shape.
    """
    out = image
    if params.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if params.flip and rng.random() < 0.5:
        out = out[::-1]
    height, width = out.shape[:2]
    angle = rng.uniform(0.0, params.rotate_max_deg)
    scale = rng.uniform(*params.scale_range)
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
    matrix[:, 2] += rng.uniform(-params.shift_fraction, params.shift_fraction, size=2) * (width, height)
    return cv2.warpAffine(
        np.ascontiguousarray(out),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def copies_per_item(labels: list[str], copies_per_image: int, balance_to: int | None) -> list[int]:
    """How many augmented copies each training image gets.

    Without balancing every image gets ``copies_per_image``. With ``balance_to`` (the paper grew
    its set to 1,700 balanced images) each class gets ``balance_to / n_classes`` images in all,
    spread as evenly as possible over that class's images (originals included).
    """
    if balance_to is None:
        return [copies_per_image] * len(labels)
    classes = sorted(set(labels))
    per_class = balance_to // len(classes)
    out = [0] * len(labels)
    for cls in classes:
        members = [i for i, label in enumerate(labels) if label == cls]
        extra = max(0, per_class - len(members))
        for rank, index in enumerate(members):
            out[index] = extra // len(members) + (1 if rank < extra % len(members) else 0)
    return out
