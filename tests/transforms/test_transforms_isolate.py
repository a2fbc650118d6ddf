import cv2
import numpy as np
import pytest

from allmtl_spark.transforms import isolate

pytestmark = pytest.mark.unit

BACKGROUND = (193, 194, 189)
RED_CELL = (186, 169, 175)
NUCLEUS = (133, 96, 213)
CYTOPLASM = (170, 175, 215)


def test_isolate_cells_blacks_out_everything_outside_the_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (4, 5, 3), dtype=np.uint8)  # no zero pixel, so black can only come from masking
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 2:4] = 255
    out = isolate.isolate_cells(image, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[1:3, 2:4], image[1:3, 2:4])
    assert (out[mask == 0] == 0).all()


def test_isolate_cells_rejects_mismatched_mask_and_non_uint8_images():
    with pytest.raises(ValueError, match="mask"):
        isolate.isolate_cells(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        isolate.isolate_cells(np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.uint8))


def _white_cell_with_red_overlap(gains=(1.0, 1.0, 1.0)):
    """64x64: a blast (nucleus r=10 in blue cytoplasm r=16) overlapped by a red cell on its right.

    Returns the image, the white-cell mask (the whole r=16 disc, red overlap included), the blast
    region (the disc minus the red cell) and the red-cell part inside the mask.
    """
    image = np.empty((64, 64, 3), np.float64)
    image[:] = BACKGROUND
    blast, red = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    cv2.circle(blast, (30, 32), 16, 255, -1)
    cv2.circle(red, (50, 32), 10, 255, -1)
    image[blast > 0] = CYTOPLASM
    cv2.circle(image, (30, 32), 10, NUCLEUS, -1)
    image[red > 0] = RED_CELL  # the red cell lies on top of the cytoplasm
    image = np.clip(image * np.asarray(gains), 0, 255).astype(np.uint8)
    kept_truth = (blast > 0) & (red == 0)
    return image, blast, kept_truth, (blast > 0) & (red > 0)


@pytest.mark.parametrize("gains", [(1.0, 1.0, 1.0), (1.15, 0.95, 0.85), (0.85, 1.0, 1.15)])
def test_blue_channel_mask_keeps_nucleus_and_cytoplasm_and_drops_red_cell_parts(gains):
    image, cell_mask, kept_truth, red_part = _white_cell_with_red_overlap(gains)
    kept = isolate.blue_channel_mask(image, cell_mask) > 0
    assert red_part.sum() > 50 and not (kept & red_part).any()
    assert (kept & kept_truth).sum() >= 0.95 * kept_truth.sum()
    assert not (kept & (cell_mask == 0)).any()  # a subset of the white-cell mask


def test_blue_channel_literal_reading_with_otsu_inside_the_mask():
    image, cell_mask, kept_truth, red_part = _white_cell_with_red_overlap()
    kept = isolate.blue_channel_mask(image, cell_mask, channel="blue", threshold=None) > 0
    assert not (kept & red_part).any()
    assert (kept & kept_truth).sum() >= 0.95 * kept_truth.sum()


def test_isolate_lymphoblast_turns_red_cell_parts_black_and_keeps_the_blast():
    image, cell_mask, kept_truth, red_part = _white_cell_with_red_overlap()
    out = isolate.isolate_lymphoblast(image, cell_mask, open_radius=0)
    assert (out[red_part] == 0).all()
    assert (out[cell_mask == 0] == 0).all()
    np.testing.assert_array_equal(out[kept_truth], image[kept_truth])


def test_blue_channel_mask_rejects_unknown_channel():
    image, cell_mask, _, _ = _white_cell_with_red_overlap()
    with pytest.raises(ValueError, match="channel"):
        isolate.blue_channel_mask(image, cell_mask, channel="green")
