import cv2
import numpy as np
import pytest

from allmtl_spark.transforms import color, masks, roi

pytestmark = pytest.mark.unit


def test_paper_roi_exact_pixels_offsets_clipping_rounding_and_strict_threshold():
    # Offsets (88, 41, 20), then Y = 0.299 R + 0.587 G + 0.114 B rounded by OpenCV, kept if Y < 98.
    image = np.array(
        [
            [(0, 0, 0), (44, 44, 44), (45, 45, 45)],  # -> (88,41,20) Y=52.7->53; (132,85,64) 96.7->97; 97.66->98
            [(200, 0, 0), (200, 30, 200), (133, 96, 213)],  # R clips to 255: Y=103 (a uint8 wrap would give 36)
        ],
        np.uint8,
    )
    expected = np.array([[255, 255, 0], [0, 0, 0]], np.uint8)
    mask = roi.paper_roi_mask(image)
    assert mask.dtype == np.uint8 and mask.shape == (2, 3)
    np.testing.assert_array_equal(mask, expected)


def test_paper_roi_threshold_and_negative_offsets_are_parameters():
    image = np.array([[(45, 45, 45), (50, 120, 120)]], np.uint8)
    # Y of the first pixel after the paper offsets is exactly 98: kept only once the threshold is 99.
    np.testing.assert_array_equal(roi.paper_roi_mask(image, threshold=99), [[255, 0]])
    # A negative red offset clips at 0 instead of wrapping to 206: (0, 120, 120) has Y = 84.
    np.testing.assert_array_equal(roi.paper_roi_mask(image, offsets=(-100, 0, 0), threshold=85), [[255, 255]])


@pytest.mark.parametrize("kwargs", [{"offsets": (1, 2)}, {"offsets": (300, 0, 0)}, {"threshold": 300}])
def test_paper_roi_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        roi.paper_roi_mask(np.zeros((2, 2, 3), np.uint8), **kwargs)


def test_paper_roi_finds_nothing_on_a_smear_with_real_colours(smear):
    # The limitation docs/method.md describes: after the offsets every pixel of such a smear is brighter than 98.
    image, _ = smear()
    assert not roi.paper_roi_mask(image).any()


@pytest.mark.parametrize(
    "gains", [(1.0, 1.0, 1.0), (1.2, 0.95, 0.8), (0.8, 1.0, 1.25), (1.1, 0.85, 0.9), (0.6, 0.6, 0.6)]
)
@pytest.mark.parametrize("channel", ["blue_minus_red", "saturation"])
@pytest.mark.parametrize("normalize", ["grey_world", "percentile", "reinhard", "macenko"])
def test_adaptive_roi_finds_purple_cell_under_any_white_balance(smear, gains, channel, normalize):
    image, truth = smear(gains=gains)
    mask = roi.adaptive_roi_mask(image, channel=channel, normalize=normalize)
    assert set(np.unique(mask)) <= {0, 255}
    assert masks.iou(mask, truth) > 0.9


def test_adaptive_roi_is_empty_on_plain_background():
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(190, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    # Otsu always splits; min_separation rejects a split of pure noise.
    assert not roi.adaptive_roi_mask(image).any()
    assert roi.adaptive_roi_mask(image, min_separation=0.0, open_radius=0, close_radius=0).any()


def test_adaptive_roi_cleanup_parameters_act(smear):
    image, _ = smear()
    speck = image.copy()
    speck[5:8, 60:63] = (133, 96, 213)  # a 3x3 purple speck (a platelet-sized stain blob)
    raw = {"blur_sigma": 0.0, "open_radius": 0, "close_radius": 0}
    assert roi.adaptive_roi_mask(speck, **raw)[5:8, 60:63].all()
    assert not roi.adaptive_roi_mask(speck)[5:8, 60:63].any()  # the default opening removes it
    assert not roi.adaptive_roi_mask(speck, **raw, min_area=10)[5:8, 60:63].any()  # area 9 < 10
    assert roi.adaptive_roi_mask(speck, **raw, min_area=9)[5:8, 60:63].all()


def test_roi_mask_dispatches_and_rejects_unknown_names(smear):
    image, _ = smear()
    np.testing.assert_array_equal(roi.roi_mask(image, "paper", threshold=250), roi.paper_roi_mask(image, threshold=250))
    np.testing.assert_array_equal(roi.roi_mask(image), roi.adaptive_roi_mask(image))
    with pytest.raises(ValueError, match="method"):
        roi.roi_mask(image, "magic")
    with pytest.raises(ValueError, match="channel"):
        roi.roi_mask(image, "paper", channel="saturation")


def _chromaticity(image):
    rgb = image.astype(np.float64) + 1.0
    return rgb / rgb.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("method", ["grey_world", "percentile"])
def test_white_balance_undoes_a_colour_cast(smear, method):
    image, _ = smear(noise=0.0)
    cast, _ = smear(gains=(1.15, 0.9, 0.8), noise=0.0)
    assert np.abs(_chromaticity(image) - _chromaticity(cast)).max() > 0.05  # the cast is real
    # Grey world fixes colour but not overall brightness, so compare chromaticities.
    balanced, balanced_cast = color.white_balance(image, method), color.white_balance(cast, method)
    assert np.abs(_chromaticity(balanced) - _chromaticity(balanced_cast)).max() < 0.01


@pytest.mark.parametrize("method", ["grey_world", "percentile"])
def test_white_balance_lookup_table_equals_the_per_pixel_formula(method):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)
    image[..., 0] //= 2  # a cast, so the gains differ per channel and some values clip
    pixels = image.reshape(-1, 3).astype(np.float64)
    reference = pixels.mean(axis=0) if method == "grey_world" else np.percentile(pixels, 95.0, axis=0)
    gains = reference.mean() / reference if method == "grey_world" else 255.0 / reference
    expected = np.clip(image * gains + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(color.white_balance(image, method), expected)
    np.testing.assert_array_equal(
        color.white_balance(image[:, ::2], method),  # a strided view works too
        color.white_balance(np.ascontiguousarray(image[:, ::2]), method),
    )


def test_otsu_split_matches_opencv_on_uint8_and_handles_signed_values():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 10, 1000), rng.normal(180, 15, 500)]).clip(0, 255).astype(np.uint8)
    threshold, separation = color.otsu_split(values)
    expected, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert threshold == int(expected)
    assert 100 < separation < 140
    shifted, _ = color.otsu_split(values.astype(np.int16) - 200)  # same data, negative range
    assert shifted == threshold - 200
    assert color.otsu_split(np.full(10, 7)) == (7, 0.0)


def _dense_red_cell_field():
    """Packed pink red cells under a warm lamp, one purple white cell: (image, truth mask)."""
    rng = np.random.default_rng(3)
    image = np.empty((240, 320, 3), np.float64)
    image[:] = (205, 196, 172)
    truth = np.zeros((240, 320), np.uint8)
    for y in range(8, 240, 22):
        for x in range(8 + (y // 22 % 2) * 11, 320, 22):
            cv2.circle(image, (x, y), 10, (205, 110, 150), -1)
    cv2.circle(image, (160, 120), 14, (140, 105, 200), -1)
    cv2.circle(truth, (160, 120), 14, 255, -1)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("normalize", ["grey_world", "percentile"])
def test_adaptive_roi_on_a_dense_red_cell_field_takes_the_white_cell_not_the_glass(normalize):
    image, truth = _dense_red_cell_field()
    assert masks.iou(roi.adaptive_roi_mask(image, normalize=normalize), truth) > 0.9
    # Otsu over every pixel splits red cells from glass: the glass between them becomes "white cells".
    assert masks.iou(roi.adaptive_roi_mask(image, normalize=normalize, glass_percent=None), truth) < 0.1


def test_glass_level_is_the_channel_of_the_brightest_pixels():
    image = np.full((10, 10, 3), 100, np.uint8)
    image[:2] = 250  # the brightest 20 %
    values = np.arange(100, dtype=np.int16).reshape(10, 10)
    assert roi.glass_level(image, values, 10.0) == int(np.median(values[:2]))
    with pytest.raises(ValueError, match="glass_percent"):
        roi.glass_level(image, values, 0.0)
