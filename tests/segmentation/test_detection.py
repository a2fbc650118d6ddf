"""Detections scored against boxes: recall, precision, one-detection-per-cell precision, box files."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.errors import SourceError
from allmtl_spark.segmentation.detection import Box, compute_detection_scores, match_slide, read_boxes

pytestmark = pytest.mark.unit


def test_second_detection_in_a_box_is_false_for_one_per_cell_but_inside_for_precision():
    boxes = [Box("s1", 10, 10, 49, 49, "lymphocyte"), Box("s1", 100, 10, 139, 49, "neutrophil")]
    detections = {"s1": [(30, 30), (110, 20), (130, 40), (300, 300)]}  # neutrophil cut in two, one rim outside
    scores = compute_detection_scores(boxes, detections)
    assert (scores.boxes, scores.found, scores.detections, scores.duplicates, scores.outside) == (2, 2, 4, 1, 1)
    assert scores.recall == 1.0 and scores.precision == 0.75 and scores.one_per_cell_precision == 0.5
    assert (
        scores.per_label["neutrophil"].duplicates == 1 and scores.per_label["neutrophil"].one_per_cell_precision == 0.5
    )
    assert scores.per_label["lymphocyte"].one_per_cell_precision == 1.0
    text = scores.format()
    assert "recall 1.000" in text and "one-per-cell precision 0.500" in text and "neutrophil" in text


def test_misses_and_slides_without_detections():
    boxes = [Box("a", 0, 0, 9, 9, "blast"), Box("b", 0, 0, 9, 9, "blast"), Box("b", 20, 20, 29, 29, "blast")]
    scores = compute_detection_scores(boxes, {"a": [(5, 5)]})
    assert scores.recall == pytest.approx(1 / 3) and scores.one_per_cell_precision == 1.0
    assert [m.missed for m in scores.matches] == [(), (0, 1)]


def test_overlapping_boxes_are_each_found_by_their_own_detection():
    # Two touching cells whose boxes overlap: both detections lie in both boxes; each box is found once.
    match = match_slide("s", np.array([[0, 0, 30, 30], [20, 0, 50, 30]]), np.array([[12, 15], [38, 15]]))
    assert match.found == (0, 1) and match.duplicates == () and match.outside == ()


def test_centroid_on_the_box_edge_counts_and_half_a_pixel_further_does_not():
    match = match_slide("s", np.array([[10, 10, 19, 19]]), np.array([[19.5, 15.0], [20.6, 15.0]]))
    assert match.found == (0,) and match.outside == (1,)


def test_box_files_csv_and_pascal_voc(tmp_path):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("slide_id,xmin,ymin,xmax,ymax,label\nIm001_1,10,20,30,40,blast\n")
    assert read_boxes(str(csv_path)) == [Box("Im001_1", 10, 20, 30, 40, "blast")]
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>Im002_0.jpg</filename>"
        "<object><name>WBC</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>31</xmax><ymax>41</ymax></bndbox></object>"
        "</annotation>"
    )
    assert read_boxes(str(voc)) == [Box("Im002_0", 10, 20, 30, 40, "WBC")]  # VOC is 1-based
    (tmp_path / "bad.csv").write_text("slide,x\n1,2\n")
    with pytest.raises(SourceError, match="lacks column"):
        read_boxes(str(tmp_path / "bad.csv"))
    with pytest.raises(SourceError, match="not found"):
        read_boxes(str(tmp_path / "nothing.csv"))
