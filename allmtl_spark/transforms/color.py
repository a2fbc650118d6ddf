"""Colour helpers shared by the ROI and isolation steps: input checks, white balance, stain channels, Otsu.

All images are HxWx3 uint8 in RGB order (not OpenCV's BGR); masks are HxW uint8 with values 0/255.
"""

from __future__ import annotations

import cv2
import numpy as np

STAIN_CHANNELS = ("blue_minus_red", "saturation")
WHITE_BALANCE_METHODS = ("grey_world", "percentile")


def check_rgb(image_rgb: np.ndarray, name: str = "image_rgb") -> np.ndarray:
    """Return ``image_rgb`` unchanged if it is an HxWx3 uint8 array, else raise ``ValueError``."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"{name} must be an HxWx3 RGB array, got shape {getattr(image_rgb, 'shape', None)}")
    if image_rgb.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {image_rgb.dtype}")
    return image_rgb


def check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Validate an HxW mask against an image's first two dimensions and return it as a bool array.

    Args:
        mask: HxW array; any non-zero value (255 in this package's masks) is foreground.
        shape: the image shape whose first two entries the mask must match.
        name: argument name used in the error message.

    Returns:
        HxW bool array, True inside the mask.
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.shape != tuple(shape[:2]):
        raise ValueError(f"{name} must be an HxW array of shape {tuple(shape[:2])}, got {getattr(mask, 'shape', None)}")
    return mask != 0


def to_mask(foreground: np.ndarray) -> np.ndarray:
    """Convert a boolean HxW array to this package's mask convention: uint8, 255 inside, 0 outside."""
    return np.asarray(foreground, dtype=bool).view(np.uint8) * np.uint8(255)


def white_balance(image_rgb: np.ndarray, method: str = "grey_world", percentile: float = 95.0) -> np.ndarray:
    """Remove a colour cast with one gain per channel, so stain colours compare across labs and cameras.

    ``grey_world`` scales each channel so the three channel means become equal (a smear is mostly
    neutral background, so its average colour should be grey). ``percentile`` maps each channel's
    ``percentile``-th value, i.e. the bright background, to 255 (a robust white patch). Both undo any
    per-channel gain exactly, up to clipping.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        method: ``"grey_world"`` or ``"percentile"``.
        percentile: background percentile for ``"percentile"``, in (0, 100].

    Returns:
        HxWx3 uint8 RGB, same shape.
    """
    check_rgb(image_rgb)
    if method == "grey_world":
        means = np.array(cv2.mean(image_rgb)[:3])
        gains = means.mean() / np.maximum(means, 1e-6)
    elif method == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        gains = 255.0 / np.maximum(np.percentile(image_rgb.reshape(-1, 3), percentile, axis=0), 1.0)
    else:
        raise ValueError(f"white balance method must be one of {WHITE_BALANCE_METHODS}, got {method!r}")
    # One 256-entry lookup table per channel instead of float arithmetic on every pixel: the same
    # values (the table holds the formula's result for each level) at a fraction of the cost on a
    # 5-megapixel slide.
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip(levels * gains + 0.5, 0, 255).astype(np.uint8)  # (256, 3)
    return cv2.LUT(np.ascontiguousarray(image_rgb), table.reshape(256, 1, 3))


def stain_channel(image_rgb: np.ndarray, channel: str = "blue_minus_red") -> np.ndarray:
    """One channel in which the purple-blue stain of white-cell nuclei is bright and pink/grey is dark.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        channel: ``"blue_minus_red"`` (B - R, signed: nuclei about +80, red cells and background
            slightly negative on real smears) or ``"saturation"`` (HSV S scaled to 0..255 by OpenCV).

    Returns:
        HxW int16: -255..255 for ``blue_minus_red``, 0..255 for ``saturation``.
    """
    check_rgb(image_rgb)
    if channel == "blue_minus_red":
        return image_rgb[..., 2].astype(np.int16) - image_rgb[..., 0].astype(np.int16)
    if channel == "saturation":
        return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.int16)
    raise ValueError(f"channel must be one of {STAIN_CHANNELS}, got {channel!r}")


def otsu_split(values: np.ndarray) -> tuple[int, float]:
    """Otsu's threshold on integer values of any range (OpenCV's Otsu only takes uint8 images).

    Args:
        values: integer array of any shape (for example a signed B - R channel).

    Returns:
        ``(threshold, separation)``: foreground is ``values > threshold``; ``separation`` is the
        difference of the two class means (0.0 when the values are constant or empty), so callers
        can reject a split of pure noise.
    """
    flat = np.asarray(values).ravel().astype(np.int64)
    if flat.size == 0 or flat.min() == flat.max():
        return (int(flat.max()) if flat.size else 0), 0.0
    low = int(flat.min())
    hist = np.bincount(flat - low).astype(np.float64)
    levels = np.arange(hist.size, dtype=np.float64)
    weight_low = np.cumsum(hist)
    weight_high = flat.size - weight_low
    sum_low = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (sum_low[-1] - sum_low) / weight_high
        between = np.where(weight_high > 0, weight_low * weight_high * (mean_high - mean_low) ** 2, -1.0)
    k = int(np.argmax(between))  # first maximum: lowest threshold among equally good ones
    return low + k, float(mean_high[k] - mean_low[k])
