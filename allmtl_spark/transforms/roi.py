"""Region of interest: where on a smear the white cells (and so the blasts) are.

Two methods. ``paper`` is the rule of Maaliw et al. (2022): fixed RGB offsets, monochrome, fixed
threshold; it is tuned to one camera and stain and finds nothing on smears from other labs (after the
offsets every pixel of such a smear is brighter than 98). ``adaptive`` (the default) thresholds a
stain-sensitive channel with Otsu after a white balance, so it follows each image's own colours.

Images are HxWx3 uint8 RGB; masks are HxW uint8, 255 inside the region and 0 outside.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import cv2
import numpy as np

from allmtl_spark.transforms.color import check_rgb, otsu_split, stain_channel, to_mask
from allmtl_spark.transforms.masks import fill_holes, remove_small_objects
from allmtl_spark.transforms.stain import normalize_colour

PAPER_OFFSETS = (88, 41, 20)
PAPER_THRESHOLD = 98


def paper_roi_mask(
    image_rgb: np.ndarray, offsets: Sequence[int] = PAPER_OFFSETS, threshold: int = PAPER_THRESHOLD
) -> np.ndarray:
    """The paper's ROI: add per-channel offsets, convert to grey, keep pixels darker than ``threshold``.

    The offsets are added in int16 and clipped to 0..255 (no uint8 wrap-around). Grey is OpenCV's
    ``COLOR_RGB2GRAY``: Y = 0.299 R + 0.587 G + 0.114 B, rounded to the nearest integer. A pixel is
    in the region when ``Y < threshold`` (strictly): the blasts are the darkest, dark-purple objects.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        offsets: ``(red, green, blue)`` added to each channel, each in -255..255.
        threshold: grey level, 0..256; pixels with grey strictly below it are kept.

    Returns:
        HxW uint8 mask, 255 where ``Y < threshold``, else 0.
    """
    check_rgb(image_rgb)
    offsets = tuple(int(v) for v in offsets)
    if len(offsets) != 3 or any(abs(v) > 255 for v in offsets):
        raise ValueError(f"offsets must be three values (R, G, B) in -255..255, got {offsets}")
    if not 0 <= threshold <= 256:
        raise ValueError(f"threshold must be in 0..256, got {threshold}")
    shifted = np.clip(image_rgb.astype(np.int16) + np.asarray(offsets, np.int16), 0, 255).astype(np.uint8)
    return to_mask(cv2.cvtColor(shifted, cv2.COLOR_RGB2GRAY) < threshold)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def clean_mask(
    mask: np.ndarray, open_radius: int = 2, close_radius: int = 2, close_holes: bool = True, min_area: int = 0
) -> np.ndarray:
    """Morphological cleanup: opening (drops specks), closing (bridges gaps), hole filling, small-area removal.

    Args:
        mask: HxW uint8 mask, 0/255.
        open_radius: elliptical opening radius, pixels; 0 skips it.
        close_radius: elliptical closing radius, pixels; 0 skips it.
        close_holes: fill enclosed holes (pale nucleus centres).
        min_area: drop components smaller than this many pixels; 0 keeps all.

    Returns:
        HxW uint8 mask, 0/255.
    """
    if open_radius < 0 or close_radius < 0:
        raise ValueError(f"open_radius and close_radius must be >= 0, got {open_radius}, {close_radius}")
    out = mask
    if open_radius:
        out = cv2.morphologyEx(out, cv2.MORPH_OPEN, _disk(open_radius))
    if close_radius:
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, _disk(close_radius))
    if close_holes:
        out = fill_holes(out)
    return remove_small_objects(out, min_area) if min_area else out


def adaptive_roi_mask(
    image_rgb: np.ndarray,
    channel: str = "blue_minus_red",
    normalize: str | None = "grey_world",
    percentile: float = 95.0,
    blur_sigma: float = 1.0,
    min_separation: float = 10.0,
    open_radius: int = 2,
    close_radius: int = 2,
    close_holes: bool = True,
    min_area: int = 0,
    glass_percent: float | None = 10.0,
) -> np.ndarray:
    """Adaptive ROI: Otsu threshold on a stain channel, after an optional white balance.

    Purple-blue white cells are the high end of the stain channel (B - R or HSV saturation); pink
    red cells and grey-green background are the low end. Otsu picks the cut per image, so stain
    intensity and camera white balance do not need tuning.

    Otsu runs on the pixels at or above the glass's channel level only (``glass_percent``): on a
    dense red-cell field with few white cells, Otsu over every pixel splits red cells from glass and
    takes the glass between the cells for white cells. The glass is the brightest ``glass_percent``
    % of the pixels (white cells and red cells absorb light; the glass does not).

    Args:
        image_rgb: HxWx3 uint8 RGB.
        channel: ``"blue_minus_red"`` or ``"saturation"`` (see ``color.stain_channel``).
        normalize: ``"grey_world"``, ``"percentile"`` (background to white), ``"reinhard"``, ``"macenko"``
            (stain normalisation, ``transforms.stain``) or None.
        percentile: background percentile for ``normalize="percentile"``.
        blur_sigma: Gaussian sigma (pixels) on the channel before Otsu, against JPEG and sensor
            noise; 0 skips it.
        min_separation: if Otsu's two classes differ by less than this (channel units), the image has
            no distinct stained objects and the mask is empty (Otsu would otherwise split noise).
        open_radius: see :func:`clean_mask`.
        close_radius: see :func:`clean_mask`.
        close_holes: see :func:`clean_mask`.
        min_area: see :func:`clean_mask`.
        glass_percent: share of the brightest pixels taken as glass, in (0, 100); None: Otsu over every
            pixel.

    Returns:
        HxW uint8 mask, 255 in the region, 0 outside.
    """
    check_rgb(image_rgb)
    balanced = normalize_colour(image_rgb, normalize, percentile) if normalize else image_rgb
    values = stain_channel(balanced, channel)
    if blur_sigma > 0:
        values = np.rint(cv2.GaussianBlur(values.astype(np.float32), (0, 0), blur_sigma)).astype(np.int16)
    if glass_percent is not None:
        glass = glass_level(balanced, values, glass_percent)
        threshold, separation = otsu_split(values[values >= glass])
    else:
        threshold, separation = otsu_split(values)
    if separation < min_separation:
        return np.zeros(values.shape, np.uint8)
    return clean_mask(to_mask(values > threshold), open_radius, close_radius, close_holes, min_area)


def glass_level(image_rgb: np.ndarray, values: np.ndarray, glass_percent: float = 10.0) -> int:
    """The median of ``values`` (HxW int) over the brightest ``glass_percent`` % of the image's pixels.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        values: HxW integer channel of the same image (for example ``color.stain_channel``).
        glass_percent: in (0, 100).
    """
    if not 0.0 < glass_percent < 100.0:
        raise ValueError(f"glass_percent must be in (0, 100), got {glass_percent}")
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    counts = np.cumsum(np.bincount(grey.ravel(), minlength=256)[::-1])  # pixels at or above each level, 255 down
    cut = 255 - int(np.searchsorted(counts, grey.size * glass_percent / 100.0))
    return int(np.median(values[grey >= cut]))


ROI_METHODS = {"adaptive": adaptive_roi_mask, "paper": paper_roi_mask}


def roi_mask(image_rgb: np.ndarray, method: str = "adaptive", **params: object) -> np.ndarray:
    """Dispatch to the configured ROI method.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        method: ``"adaptive"`` (:func:`adaptive_roi_mask`) or ``"paper"`` (:func:`paper_roi_mask`).
        **params: keyword arguments of that method (for example ``threshold=98`` for ``paper``).

    Returns:
        HxW uint8 mask, 0/255.
    """
    if method not in ROI_METHODS:
        raise ValueError(f"ROI method must be one of {sorted(ROI_METHODS)}, got {method!r}")
    func = ROI_METHODS[method]
    unknown = sorted(set(params) - (set(inspect.signature(func).parameters) - {"image_rgb"}))
    if unknown:
        raise ValueError(f"ROI method {method!r} takes no parameter(s) {unknown}")
    return func(image_rgb, **params)
