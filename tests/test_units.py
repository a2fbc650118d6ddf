import pytest

from allmtl_spark import units

pytestmark = pytest.mark.unit


def test_lengths_and_areas_convert_both_ways():
    assert units.um_to_px(7.75, 0.155) == pytest.approx(50.0)
    assert units.px_to_um(50.0, 0.155) == pytest.approx(7.75)
    assert units.um2_to_px2(100.0, 0.5) == pytest.approx(400.0)
    assert units.px2_to_um2(400.0, 0.5) == pytest.approx(100.0)


def test_resample_factor_shrinks_fine_images_and_grows_coarse_ones():
    assert units.resample_factor(0.1, 0.3) == pytest.approx(1 / 3)
    assert units.resample_factor(0.6, 0.3) == pytest.approx(2.0)


def test_allidb2_crop_is_257_px_at_allidb1_scale():
    assert units.um_to_px(units.ALLIDB2_CROP_SIZE_UM, units.ALLIDB1_PIXEL_SIZE_UM) == pytest.approx(257.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.001, 50.0, float("nan"), float("inf")])
def test_impossible_pixel_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="micrometres-per-pixel"):
        units.um_to_px(10.0, bad)
