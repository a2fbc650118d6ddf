"""The pure slide pipeline on tiny synthetic arrays."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from allmtl_spark.config.schema import RoiConfig, SegmentConfig
from allmtl_spark.segmentation import pipeline
from tests.segmentation.conftest import downscaled_probability, make_slide

pytestmark = pytest.mark.unit

ROI = RoiConfig()
UNET = SegmentConfig(
    mask_source="unet", min_cell_area_px=200, watershed_min_distance=6, crop_size=65, match_radius_px=10
)


def test_geometry_is_reported_in_original_pixels():
    image, truth = make_slide()
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, 0.5, truth_mask=truth)
    assert result.mask.shape == (120, 160) and result.isolated.shape == (120, 160, 3)  # stored at working scale
    assert len(result.cells) == 2
    (a, b) = result.cells
    assert a.centroid == pytest.approx((80, 70), abs=1.0) and b.centroid == pytest.approx((220, 150), abs=1.0)
    assert a.area == pytest.approx(np.pi * 22**2, rel=0.06) and b.area == pytest.approx(np.pi * 26**2, rel=0.06)
    assert a.bbox[0] == pytest.approx(80 - 22, abs=2) and a.bbox[2] == pytest.approx(45, abs=3)
    assert result.dice_vs_truth > 0.97 and result.truth_match.tp == 2 and result.truth_match.fp == 0


def test_crops_are_centred_isolated_and_padded():
    image, truth = make_slide(cells=((20, 20, 15), (200, 120, 18)))  # first cell close to the corner
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, 0.5)
    corner = result.cells[0].crop
    assert corner.shape == (65, 65, 3) and corner.dtype == np.uint8
    assert tuple(corner[32, 32]) != (0, 0, 0)  # the cell sits at the centre
    assert not corner[:10, :10].any()  # outside the slide: padded black
    assert not corner[32, 32 + 20 :].any()  # right of the cell: background set to black
    assert result.blast_match is None and result.cells[0].matches_blast is None  # no .xyc given


def test_blast_matches_and_touching_cells_split():
    image, truth = make_slide(cells=((100, 120, 24), (140, 120, 24), (260, 60, 20)))  # two overlapping
    result = pipeline.segment_slide(
        image, downscaled_probability(truth, 0.5), ROI, UNET, 0.5, blast_xy=[(100, 120), (300, 200)]
    )
    assert len(result.cells) == 3  # the overlapping pair split in two
    xs = sorted(round(c.centroid[0]) for c in result.cells)
    assert xs[0] == pytest.approx(98, abs=3) and xs[1] == pytest.approx(142, abs=3)
    assert (result.blast_match.tp, result.blast_match.fp, result.blast_match.fn) == (1, 2, 1)
    flags = {round(c.centroid[0] / 10): c.matches_blast for c in result.cells}
    assert flags[10] is True and sum(flags.values()) == 1


def test_roi_mask_source_finds_the_stained_cells_without_a_model():
    image, truth = make_slide()
    cfg = SegmentConfig(mask_source="roi", min_cell_area_px=200, crop_size=65)
    result = pipeline.segment_slide(image, None, ROI, cfg, 0.5, truth_mask=truth)
    assert len(result.cells) == 2 and result.dice_vs_truth > 0.9 and result.roi_dice_vs_truth > 0.9


def test_specks_are_dropped_and_an_empty_mask_gives_no_cells():
    image, truth = make_slide(cells=((80, 70, 22), (250, 40, 6)))  # the second (area ~113 px) is a speck
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, 0.5)
    assert [round(c.centroid[0]) for c in result.cells] == [80]
    empty = pipeline.segment_slide(image, np.zeros((120, 160), np.float32), ROI, UNET, 0.5)
    assert empty.cells == () and not empty.mask.any() and not empty.isolated.any()


def test_probability_of_the_wrong_size_is_refused():
    image, _ = make_slide()
    with pytest.raises(ValueError, match="working size"):
        pipeline.segment_slide(image, np.zeros((240, 320), np.float32), ROI, UNET, 0.5)
    with pytest.raises(ValueError, match="working size"):
        pipeline.segment_slide(image, None, ROI, UNET, 0.5)


def test_overlap_scores_compare_at_the_original_size():
    _, truth = make_slide()
    probability = downscaled_probability(truth, 0.5)
    perfect = pipeline.compute_overlap_scores(probability, np.zeros((120, 160), np.uint8), truth)
    assert perfect.dice > 0.97 and perfect.iou > 0.94 and perfect.roi_dice == 0.0
    shifted = pipeline.compute_overlap_scores(np.roll(probability, 8, axis=1), np.zeros((120, 160), np.uint8), truth)
    assert shifted.dice < 0.8


def test_png_round_trip_keeps_rgb_order_and_garbage_does_not_decode():
    image, truth = make_slide()
    assert np.array_equal(pipeline.decode_rgb(pipeline.encode_png(image)), image)
    assert np.array_equal(pipeline.decode_mask(pipeline.encode_png(truth)), truth)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert np.abs(pipeline.decode_rgb(jpeg.tobytes()).astype(int) - image).mean() < 3  # JPEG is RGB after decode
    with pytest.raises(ValueError, match="cannot decode"):
        pipeline.decode_rgb(b"not an image at all")


def test_working_size_and_downscale():
    assert pipeline.working_size(2592, 1944, 0.5) == (1296, 972)
    assert pipeline.downscale(np.zeros((240, 320, 3), np.uint8), 0.25).shape == (60, 80, 3)
    with pytest.raises(ValueError):
        pipeline.working_size(10, 10, 0.0)


def test_pipeline_imports_no_tensorflow_spark_or_pandas():
    code = (
        "import sys\nimport allmtl_spark.segmentation.pipeline\n"
        "print(sorted(m for m in ('tensorflow', 'pyspark', 'pandas', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
