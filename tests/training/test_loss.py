import math
import warnings

import numpy as np
import pytest

from allmtl_spark.training.job import cross_entropy

pytestmark = pytest.mark.unit


def test_cross_entropy_of_float32_softmax_rows_is_the_mean_negative_log_probability_without_warnings():
    labels = np.array([0, 1, 2, 1])
    # float32 softmax rows as the rank returns them, in a float64 array: off 1 by float32 rounding (1e-6),
    # far more than float64's tolerance in log_loss; the 0 is clipped to 1e-7
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7], [0.3333, 0.3333, 0.3334]])
    scores[1] += 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn >= 1.5 warns when rows do not sum to one
        loss = cross_entropy(labels, scores, 3)
    expected = -np.mean([math.log(0.7), math.log(0.8), math.log(0.7), math.log(0.3333)])
    assert loss == pytest.approx(expected, abs=1e-5)
