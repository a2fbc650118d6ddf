"""Isolate the lymphoblast: the blue-channel step and the black backdrop of the paper's segmentation stage.

Our reading of the paper ("the blue channel is used to isolate the lymphoblast and everything else is
set to a black backdrop"): the white-cell mask from the U-Net (or the ROI) still holds pink parts of
red cells that overlap or touch the white cell. Wright-Giemsa stains the blast's nucleus purple-blue
and its basophilic cytoplasm blue, both with blue above red, while red cells are pink (red above blue)
and background is grey. So inside the white-cell mask we keep the pixels where blue exceeds red by a
margin (channel ``blue_minus_red``, the default), or, in the literal reading, the pixels bright in the
blue channel alone (channel ``blue``, best with an Otsu threshold inside the mask). Everything outside
the kept pixels becomes black.

Images are HxWx3 uint8 RGB; masks are HxW uint8, 255 inside and 0 outside.
"""

from __future__ import annotations

import numpy as np

from allmtl_spark.transforms.color import check_mask, check_rgb, otsu_split, stain_channel, to_mask
from allmtl_spark.transforms.roi import clean_mask
from allmtl_spark.transforms.stain import normalize_colour

BLUE_CHANNELS = ("blue_minus_red", "blue")


def isolate_cells(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Put the masked cells on a black backdrop.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        mask: HxW mask, non-zero = keep.

    Returns:
        HxWx3 uint8 RGB: the image inside the mask, (0, 0, 0) everywhere else.
    """
    check_rgb(image_rgb)
    keep = check_mask(mask, image_rgb.shape)
    return np.where(keep[..., None], image_rgb, np.uint8(0))


def _blue_values(image_rgb: np.ndarray, channel: str) -> np.ndarray:
    if channel == "blue":
        return image_rgb[..., 2].astype(np.int16)
    if channel == "blue_minus_red":
        return stain_channel(image_rgb, "blue_minus_red")
    raise ValueError(f"channel must be one of {BLUE_CHANNELS}, got {channel!r}")


def blue_channel_mask(
    image_rgb: np.ndarray,
    cell_mask: np.ndarray,
    channel: str = "blue_minus_red",
    threshold: float | None = 8.0,
    normalize: str | None = "grey_world",
    percentile: float = 95.0,
    open_radius: int = 1,
    close_holes: bool = True,
    min_area: int = 0,
) -> np.ndarray:
    """Keep the blue (lymphoblast) part of a white-cell mask and drop pink red-cell parts.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        cell_mask: HxW white-cell mask, non-zero = white cell.
        channel: ``"blue_minus_red"`` (signed B - R) or ``"blue"`` (the B channel, 0..255).
        threshold: keep pixels whose channel value is ``> threshold``. The default 8 for
            ``blue_minus_red`` means "blue clearly above red" after white balance: it keeps a pale
            blue cytoplasm as well as the nucleus. None: Otsu on the pixels inside ``cell_mask`` (it
            adapts, but on a mask without red-cell parts it may cut the cytoplasm away).
        normalize: colour normalisation of the whole image first: ``"grey_world"``, ``"percentile"``,
            ``"reinhard"``, ``"macenko"`` (``transforms.stain.normalize_colour``) or None.
        percentile: background percentile for ``normalize="percentile"``.
        open_radius: opening radius, pixels, against isolated pixels; 0 skips it.
        close_holes: fill holes (vacuoles, pale nucleoli) inside the kept region.
        min_area: drop kept fragments smaller than this many pixels.

    Returns:
        HxW uint8 mask, 0/255, a subset of ``cell_mask``.
    """
    check_rgb(image_rgb)
    inside = check_mask(cell_mask, image_rgb.shape, "cell_mask")
    balanced = normalize_colour(image_rgb, normalize, percentile) if normalize else image_rgb
    values = _blue_values(balanced, channel)
    if threshold is None:
        threshold, _ = otsu_split(values[inside])
    kept = clean_mask(to_mask((values > threshold) & inside), open_radius, 0, close_holes, min_area)
    return to_mask((kept != 0) & inside)


def isolate_lymphoblast(image_rgb: np.ndarray, cell_mask: np.ndarray, **params: object) -> np.ndarray:
    """The paper's last segmentation step: blue-channel refinement, then a black backdrop.

    Args:
        image_rgb: HxWx3 uint8 RGB.
        cell_mask: HxW white-cell mask, non-zero = white cell.
        **params: keyword arguments of :func:`blue_channel_mask`.

    Returns:
        HxWx3 uint8 RGB, black outside the blue part of the white cells.
    """
    return isolate_cells(image_rgb, blue_channel_mask(image_rgb, cell_mask, **params))
