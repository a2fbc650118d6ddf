"""Bootstrap confidence intervals: the vectorised resample metrics against scikit-learn, and the CI behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from allmtl_spark.metrics import _bootstrap
from allmtl_spark.metrics.classification import compute_bootstrap_ci, compute_classification_metrics

pytestmark = pytest.mark.unit


def _case(n: int = 150, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probability rows on a 1/20 grid (tied scores), biased towards the true class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[np.arange(n), y] += 0.25
    probs /= probs.sum(axis=1, keepdims=True)
    return y, np.array([rng.multinomial(20, row) for row in probs]) / 20.0


def _first_batch(n: int, strata=None, n_resamples: int = 20, seed: int = 0) -> np.ndarray:
    return next(_bootstrap.resample_index_batches(n, n_resamples, np.random.default_rng(seed), strata))


def test_stratified_resamples_keep_class_counts():
    y, _ = _case()
    idx = _first_batch(y.size, strata=y)
    assert idx.shape == (20, y.size)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=3), np.bincount(y, minlength=3))
    assert len({tuple(row) for row in idx}) == 20  # actually random, not the identity


def test_batches_cover_exactly_n_resamples():
    sizes = [b.shape[0] for b in _bootstrap.resample_index_batches(10**6, 5, np.random.default_rng(0))]
    assert sum(sizes) == 5 and max(sizes) <= 2  # 2e6 elements per batch at n = 1e6


def test_vectorised_resample_metrics_equal_sklearn_on_each_resample():
    y, scores = _case()
    pred = scores.argmax(axis=1)
    idx = _first_batch(y.size)
    accuracy = _bootstrap.batch_accuracy(y == pred, idx)
    macro_f1 = _bootstrap.batch_macro_f1(_bootstrap.batch_confusion(y, pred, idx, 3))
    macro_auc = _bootstrap.batch_macro_auc(y, scores, idx, np.arange(3))
    for b, row in enumerate(idx):
        assert accuracy[b] == pytest.approx(skm.accuracy_score(y[row], pred[row]))
        expected_f1 = skm.f1_score(y[row], pred[row], labels=[0, 1, 2], average="macro", zero_division=0)
        assert macro_f1[b] == pytest.approx(expected_f1)
        expected_auc = skm.roc_auc_score(y[row], scores[row], multi_class="ovr", average="macro")
        assert macro_auc[b] == pytest.approx(expected_auc, abs=1e-12)


def test_rank_auc_is_nan_without_positives():
    auc = _bootstrap.batch_auc(
        np.array([[False, False, False], [True, False, True]]), np.array([[1, 2, 3], [3, 1, 2.0]])
    )
    assert np.isnan(auc[0]) and auc[1] == pytest.approx(1.0)


def test_estimates_are_the_full_sample_metrics():
    y, scores = _case()
    cis = compute_bootstrap_ci(y, scores, n_resamples=200)
    report = compute_classification_metrics(y, scores)
    assert list(cis) == ["accuracy", "macro_f1", "auc"]
    assert cis["accuracy"].estimate == pytest.approx(report.accuracy)
    assert cis["macro_f1"].estimate == pytest.approx(report.macro.f1)
    assert cis["auc"].estimate == pytest.approx(report.roc.macro.auc)
    for ci in cis.values():
        assert ci.ci_low < ci.estimate < ci.ci_high
        assert ci.n_valid == ci.n_resamples == 200


def test_same_seed_same_interval_other_seed_differs():
    y, scores = _case()
    first = compute_bootstrap_ci(y, scores, n_resamples=300, seed=7)
    again = compute_bootstrap_ci(y, scores, n_resamples=300, seed=7)
    other = compute_bootstrap_ci(y, scores, n_resamples=300, seed=8)
    assert first == again
    assert first["auc"].ci_low != other["auc"].ci_low


def test_higher_confidence_gives_wider_interval():
    y, scores = _case()
    narrow = compute_bootstrap_ci(y, scores, n_resamples=500, confidence=0.8, metrics=["accuracy"])["accuracy"]
    wide = compute_bootstrap_ci(y, scores, n_resamples=500, confidence=0.99, metrics=["accuracy"])["accuracy"]
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high


def test_unstratified_accuracy_interval_agrees_with_scipy_bootstrap():
    y, scores = _case(n=400)
    correct = (scores.argmax(axis=1) == y).astype(float)
    ours = compute_bootstrap_ci(y, scores, metrics=["accuracy"], n_resamples=4000, stratified=False)["accuracy"]
    ref = sps.bootstrap((correct,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    # Different random draws: the two Monte Carlo intervals agree to their simulation error.
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_unstratified_auc_discards_resamples_that_lose_a_class():
    y, scores = _case(n=60)
    y[:] = np.where(y == 2, 0, y)
    y[0] = 2  # a single case of class 2: many resamples miss it
    cis = compute_bootstrap_ci(y, scores, metrics=["auc"], n_resamples=300, stratified=False)
    assert 0 < cis["auc"].n_valid < 300
    assert "left out" in cis["auc"].note


def test_labels_only_gives_accuracy_and_f1():
    y, scores = _case()
    cis = compute_bootstrap_ci(y, y_pred=scores.argmax(axis=1), class_names=["a", "b", "c"], n_resamples=100)
    assert list(cis) == ["accuracy", "macro_f1"]
    with pytest.raises(ValueError, match="needs scores"):
        compute_bootstrap_ci(y, y_pred=y, class_names=["a", "b", "c"], metrics=["auc"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_resamples": 0}, "positive integer"),
        ({"confidence": 1.5}, "strictly between 0 and 1"),
        ({"metrics": ["brier"]}, "subset of"),
    ],
)
def test_bad_bootstrap_arguments(kwargs, message):
    y, scores = _case(n=20)
    with pytest.raises(ValueError, match=message):
        compute_bootstrap_ci(y, scores, **kwargs)
