"""The red-cell scale estimate and the pixel-size policy, on drawn smears of known scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from allmtl_spark import units
from allmtl_spark.transforms import scale
from tests.transforms.conftest import GLASS, drawn_smear

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("diameter", [14, 24, 50, 100])
@pytest.mark.parametrize("coverage", [0.3, 0.8])
def test_estimate_is_within_ten_percent_of_the_drawn_scale(diameter, coverage):
    image = drawn_smear(diameter, coverage=coverage, seed=diameter)
    estimate = scale.estimate_pixel_size(image)
    true_pixel_size = units.RBC_DIAMETER_UM / diameter
    assert estimate.pixel_size_um == pytest.approx(true_pixel_size, rel=0.10)
    assert estimate.confidence >= 0.5 and estimate.cells >= 3


def test_large_photo_is_measured_on_a_window_at_the_same_scale():
    image = drawn_smear(40, size=(1944, 2592), coverage=0.5, white_cells=12, seed=3)
    estimate = scale.estimate_pixel_size(image)
    assert estimate.rbc_diameter_px == pytest.approx(40, rel=0.10) and estimate.confidence >= 0.5


def test_touching_and_overlapping_cells_still_measure_their_own_diameter():
    image = drawn_smear(30, coverage=0.95, overlap=0.45, seed=11)
    estimate = scale.estimate_pixel_size(image)
    assert estimate.rbc_diameter_px == pytest.approx(30, rel=0.10)


def test_glass_without_cells_gives_no_estimate_and_zero_confidence():
    rng = np.random.default_rng(0)
    glass = np.clip(GLASS + rng.normal(0, 3, (240, 320, 3)), 0, 255).astype(np.uint8)
    estimate = scale.estimate_pixel_size(glass)
    assert estimate.confidence < 0.5


def test_a_few_cells_are_not_confident():
    image = drawn_smear(60, size=(200, 200), coverage=0.12, white_cells=0, seed=5)
    estimate = scale.estimate_pixel_size(image)
    assert estimate.confidence < 0.5


def test_round_holes_are_filled_and_gaps_between_cells_are_not():
    mask = np.zeros((100, 200), np.uint8)
    cv2.circle(mask, (40, 50), 30, 255, -1)
    cv2.circle(mask, (40, 50), 10, 0, -1)  # pallor
    for cx, cy in ((129, 30), (171, 30), (150, 66)):  # three touching discs enclose a concave gap
        cv2.circle(mask, (cx, cy), 21, 255, -1)
    filled = scale.fill_round_holes(mask)
    assert filled[50, 40] == 255  # the pale centre
    assert mask[43, 150] == 0 and filled[43, 150] == 0  # the gap


def test_policy_given_beats_estimate_beats_default():
    image = drawn_smear(24, seed=2)
    given = scale.resolve_pixel_size(image, 0.2, 0.155, 0.5)
    assert (given.pixel_size_um, given.source, given.confidence) == (0.2, "given", None)
    estimated = scale.resolve_pixel_size(image, None, 0.155, 0.5)
    assert estimated.source == "estimated" and estimated.pixel_size_um == pytest.approx(7.75 / 24, rel=0.1)
    doubtful = scale.resolve_pixel_size(image, None, 0.155, 1.01)  # no estimate is that confident
    assert doubtful.source == "default" and doubtful.pixel_size_um == 0.155
    assert doubtful.estimate_um == pytest.approx(estimated.pixel_size_um)
    with pytest.raises(ValueError, match="micrometres-per-pixel"):
        scale.resolve_pixel_size(None, 50.0, 0.155, 0.5)


@pytest.mark.parametrize("pixel_size", [0.0775, 0.155, 0.31])  # 0.5x .. 2x ALL-IDB1's magnification
def test_generator_smears_of_known_scale_sparse_to_packed(pixel_size):
    """The synthetic generator's smears (stain, lamp, blur, noise, all white-cell kinds, platelet clumps),
    from a sparse field to a packed monolayer with overlaps: the estimate is within 10 % when confident."""
    from allmtl_spark.config.schema import SmearParams
    from allmtl_spark.synth.smear import render_slide

    confident = 0
    for seed, coverage in enumerate((0.3, 0.6, 0.95)):
        params = SmearParams(pixel_size_um=(pixel_size, pixel_size), rbc_coverage=(coverage, coverage))
        slide = render_slide(np.random.default_rng(7000 + seed), 640, 480, "L2", params)
        estimate = scale.estimate_pixel_size(slide.image)
        if estimate.confidence >= 0.5:
            confident += 1
            assert estimate.pixel_size_um == pytest.approx(slide.pixel_size_um, rel=0.10), coverage
    assert confident >= 2
