"""render_slide / render_cell_crop: determinism, shapes, cell content and masks."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from allmtl_spark.synth.smear import SmearParams, render_cell_crop, render_slide

W, H = 320, 240
SMALL = SmearParams(rbc_diameter_px=(16.0, 24.0))  # keeps a full-size slide's proportions at 320x240


def _slide(seed: int, fab_class: str = "L2", params: SmearParams = SMALL, width: int = W, height: int = H):
    return render_slide(np.random.default_rng(seed), width, height, fab_class, params)


@pytest.mark.unit
def test_same_seed_same_slide_different_seed_different():
    a, b, c = _slide(1), _slide(1), _slide(2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.cells == b.cells
    assert not np.array_equal(a.image, c.image)
    crop_a = render_cell_crop(np.random.default_rng(5), 96, "L3", SMALL)
    crop_b = render_cell_crop(np.random.default_rng(5), 96, "L3", SMALL)
    crop_c = render_cell_crop(np.random.default_rng(6), 96, "L3", SMALL)
    assert np.array_equal(crop_a.image, crop_b.image)
    assert not np.array_equal(crop_a.image, crop_c.image)


@pytest.mark.unit
def test_slide_shapes_dtypes_and_binary_mask():
    s = _slide(3)
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (H, W) and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask)) <= {0, 255}
    assert s.fab_class == "L2"


@pytest.mark.unit
@pytest.mark.parametrize("fab_class", ["normal", "L1", "L2", "L3"])
def test_slide_carries_its_class_blasts_and_lymphocytes_only(fab_class):
    for seed in range(5):
        s = _slide(seed, fab_class)
        kinds = {c.kind for c in s.cells}
        assert kinds <= {fab_class, "normal"}
        assert all(c.is_blast == (c.kind != "normal") for c in s.cells)
        if fab_class == "normal":
            assert s.blasts == []
        else:
            assert len(s.blasts) >= 1


@pytest.mark.unit
def test_blast_fraction_and_white_cell_count_are_honoured():
    params = dataclasses.replace(SMALL, white_cells_per_slide=(4, 4), blast_fraction=(0.5, 0.5))
    for seed in range(4):
        s = _slide(seed, "L1", params, 640, 480)
        assert len(s.cells) == 4
        assert len(s.blasts) == 2
    all_blasts = dataclasses.replace(params, blast_fraction=(1.0, 1.0))
    assert len(_slide(0, "L3", all_blasts, 640, 480).blasts) == 4


@pytest.mark.unit
def test_masks_cover_exactly_the_white_cells():
    for seed, fab_class in enumerate(["normal", "L1", "L2", "L3"] * 2):
        s = _slide(seed, fab_class, width=480, height=360)
        assert s.cells
        expected = np.zeros_like(s.mask)
        for c in s.cells:
            assert s.mask[int(round(c.cy)), int(round(c.cx))] == 255  # centroid inside the mask
            cv2.circle(expected, (int(round(c.cx)), int(round(c.cy))), int(np.ceil(c.radius * 1.2)) + 1, 255, -1)
            nominal = np.pi * c.radius**2
            y, x = np.ogrid[: s.mask.shape[0], : s.mask.shape[1]]
            near = (x - c.cx) ** 2 + (y - c.cy) ** 2 <= (c.radius * 1.3) ** 2
            assert 0.8 * nominal < (s.mask[near] > 0).sum() < 1.25 * nominal
        assert not np.any(s.mask[expected == 0])  # nothing masked away from the cells


@pytest.mark.unit
def test_white_cells_are_stained_darker_than_the_glass_and_blue():
    for seed in range(4):
        s = _slide(seed, "L1")
        inside = s.image[s.mask > 0].astype(float)
        outside = s.image[s.mask == 0].astype(float)
        assert inside.sum(axis=1).mean() < outside.sum(axis=1).mean() - 30
        # RGB order: purple-blue nuclei and blue cytoplasm have more blue than red, red cells the reverse.
        assert inside[:, 2].mean() > inside[:, 0].mean() + 15


@pytest.mark.unit
def test_white_cells_scale_with_red_cell_diameter():
    def mean_radius(d: float) -> float:
        params = dataclasses.replace(SMALL, rbc_diameter_px=(d, d))
        return float(np.mean([c.radius for seed in range(6) for c in _slide(seed, "normal", params, 640, 480).cells]))

    ratio = mean_radius(24.0) / mean_radius(12.0)
    assert 1.7 < ratio < 2.3
    # Mature lymphocytes are 1.1-1.35 red cells across.
    assert 1.1 <= 2 * mean_radius(12.0) / 12.0 <= 1.35


@pytest.mark.unit
@pytest.mark.parametrize("fab_class", ["normal", "L1", "L2", "L3"])
def test_crop_has_one_centred_cell_and_its_mask(fab_class):
    size = 257
    crop = render_cell_crop(np.random.default_rng(9), size, fab_class, SmearParams())
    assert crop.image.shape == (size, size, 3) and crop.mask.shape == (size, size)
    assert len(crop.cells) == 1
    cell = crop.cells[0]
    assert cell.kind == fab_class and cell.is_blast == (fab_class != "normal")
    assert abs(cell.cx - size / 2) <= 1.0 and abs(cell.cy - size / 2) <= 1.0
    n, _ = cv2.connectedComponents((crop.mask > 0).astype(np.uint8))
    assert n == 2  # background + one cell
    ys, xs = np.nonzero(crop.mask)
    assert abs(xs.mean() - size / 2) < 4 and abs(ys.mean() - size / 2) < 4


@pytest.mark.unit
def test_crop_cell_fits_even_in_a_small_crop():
    crop = render_cell_crop(np.random.default_rng(0), 64, "L2", SmearParams())
    ys, xs = np.nonzero(crop.mask)
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < 63 and ys.max() < 63


@pytest.mark.unit
def test_unknown_class_is_rejected():
    with pytest.raises(ValueError, match="L4"):
        _slide(0, "L4")
    with pytest.raises(ValueError, match="blast"):
        render_cell_crop(np.random.default_rng(0), 96, "blast", SMALL)


@pytest.mark.unit
def test_nonsense_params_are_rejected():
    with pytest.raises(ValueError, match="rbc_diameter_px"):
        SmearParams(rbc_diameter_px=(40.0, 20.0))
    with pytest.raises(ValueError, match="white_cells_per_slide"):
        SmearParams(white_cells_per_slide=(0, 3))
    with pytest.raises(ValueError, match="fractions"):
        SmearParams(blast_fraction=(0.5, 1.5))
