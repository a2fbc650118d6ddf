import cv2
import numpy as np
import pytest

from allmtl_spark.training.augment import AugmentParams, copy_rng
from allmtl_spark.training.examples import ViewSpec, build_view, central_cell_mask
from allmtl_spark.training.views import cell_extent, letterbox, montage, zoom_cells

pytestmark = pytest.mark.unit


def _disc_crop(radius, size=101, colour=(120, 90, 200)):
    crop = np.zeros((size, size, 3), np.uint8)
    cv2.circle(crop, (size // 2, size // 2), radius, colour, -1)
    return crop


def _png(image):
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_letterbox_keeps_aspect_and_centres():
    image = np.full((40, 80, 3), 255, np.uint8)
    out = letterbox(image, 64)
    assert out.shape == (64, 64, 3)
    rows = np.nonzero(out[:, 32, 0])[0]
    assert (rows.min(), rows.max()) == (16, 47)  # 32 rows tall, centred


def test_zoom_keeps_relative_sizes_and_fills_tile():
    small, large = _disc_crop(10), _disc_crop(30)
    assert cell_extent(large) == 61
    zoomed = zoom_cells([small, large])
    assert zoomed[0].shape == zoomed[1].shape == (67, 67, 3)
    area = [(z[..., 2] > 0).sum() for z in zoomed]
    assert 7 < area[1] / area[0] < 11  # (30/10)^2 = 9: relative size kept


def test_montage_places_tiles_row_major_and_leaves_missing_black():
    red, green = np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)
    red[..., 0], green[..., 1] = 255, 255
    out = montage([red, green, red], grid=2, size=20)
    assert out[5, 5, 0] == 255 and out[5, 15, 1] == 255 and out[15, 5, 0] == 255
    assert out[15, 15].sum() == 0


def test_cell_view_isolates_central_cell_on_black():
    crop = np.full((101, 101, 3), (190, 170, 175), np.uint8)  # pinkish background
    cv2.circle(crop, (50, 50), 20, (120, 90, 200), -1)
    cv2.circle(crop, (10, 10), 8, (120, 90, 200), -1)  # another cell at the corner
    mask = central_cell_mask(crop)
    assert mask[50, 50] == 255 and mask[10, 10] == 0
    out = build_view([_png(crop)], ViewSpec("cell", 80), None, None)
    assert out.shape == (80, 80, 3) and out[0, 0].sum() == 0 and out[40, 40, 2] > 150


def test_montage_view_augmented_copy_differs_but_keeps_shape():
    sources = [_png(_disc_crop(r)) for r in (10, 20, 30)]
    original = build_view(sources, ViewSpec("montage", 96, 2), None, None)
    augmented = build_view(sources, ViewSpec("montage", 96, 2), copy_rng(1, "k", 1), AugmentParams())
    assert original.shape == augmented.shape == (96, 96, 3)
    assert not np.array_equal(original, augmented)
    assert original[72:, 72:].sum() == 0  # 3 cells: the 4th tile is black


def test_unknown_view_kind():
    with pytest.raises(ValueError, match="unknown view kind"):
        build_view([_png(_disc_crop(5))], ViewSpec("tiles", 96), None, None)
