"""The README picture is drawn from arrays, without a display."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from allmtl_spark.segmentation.figures import segmentation_figure
from tests.segmentation.conftest import make_slide

pytestmark = pytest.mark.unit


def test_figure_shows_slide_mask_isolated_and_crops(tmp_path):
    image, truth = make_slide()
    isolated = np.where(truth[..., None] > 0, image, 0).astype(np.uint8)
    crops = [image[40:100, 50:110].copy(), image[120:180, 190:250].copy()]
    path = segmentation_figure(str(tmp_path / "out" / "example.png"), image, truth, isolated, crops, title="t")
    picture = cv2.imread(path)
    assert picture is not None and picture.shape[1] > picture.shape[0] > 300  # wide, three panels and a row
    purple = (picture[..., 0].astype(int) - picture[..., 2].astype(int)) > 40  # BGR: blue above red
    assert purple[: picture.shape[0] * 2 // 3].any() and purple[picture.shape[0] * 2 // 3 :].any()


def test_detection_figure_marks_misses_and_false_detections(tmp_path):
    from allmtl_spark.segmentation.detection import Box, match_slide
    from allmtl_spark.segmentation.figures import detection_figure

    image = np.full((200, 300, 3), 235, np.uint8)
    boxes = [Box("s", 20, 20, 80, 80, "lymphocyte"), Box("s", 150, 20, 210, 80, "neutrophil")]
    centroids = [(50, 50), (60, 60), (250, 170)]  # one pair, one extra in the first box, one in no box
    match = match_slide("s", np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in boxes]), np.array(centroids))
    path = detection_figure(str(tmp_path / "d" / "f.png"), [(image, match, boxes, centroids)], title="t")
    picture = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(int)

    def has(colour):
        return (np.abs(picture - np.array(colour)).sum(axis=2) < 40).sum() > 20

    from allmtl_spark.segmentation import figures

    assert match.missed == (1,) and len(match.duplicates) == 1 and len(match.outside) == 1
    assert all(has(c) for c in (figures.FOUND, figures.MISSED, figures.PAIRED, figures.EXTRA, figures.OUTSIDE))


def test_stain_figure_shows_each_slide_before_and_after_each_method(tmp_path):
    from allmtl_spark.segmentation.figures import stain_figure

    image, _ = make_slide()
    pale = np.clip(image.astype(int) + 40, 0, 255).astype(np.uint8)
    path = stain_figure(str(tmp_path / "s.png"), [("a", image), ("b", pale)], ["grey_world", "reinhard", "macenko"])
    picture = cv2.imread(path)
    assert picture is not None and picture.shape[1] > 1.5 * picture.shape[0]  # two rows of four panels
