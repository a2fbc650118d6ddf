import cv2
import numpy as np
import pytest

from allmtl_spark.training.curves import example_rows, plot_example_inputs

pytestmark = pytest.mark.unit


def _inputs():
    # class k's images are filled with grey level 40 * (k + 1); class 2 has one image only, class 3 none
    labels = np.array([0, 1, 0, 2, 1, 0, 1])
    images = np.stack([np.full((8, 8, 3), 40 * (k + 1), np.uint8) for k in labels])
    return images, labels


def test_example_rows_put_each_class_on_its_own_strip():
    images, labels = _inputs()
    rows = example_rows(images, labels, n_classes=4, per_class=2)
    assert [r.shape for r in rows] == [(8, 16, 3)] * 4
    assert (rows[0] == 40).all() and (rows[1] == 80).all()
    assert (rows[2][:, :8] == 120).all() and (rows[2][:, 8:] == 0).all()  # one image, then black
    assert (rows[3] == 0).all()


def test_plot_example_inputs_writes_a_png(tmp_path):
    images, labels = _inputs()
    path = plot_example_inputs({"fab4": (images, labels, ("normal", "L1", "L2", "L3"))}, str(tmp_path / "in.png"), 3)
    picture = cv2.imread(path)
    assert picture is not None and picture.shape[0] > 100
