import cv2
import numpy as np
import pytest

from allmtl_spark.transforms import masks

pytestmark = pytest.mark.unit


def _discs(shape, centres, radius):
    mask = np.zeros(shape, np.uint8)
    for centre in centres:
        cv2.circle(mask, centre, radius, 255, -1)
    return mask


def test_fill_holes_fills_an_enclosed_hole_but_not_an_open_notch():
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 255
    mask[3, 3] = 0  # enclosed hole
    mask[1, 3] = 0  # notch open to the background
    out = masks.fill_holes(mask)
    assert out.dtype == np.uint8 and out[3, 3] == 255 and out[1, 3] == 0
    assert set(np.unique(out)) == {0, 255}


def test_fill_holes_matches_scipy_binary_fill_holes_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for _ in range(100):  # random sizes and densities: holes touching the border, nested, diagonal
        mask = rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform(0.2, 0.8)
        expected = np.where(ndimage.binary_fill_holes(mask), 255, 0)
        np.testing.assert_array_equal(masks.fill_holes(mask.astype(np.uint8) * 7), expected)


def test_remove_small_objects_keeps_components_of_at_least_min_area():
    mask = np.zeros((10, 10), np.uint8)
    mask[0:3, 0:3] = 255  # area 9
    mask[6:8, 6:8] = 255  # area 4
    mask[0, 9] = 255  # area 1
    out = masks.remove_small_objects(mask, min_area=4)
    assert out[0:3, 0:3].all() and out[6:8, 6:8].all() and out[0, 9] == 0
    assert not masks.remove_small_objects(mask, min_area=5)[6:8, 6:8].any()


def test_split_touching_separates_two_overlapping_discs():
    mask = _discs((60, 80), [(25, 30), (45, 30)], 12)
    assert masks.label_components(mask).max() == 1  # one blob before splitting
    labels = masks.split_touching(mask, min_distance=4)
    records = masks.cell_records(labels)
    assert len(records) == 2
    assert [round(r.centroid[0]) for r in records] == [24, 46] and all(round(r.centroid[1]) == 30 for r in records)
    assert abs(records[0].area - records[1].area) <= 0.02 * records[0].area  # split along the neck
    assert masks.label_components(labels > 0).max() == 2  # the cut holds under 8-connectivity


def test_split_touching_diagonal_pair_and_single_cells():
    diagonal = masks.split_touching(_discs((80, 80), [(25, 25), (40, 42)], 12), min_distance=4)
    assert diagonal.max() == 2 and masks.label_components(diagonal > 0).max() == 2
    single = _discs((60, 80), [(20, 20), (60, 40)], 10)
    labels = masks.split_touching(single, min_distance=4)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, single > 0)  # nothing to split: no pixel lost


def test_cell_records_bbox_centroid_area_exact():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 2:6] = 1  # rows 1-2, cols 2-5
    labels[4, 0] = 2
    first, second = masks.cell_records(labels)
    assert first == masks.CellRecord(label=1, bbox=(2, 1, 4, 2), centroid=(3.5, 1.5), area=8)
    assert second == masks.CellRecord(label=2, bbox=(0, 4, 1, 1), centroid=(0.0, 4.0), area=1)


def test_crop_cell_is_centred_and_padded_at_borders():
    image = np.zeros((20, 30, 3), np.uint8)
    image[10, 15] = (255, 0, 0)
    crop = masks.crop_cell(image, (15.2, 9.6), size=7)  # rounds to (15, 10)
    assert crop.shape == (7, 7, 3) and crop.dtype == np.uint8
    assert tuple(crop[3, 3]) == (255, 0, 0) and crop.sum() == 255

    image[:] = 50
    corner = masks.crop_cell(image, (0, 0), size=5, fill=(1, 2, 3))
    assert (corner[2:, 2:] == 50).all()  # the image's top-left 3x3 lands bottom-right of centre
    assert (corner[:2, :] == (1, 2, 3)).all() and (corner[:, :2] == (1, 2, 3)).all()
    outside = masks.crop_cell(image[..., 0], (-10, -10), size=4, fill=9)
    assert outside.shape == (4, 4) and (outside == 9).all()


def test_extract_cells_returns_records_and_centred_crops():
    mask = _discs((60, 100), [(25, 30), (45, 30)], 12)
    mask[2:4, 90:92] = 255  # a speck below min_area
    image = np.dstack([mask, np.zeros_like(mask), np.zeros_like(mask)])
    records, crops = masks.extract_cells(image, mask, crop_size=33, min_area=20, min_distance=4)
    assert len(records) == 2 and crops.shape == (2, 33, 33, 3) and crops.dtype == np.uint8
    assert all(crop[16, 16, 0] == 255 for crop in crops)  # each crop centred on its cell
    _, isolated = masks.extract_cells(image, mask, crop_size=33, min_area=20, min_distance=4, isolate=True)
    assert isolated[0].sum() < crops[0].sum()  # the neighbour is blacked out
    assert isolated[0][..., 0].sum() == records[0].area * 255
    unsplit, _ = masks.extract_cells(image, mask, crop_size=33, min_area=20, split=False)
    assert len(unsplit) == 1


def test_match_detections_is_one_to_one_and_optimal():
    # Greedy nearest matching pairs found (0, 0) with truth (1, 0) and leaves found (2.5, 0) unmatched;
    # the Hungarian assignment matches both.
    result = masks.match_detections([(0, 0), (2.5, 0)], [(1, 0), (-1.5, 0)], radius=2.0)
    assert result == masks.MatchResult(tp=2, fp=0, fn=0, recall=1.0, precision=1.0)
    # Two detections of one cell count once; a far detection is a false positive.
    result = masks.match_detections([(10, 10), (11, 10), (50, 50)], [(10, 11)], radius=3.0)
    assert (result.tp, result.fp, result.fn) == (1, 2, 0) and result.precision == pytest.approx(1 / 3)
    assert masks.match_detections([(0, 0)], [(3, 4)], radius=5.0).tp == 1  # distance == radius matches
    assert masks.match_detections([(0, 0)], [(3, 4)], radius=4.99).tp == 0


def test_match_detections_empty_conventions():
    assert masks.match_detections([], [], 5.0) == masks.MatchResult(0, 0, 0, 1.0, 1.0)
    assert masks.match_detections([], [(1, 1)], 5.0) == masks.MatchResult(0, 0, 1, 0.0, 1.0)
    assert masks.match_detections([(1, 1)], [], 5.0) == masks.MatchResult(0, 1, 0, 1.0, 0.0)


def test_dice_and_iou_values_and_empty_convention():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[0, 0:2] = 255  # 2 px
    b[0, 1:4] = 255  # 3 px, 1 shared
    assert masks.dice(a, b) == pytest.approx(2 * 1 / 5)
    assert masks.iou(a, b) == pytest.approx(1 / 4)
    empty = np.zeros((4, 4), np.uint8)
    assert masks.dice(empty, empty) == 1.0 and masks.iou(empty, empty) == 1.0
    assert masks.dice(a, empty) == 0.0 and masks.iou(a, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        masks.dice(a, np.zeros((3, 4), np.uint8))


def test_split_touching_cuts_unequal_cells_at_the_neck():
    # radius 12 at x=30 and 18 at x=58: the circles cross at x = 40.8, inside the small cell's extent.
    labels = masks.split_touching(
        _discs((80, 100), [(30, 40), (58, 40)], 12) | _discs((80, 100), [(58, 40)], 18), min_distance=4
    )
    small, large = sorted(masks.cell_records(labels), key=lambda r: r.area)
    assert small.area == pytest.approx(np.pi * 12**2, rel=0.08) and small.centroid[0] == pytest.approx(30, abs=1)
    assert large.centroid[0] == pytest.approx(58.5, abs=1)
    boundary = np.flatnonzero((labels[40] == 0) & (_discs((80, 100), [(30, 40), (58, 40)], 12)[40] > 0))
    assert [x for x in boundary if 35 < x < 50] and all(39 <= x <= 43 for x in boundary if 35 < x < 50)


def test_match_detections_reports_which_detections_matched():
    result = masks.match_detections([(0, 0), (50, 50), (100, 0)], [(1, 1), (99, 1)], radius=5.0)
    assert result.found_matched == (True, False, True) and result.tp == 2
