import cv2
import numpy as np
import pytest

from allmtl_spark.config import ConfigError
from allmtl_spark.training.augment import AugmentParams, copy_rng
from allmtl_spark.training.examples import ViewSpec, build_view, central_cell_mask
from allmtl_spark.training.job import cell_tile_px
from allmtl_spark.training.views import cell_extent, cell_tiles, letterbox, montage, zoom_cells

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


def _tile_width(view, row):
    return int((view[row, :, 2] > 0).sum())


def test_fixed_tile_keeps_absolute_size_across_slides():
    # Two "slides" of one cell each, a small (radius 10) and a large (radius 20) one: zooming fills every
    # tile whatever the cell's size; a fixed tile shows the large cell twice as wide as the small one.
    small, large = [_png(_disc_crop(10))], [_png(_disc_crop(20))]
    zoom = [build_view(s, ViewSpec("montage", 96, 1), None, None) for s in (small, large)]
    assert abs(_tile_width(zoom[0], 48) - _tile_width(zoom[1], 48)) <= 2
    fixed = [build_view(s, ViewSpec("montage", 96, 1, tile_px=60), None, None) for s in (small, large)]
    widths = [_tile_width(f, 48) for f in fixed]
    assert 1.8 < widths[1] / widths[0] < 2.2 and widths[1] < 96 * 0.8


def test_fixed_tile_cell_view_matches_montage_scale():
    crop = np.full((101, 101, 3), (190, 170, 175), np.uint8)
    cv2.circle(crop, (50, 50), 10, (120, 90, 200), -1)
    cell = build_view([_png(crop)], ViewSpec("cell", 96, 2, tile_px=60), None, None)
    tile = build_view([_png(_disc_crop(10))], ViewSpec("montage", 96, 2, tile_px=60), None, None)
    # the cell sits in a 48 px tile centred on black, at the montage tile's scale (20 px of 60 -> 16 of 48)
    assert abs(_tile_width(cell, 48) - _tile_width(tile, 24)) <= 1 and 14 <= _tile_width(cell, 48) <= 18


def test_cell_tiles_rejects_a_degenerate_side():
    with pytest.raises(ValueError, match="at least 2 pixels"):
        cell_tiles([_disc_crop(5)], 1)


def test_cell_tile_px_from_micrometres_and_a_clear_error_without_pixel_size():
    assert cell_tile_px(24.0, 0.31, "seg") == 77 and cell_tile_px(None, 0.31, "seg") is None
    assert cell_tile_px(None, None, "seg") is None  # zooming needs no pixel size
    with pytest.raises(ConfigError, match=r"train\.cell_tile_um=24\.0 needs the crops' pixel size.*'seg'"):
        cell_tile_px(24.0, None, "seg")


def test_unknown_view_kind():
    with pytest.raises(ValueError, match="unknown view kind"):
        build_view([_png(_disc_crop(5))], ViewSpec("tiles", 96), None, None)
