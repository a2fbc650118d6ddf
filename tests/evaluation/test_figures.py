"""Evaluation figures: PNG files of the documented pixel size, drawn from small fixed inputs."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from allmtl_spark.evaluation import figures
from allmtl_spark.metrics import compute_classification_metrics

pytestmark = pytest.mark.unit


def _size(path) -> tuple[int, int]:
    image = mpimg.imread(path)
    assert image.ndim == 3 and float(image[..., :3].std()) > 0  # something was drawn
    return image.shape[1], image.shape[0]


@pytest.fixture(scope="module")
def report4():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 2])
    scores = np.full((10, 4), 0.1)
    scores[np.arange(10), y] = 0.7
    scores[8] = [0.1, 0.1, 0.7, 0.1]  # one L1 predicted L2
    return compute_classification_metrics(y, scores, ["normal", "L1", "L2", "L3"])


def test_roc_png_has_the_roc_size(tmp_path, report4):
    path = figures.plot_roc(report4.roc, str(tmp_path / "roc.png"), "ROC")
    assert _size(path) == (600, 500) == tuple(round(v * figures.DPI) for v in figures.ROC_SIZE)


def test_binary_roc_and_undefined_class_do_not_fail(tmp_path):
    report = compute_classification_metrics(np.array([0, 0, 0]), np.array([0.2, 0.6, 0.1]), ["normal", "ALL"])
    assert _size(figures.plot_roc(report.roc, str(tmp_path / "roc.png"))) == (600, 500)


def test_confusion_png_has_two_panels_size(tmp_path, report4):
    path = figures.plot_confusion(report4.confusion, str(tmp_path / "confusion.png"), "confusion")
    assert _size(path) == (900, 400)


@pytest.mark.parametrize("n_panels, expected", [(1, (450, 350)), (2, (900, 350)), (4, (1350, 700))])
def test_fold_comparison_size_follows_the_panel_count(tmp_path, n_panels, expected):
    frame = pd.DataFrame(
        {
            "trial": [0, 0, 0],
            "fold": [0, 1, 2],
            "colour": [0.6, np.nan, 0.62],
            "size": [0.65, 0.66, np.nan],
            "classical": [0.7, 0.72, 0.69],
            "mtl": [0.8, 0.79, 0.83],
        }
    )
    panels = {f"backbone {i} / binary": (frame, "multistage - classical +0.100", 0.5) for i in range(n_panels)}
    path = figures.plot_fold_comparison(panels, str(tmp_path / "folds.png"))
    assert _size(path) == expected == figures.comparison_size(n_panels)
