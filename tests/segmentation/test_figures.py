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
