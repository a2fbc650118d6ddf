"""Calibration metrics against hand-computed values and an independent fit (scikit-learn's logistic regression)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from allmtl_spark.metrics.calibration import (
    apply_temperature,
    compute_ece,
    compute_reliability,
    compute_risk_coverage,
    fit_temperature,
)

pytestmark = pytest.mark.unit


def test_ece_hand_computed_two_bins():
    # bins of width 0.5: cases with top probability 0.9, 0.9, 0.8 (predict class 0; labels 0, 0, 1)
    # fall in bin 2: confidence 0.8667, accuracy 2/3; 0.6 and 0.7 (correct, wrong) in bin 2 as well
    # -> all five in (0.5, 1]: mean confidence (0.9+0.9+0.8+0.6+0.7)/5 = 0.78, accuracy 3/5 = 0.6
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1, 0])
    assert compute_ece(y, p, bins=2) == pytest.approx(abs(0.78 - 0.6))
    # ten bins: 0.9 -> bin (0.8, 0.9] twice [acc 1, conf 0.9], 0.8 -> (0.7, 0.8] [acc 0, conf 0.8],
    # 0.6 -> (0.5, 0.6] [acc 1], 0.7 -> (0.6, 0.7] [acc 0]
    expected = (2 * abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6) + abs(0 - 0.7)) / 5
    assert compute_ece(y, p, bins=10) == pytest.approx(expected)
    diagram = compute_reliability(y, p, bins=10)
    assert diagram.count.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 2, 0]
    assert diagram.accuracy[8] == 1.0 and np.isnan(diagram.accuracy[0])


def test_ece_is_zero_for_perfectly_calibrated_bins():
    # 10 cases at 0.7 of which 7 right: accuracy equals confidence
    p = np.tile([0.7, 0.3], (10, 1))
    y = np.array([0] * 7 + [1] * 3)
    assert compute_ece(y, p) == pytest.approx(0.0, abs=1e-12)


def test_temperature_one_is_identity_and_argmax_never_changes():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 50)
    assert np.allclose(apply_temperature(p, 1.0), p)
    for t in (0.3, 2.5):
        scaled = apply_temperature(p, t)
        assert np.allclose(scaled.sum(axis=1), 1.0)
        assert (scaled.argmax(axis=1) == p.argmax(axis=1)).all()
    # T > 1 softens: the top probability falls
    assert (apply_temperature(p, 2.5).max(axis=1) <= p.max(axis=1) + 1e-12).all()


def test_binary_temperature_equals_logistic_regression_without_intercept():
    # independent reference: for two classes, softmax(log p / T) = sigmoid(logit(p) / T), so 1/T is
    # the coefficient of an unpenalised logistic regression on logit(p) with no intercept
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z / 2.0))).astype(int)  # true temperature 2
    p1 = 1 / (1 + np.exp(-z))
    probs = np.stack([1 - p1, p1], axis=1)
    reference = LogisticRegression(fit_intercept=False, penalty=None).fit(z[:, None], y).coef_[0, 0]
    t = fit_temperature(y, probs)
    assert 1 / t == pytest.approx(reference, rel=1e-3)
    assert 1.4 < t < 2.8  # and near the temperature the labels were drawn with


def test_fitted_temperature_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (2000, 4)) * 2
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in truth])
    overconfident = apply_temperature(truth, 1 / 3)  # logits x 3
    t = fit_temperature(y[:1000], overconfident[:1000])
    assert t == pytest.approx(3.0, rel=0.15)
    before = compute_ece(y[1000:], overconfident[1000:])
    after = compute_ece(y[1000:], apply_temperature(overconfident[1000:], t))
    assert before > 0.15 and after < 0.05


def test_fit_temperature_refuses_no_cases():
    with pytest.raises(ValueError, match="at least one"):
        fit_temperature(np.zeros(0, int), np.zeros((0, 2)))


def test_risk_coverage_hand_computed():
    curve = compute_risk_coverage([True, False, True, True], [0.9, 0.8, 0.7, 0.6])
    assert curve.coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve.accuracy.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.75])
    assert curve.accuracy_at(0.5) == pytest.approx(0.5)
    assert curve.accuracy_at(1.0) == pytest.approx(0.75)


def test_ece_floor_is_the_noise_of_a_calibrated_model_and_shrinks_with_more_cases():
    from allmtl_spark.metrics.calibration import ece_floor

    rng = np.random.default_rng(0)
    few = rng.dirichlet(np.ones(4), 60)
    many = rng.dirichlet(np.ones(4), 6000)
    mean_few, p95_few = ece_floor(few, 15, draws=300)
    mean_many, _ = ece_floor(many, 15, draws=50)
    assert 0.05 < mean_few < p95_few < 0.3  # 60 cases in 15 bins: a calibrated model measures ~0.1
    assert mean_many < mean_few / 4
    # the labels are drawn from the probabilities: certain rows give their own class, ECE 0
    assert ece_floor(np.eye(4)[[0, 1, 2, 3, 0]], 15, draws=20) == (0.0, 0.0)
