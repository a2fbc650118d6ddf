"""Physical scale of smear images: micrometres, pixels and the constants that link them.

Sizes in a smear are physical; pixels are whatever the camera and objective made of them. Every size
the pipeline uses is stated in micrometres (names end in ``_um`` / ``_um2``) and turned into pixels
once per image, from that image's own pixel size (``pixel_size_um``: micrometres per pixel).

Red cells are haematology's standard ruler: about 7.5-8 um across on a dried smear and fairly
constant between people, so a slide whose pixel size nobody recorded can be measured from them.
"""

from __future__ import annotations

import math

# Mean red-cell diameter on a dried, stained smear (7.5-8 um).
RBC_DIAMETER_UM = 7.75

# ALL-IDB1's nominal scale: its red cells are about 50 px across (the range the synthetic
# generator was built around, 38-62 px), so about 7.75 / 50 um per pixel. ALL-IDB1 itself mixes
# magnifications (300x-500x), so this is a centre, not a constant of every photo.
ALLIDB1_PIXEL_SIZE_UM = 0.155

# ALL-IDB2's crops are 257 px at ALL-IDB1's scale.
ALLIDB2_CROP_SIZE_UM = 257 * ALLIDB1_PIXEL_SIZE_UM

PIXEL_SIZE_SOURCES = ("given", "estimated", "default")


def check_pixel_size(pixel_size_um: float, what: str = "pixel_size_um") -> float:
    """Return ``pixel_size_um`` as a float, or raise ``ValueError`` if it cannot be a microscope's.

    Light microscopes resolve about 0.2 um; camera pixels from 0.02 to 5 um per pixel cover every
    objective from 100x oil to a low-power overview.
    """
    try:
        value = float(pixel_size_um)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not 0.02 <= value <= 5.0:
        raise ValueError(f"{what} must be a micrometres-per-pixel value in 0.02..5, got {pixel_size_um!r}")
    return value


def um_to_px(length_um: float, pixel_size_um: float) -> float:
    """A length in micrometres as pixels of an image with ``pixel_size_um`` micrometres per pixel."""
    return float(length_um) / check_pixel_size(pixel_size_um)


def px_to_um(length_px: float, pixel_size_um: float) -> float:
    """A length in pixels of an image with ``pixel_size_um`` micrometres per pixel, in micrometres."""
    return float(length_px) * check_pixel_size(pixel_size_um)


def um2_to_px2(area_um2: float, pixel_size_um: float) -> float:
    """An area in square micrometres as square pixels."""
    return float(area_um2) / check_pixel_size(pixel_size_um) ** 2


def px2_to_um2(area_px2: float, pixel_size_um: float) -> float:
    """An area in square pixels as square micrometres."""
    return float(area_px2) * check_pixel_size(pixel_size_um) ** 2


def resample_factor(pixel_size_um: float, target_pixel_size_um: float) -> float:
    """Scale factor (new size / old size) that brings an image to ``target_pixel_size_um`` per pixel.

    A 0.1 um/px image brought to 0.3 um/px shrinks by 1/3; a 0.6 um/px image grows by 2.
    """
    return check_pixel_size(pixel_size_um) / check_pixel_size(target_pixel_size_um, "target pixel size")
