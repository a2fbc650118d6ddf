"""Shape-blind baselines of one split: simple features of what the classifier sees + logistic regression.

Each is fitted on the training side (training and validation parts' originals) of exactly the split
the deep models of a run use, and scored on its test part, so its per-fold accuracy sits next to the
two approaches' in the evaluation report and goes through the same tables. Both read the classifier's
actual input (cells isolated on black):

- ``colour``: per-channel histograms of the cells' inner pixels (the black backdrop and the cells'
  one-pixel rims blended with it are left out, so the histogram says nothing about cell size); see
  ``colour_baseline.colour_histograms`` and ``colour_baseline.interior``.
- ``size``: the share of each montage tile the cell covers, largest cell first. With
  ``train.cell_tile_um`` set (the demo's 24 um) a tile is that many micrometres wide, so this is each
  cell's area; with null (each slide's largest cell zoomed to fill its tile) only the sizes relative to
  that cell; with the isolated slide view, the share of the whole image the cells cover.

A deep model that scores no better than these has learnt nothing that colour or cell size alone do
not tell. Pure numpy and scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from allmtl_spark.evaluation.colour_baseline import colour_histograms, interior, nonblack

COLOUR_APPROACH = "colour"
SIZE_APPROACH = "size"


@dataclass(frozen=True)
class Baseline:
    """One shape-blind baseline: its ``approach`` and ``backbone`` in the tables, and its features.

    ``features(images, bins, grid)`` maps (n, size, size, 3) uint8 classifier inputs to (n, d) floats.
    """

    approach: str
    backbone: str
    label: str
    features: Callable[[np.ndarray, int, int], np.ndarray]


def colour_features(images: np.ndarray, bins: int, grid: int = 1) -> np.ndarray:
    """(n, 3 * bins) histograms of the cells' inner pixels in each classifier input (``interior``)."""
    return colour_histograms(list(images), [interior(image) for image in images], bins)


def size_features(images: np.ndarray, bins: int = 0, grid: int = 1) -> np.ndarray:
    """(n, grid * grid) share of each tile's pixels that belong to a cell (non-black), row by row.

    Args:
        images: (n, size, size, 3) uint8 classifier inputs.
        bins: unused (the colour baseline's argument).
        grid: tiles per side (``train.montage_grid`` for the montage view, 1 for the isolated slide).
    """
    images = np.asarray(images)
    size = images.shape[1]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    out = np.zeros((len(images), grid * grid), np.float64)
    for i, image in enumerate(images):
        cells = nonblack(image)
        for r in range(grid):
            for c in range(grid):
                out[i, r * grid + c] = cells[edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean()
    return out


# The colour baseline's backbone name changed when it stopped counting the cells' rims: rows under the old
# name (``LEGACY_BACKBONES``) measured something else and are left out of the reports.
BASELINES = (
    Baseline(COLOUR_APPROACH, "inner-histogram+logreg", "colour-only", colour_features),
    Baseline(SIZE_APPROACH, "area+logreg", "size-only", size_features),
)
BASELINE_APPROACHES = tuple(b.approach for b in BASELINES)
LEGACY_BACKBONES = {"histogram+logreg": "colour histograms that counted the cells' rims (and so their size)"}


def legacy_baseline_rows(approaches: Sequence[str], backbones: Sequence[str]) -> np.ndarray:
    """Bool per ``evaluation_runs`` row: a baseline row written under a retired backbone (``LEGACY_BACKBONES``).

    An evaluation started before a baseline changed holds rows that measured something else; mixed
    with the new ones under one approach name they would make one mean of two measurements.
    """
    return np.array(
        [a in BASELINE_APPROACHES and b in LEGACY_BACKBONES for a, b in zip(approaches, backbones, strict=True)],
        dtype=bool,
    )


def fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, n_classes: int, test_x: np.ndarray, regularisation: float = 1.0
) -> np.ndarray:
    """Class probabilities (n_test, n_classes) of a standardised logistic regression fitted on the training side.

    Classes missing from the training side get probability 0. With one class only, that class gets 1.
    Nothing is tuned (``regularisation`` is scikit-learn's ``C``, fixed).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros((len(test_x), n_classes), np.float64)
    present = np.unique(train_y)
    if len(present) == 1:
        scores[:, int(present[0])] = 1.0
        return scores
    model = make_pipeline(StandardScaler(), LogisticRegression(C=regularisation, max_iter=5000))
    model.fit(np.asarray(train_x, np.float64), np.asarray(train_y))
    probabilities = model.predict_proba(np.asarray(test_x, np.float64))
    for column, label in enumerate(model.classes_):
        scores[:, int(label)] = probabilities[:, column]
    return scores
