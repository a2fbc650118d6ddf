"""The pure slide pipeline on tiny synthetic arrays."""

from __future__ import annotations

import dataclasses
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
# The drawn slides are 0.155 um per pixel; the pipeline works at 0.31 (half the size).
PX, WORK = 0.155, 0.31
UNET = SegmentConfig(
    mask_source="unet", min_cell_area_um2=4.8, watershed_min_distance_um=0.93, crop_size_um=10.2, match_radius_um=1.55
)


def test_geometry_is_reported_in_original_pixels_and_micrometres():
    image, truth = make_slide()
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, PX, WORK, truth_mask=truth)
    assert result.mask.shape == (120, 160) and result.isolated.shape == (120, 160, 3)  # stored at working size
    assert result.scale == 0.5 and result.working_pixel_size_um == WORK
    assert len(result.cells) == 2
    (a, b) = result.cells
    assert a.centroid == pytest.approx((80, 70), abs=1.0) and b.centroid == pytest.approx((220, 150), abs=1.0)
    assert a.area == pytest.approx(np.pi * 22**2, rel=0.08) and b.area == pytest.approx(np.pi * 26**2, rel=0.08)
    assert a.area_um2 == pytest.approx(np.pi * (22 * PX) ** 2, rel=0.08)
    assert a.bbox[0] == pytest.approx(80 - 22, abs=2) and a.bbox[2] == pytest.approx(45, abs=3)
    assert result.dice_vs_truth > 0.97 and result.truth_match.tp == 2 and result.truth_match.fp == 0


def test_crops_are_centred_isolated_and_padded():
    image, truth = make_slide(cells=((20, 20, 15), (200, 120, 18)))  # first cell close to the corner
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, PX, WORK)
    corner = result.cells[0].crop
    assert corner.shape == (33, 33, 3) and corner.dtype == np.uint8  # 10.2 um at 0.31 um/px, odd
    assert tuple(corner[16, 16]) != (0, 0, 0)  # the cell sits at the centre
    assert not corner[:5, :5].any()  # outside the slide: padded black
    assert not corner[16, 16 + 10 :].any()  # right of the cell: background set to black
    assert result.blast_match is None and result.cells[0].matches_blast is None  # no .xyc given


def test_blast_matches_and_touching_cells_split():
    image, truth = make_slide(cells=((100, 120, 24), (140, 120, 24), (260, 60, 20)))  # two overlapping
    result = pipeline.segment_slide(
        image, downscaled_probability(truth, 0.5), ROI, UNET, PX, WORK, blast_xy=[(100, 120), (300, 200)]
    )
    assert len(result.cells) == 3  # the overlapping pair split in two
    xs = sorted(round(c.centroid[0]) for c in result.cells)
    assert xs[0] == pytest.approx(98, abs=3) and xs[1] == pytest.approx(142, abs=3)
    assert (result.blast_match.tp, result.blast_match.fp, result.blast_match.fn) == (1, 2, 1)
    flags = {round(c.centroid[0] / 10): c.matches_blast for c in result.cells}
    assert flags[10] is True and sum(flags.values()) == 1


def test_roi_mask_source_finds_the_stained_cells_without_a_model():
    image, truth = make_slide()
    cfg = SegmentConfig(mask_source="roi", min_cell_area_um2=4.8, crop_size_um=10.2)
    result = pipeline.segment_slide(image, None, ROI, cfg, PX, WORK, truth_mask=truth)
    assert len(result.cells) == 2 and result.dice_vs_truth > 0.9 and result.roi_dice_vs_truth > 0.9


@pytest.mark.parametrize("normalize", ["reinhard", "macenko"])
def test_roi_and_isolation_run_on_the_stain_normalised_slide(normalize):
    image, truth = make_slide()
    cfg = SegmentConfig(mask_source="roi", min_cell_area_um2=4.8, crop_size_um=10.2)
    for power in (0.6, 1.8):  # another lab's stain: the same slide at 0.6x and 1.8x the optical density
        other = np.clip(256 * ((image.astype(np.float64) + 1) / 256) ** power - 1, 0, 255).astype(np.uint8)
        result = pipeline.segment_slide(other, None, RoiConfig(normalize=normalize), cfg, PX, WORK, truth_mask=truth)
        assert len(result.cells) == 2 and result.dice_vs_truth > 0.9


def test_unet_input_is_the_configured_normalisation():
    from allmtl_spark.transforms import stain

    image, _ = make_slide()
    for method in ("grey_world", "reinhard", "macenko"):
        assert np.array_equal(pipeline.unet_input(image, method), stain.normalize_colour(image, method))
    assert pipeline.unet_input(image, "none") is image
    assert not np.array_equal(pipeline.unet_input(image, "reinhard"), pipeline.unet_input(image, "macenko"))


def test_specks_are_dropped_and_an_empty_mask_gives_no_cells():
    image, truth = make_slide(cells=((80, 70, 22), (250, 40, 6)))  # the second (2.7 um2) is a speck
    result = pipeline.segment_slide(image, downscaled_probability(truth, 0.5), ROI, UNET, PX, WORK)
    assert [round(c.centroid[0]) for c in result.cells] == [80]
    empty = pipeline.segment_slide(image, np.zeros((120, 160), np.float32), ROI, UNET, PX, WORK)
    assert empty.cells == () and not empty.mask.any() and not empty.isolated.any()


def test_regions_without_a_confident_core_are_dropped():
    # Two cells of one size: the U-Net is sure of the first (p 1.0), only lukewarm over the second
    # (p 0.8 everywhere, like a platelet clump or the gaps of a packed red-cell layer).
    image, truth = make_slide()
    probability = downscaled_probability(truth, 0.5)
    probability[:, 80:] *= 0.8  # the second cell (x 220 at 0.155 um/px) lies right of working x 80
    found = pipeline.segment_slide(image, probability, ROI, UNET, PX, WORK)  # the default checks
    assert [round(c.centroid[0]) for c in found.cells] == [80]
    off = dataclasses.replace(UNET, min_confident_fraction=0.0)
    assert len(pipeline.segment_slide(image, probability, ROI, off, PX, WORK).cells) == 2
    roi = dataclasses.replace(UNET, mask_source="roi")  # no probabilities: nothing to check
    assert len(pipeline.segment_slide(image, probability, ROI, roi, PX, WORK).cells) == 2


def test_probability_of_the_wrong_size_is_refused():
    image, _ = make_slide()
    with pytest.raises(ValueError, match="working size"):
        pipeline.segment_slide(image, np.zeros((240, 320), np.float32), ROI, UNET, PX, WORK)
    with pytest.raises(ValueError, match="working size"):
        pipeline.segment_slide(image, None, ROI, UNET, PX, WORK)


def test_overlap_scores_compare_at_the_working_size():
    _, truth = make_slide()
    probability = downscaled_probability(truth, 0.5)
    small_truth = (probability > 0.5).astype(np.uint8) * 255
    perfect = pipeline.compute_overlap_scores(probability, np.zeros((120, 160), np.uint8), small_truth)
    assert perfect.dice == 1.0 and perfect.iou == 1.0 and perfect.roi_dice == 0.0
    shifted = pipeline.compute_overlap_scores(
        np.roll(probability, 4, axis=1), np.zeros((120, 160), np.uint8), small_truth
    )
    assert shifted.dice < 0.8


def test_png_round_trip_keeps_rgb_order_and_garbage_does_not_decode():
    image, truth = make_slide()
    assert np.array_equal(pipeline.decode_rgb(pipeline.encode_png(image)), image)
    assert np.array_equal(pipeline.decode_mask(pipeline.encode_png(truth)), truth)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert np.abs(pipeline.decode_rgb(jpeg.tobytes()).astype(int) - image).mean() < 3  # JPEG is RGB after decode
    with pytest.raises(ValueError, match="cannot decode"):
        pipeline.decode_rgb(b"not an image at all")


def test_working_size_follows_the_pixel_sizes_both_ways():
    assert pipeline.working_shape(2592, 1944, 0.155, 0.31) == (1296, 972)
    assert pipeline.to_working(np.zeros((240, 320, 3), np.uint8), 0.0775, 0.31).shape == (60, 80, 3)
    assert pipeline.to_working(np.zeros((240, 320, 3), np.uint8), 0.62, 0.31).shape == (480, 640, 3)
    with pytest.raises(ValueError, match="micrometres-per-pixel"):
        pipeline.working_shape(10, 10, 0.0, 0.31)


@pytest.mark.parametrize("magnification", [0.5, 2.0])
def test_one_slide_at_two_magnifications_gives_the_same_cells_in_micrometres(magnification):
    """The same field photographed at another magnification: same cells, same crops, positions scaled."""
    image, truth = make_slide(size=(480, 640), cells=((160, 140, 44), (440, 300, 52)), red=((320, 120, 28),))
    size = (round(640 * magnification), round(480 * magnification))
    other = cv2.resize(image, size, interpolation=cv2.INTER_AREA if magnification < 1 else cv2.INTER_LINEAR)
    other_truth = cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST)
    base_px = 0.1
    results = []
    for img, tru, px in ((image, truth, base_px), (other, other_truth, base_px / magnification)):
        factor = px / WORK
        probability = downscaled_probability(tru, factor)
        results.append(pipeline.segment_slide(img, probability, ROI, UNET, px, WORK, truth_mask=tru))
    a, b = results
    assert a.mask.shape == b.mask.shape and len(a.cells) == len(b.cells) == 2
    for ca, cb in zip(a.cells, b.cells, strict=True):
        assert cb.area_um2 == pytest.approx(ca.area_um2, rel=0.05)
        assert np.asarray(cb.centroid) == pytest.approx(np.asarray(ca.centroid) * magnification, abs=2.5)
        assert cb.crop.shape == ca.crop.shape


def test_pipeline_imports_no_tensorflow_spark_or_pandas():
    code = (
        "import sys\nimport allmtl_spark.segmentation.pipeline\n"
        "print(sorted(m for m in ('tensorflow', 'pyspark', 'pandas', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
