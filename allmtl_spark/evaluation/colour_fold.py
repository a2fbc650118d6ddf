"""The colour-only baseline of one split: histograms of what the classifier sees + logistic regression.

Fitted on the training side (training and validation parts' originals) of exactly the split the deep
models of a run use, and scored on its test part, so its per-fold accuracy sits next to the two
approaches' in the evaluation report and goes through the same tables. The features are per-channel
histograms of the classifier's actual input (cells isolated on black: the black backdrop and the cells'
one-pixel rims blended with it are left out, so the histogram says nothing about cell size); see
``colour_baseline.colour_histograms`` and ``colour_baseline.interior``. Pure numpy
and scikit-learn.
"""

from __future__ import annotations

import numpy as np

from allmtl_spark.evaluation.colour_baseline import colour_histograms, interior

COLOUR_APPROACH = "colour"


def colour_features(images: np.ndarray, bins: int) -> np.ndarray:
    """(n, 3 * bins) histograms of the cells' inner pixels in each classifier input (``interior``).

    Args:
        images: (n, size, size, 3) uint8 RGB classifier inputs.
        bins: bins per channel.
    """
    return colour_histograms(list(images), [interior(image) for image in images], bins)


def fit_predict_colour(
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
