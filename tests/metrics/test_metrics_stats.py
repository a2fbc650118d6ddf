"""Significance tests against scipy, statsmodels and hand-written formulas, and their degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

from allmtl_spark.metrics.stats import (
    compare_scores,
    compute_auc_difference_test,
    compute_corrected_resampled_t,
    compute_mcnemar,
    compute_paired_t,
    compute_student_t,
    compute_welch_t,
)

pytestmark = pytest.mark.unit

TOL = 1e-6
# Accuracies (%) of 10 repeated trials: multistage (A) vs classical (B) transfer learning.
A = np.array([94.1, 95.3, 93.8, 96.0, 94.7, 95.9, 93.2, 94.9, 95.5, 94.4])
B = np.array([89.9, 91.2, 90.4, 88.7, 90.9, 91.8, 89.1, 90.2, 92.0, 89.5])
B_UNEQUAL = np.array([89.9, 91.2, 90.4, 88.7, 90.9, 85.0, 92.5])  # 7 values, larger spread


def _cohen_d(a, b):
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    return (a.mean() - b.mean()) / math.sqrt(pooled)


@pytest.mark.parametrize("b", [B, B_UNEQUAL], ids=["equal-n", "unequal-n"])
def test_student_t_matches_scipy_and_statsmodels(b):
    result = compute_student_t(A, b)
    ref = sps.ttest_ind(A, b, equal_var=True)
    sm_stat, sm_p, sm_df = sm_ttest_ind(A, b, usevar="pooled")
    low, high = CompareMeans(DescrStatsW(A), DescrStatsW(b)).tconfint_diff(alpha=0.05, usevar="pooled")

    assert result.name == "Student t"
    assert result.statistic == pytest.approx(ref.statistic, abs=TOL) and result.statistic == pytest.approx(
        sm_stat, abs=TOL
    )
    assert result.p_value == pytest.approx(ref.pvalue, abs=TOL) and result.p_value == pytest.approx(sm_p, abs=TOL)
    assert result.df == pytest.approx(sm_df, abs=TOL) == A.size + b.size - 2
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=TOL)
    assert result.mean_difference == pytest.approx(A.mean() - b.mean(), abs=TOL)
    assert result.effect_size == pytest.approx(_cohen_d(A, b), abs=TOL)
    assert result.effect_size_name == "cohen_d"


@pytest.mark.parametrize("b", [B, B_UNEQUAL], ids=["equal-n", "unequal-n"])
def test_welch_t_matches_scipy_and_statsmodels(b):
    result = compute_welch_t(A, b)
    ref = sps.ttest_ind(A, b, equal_var=False)
    sm_stat, sm_p, sm_df = sm_ttest_ind(A, b, usevar="unequal")
    low, high = CompareMeans(DescrStatsW(A), DescrStatsW(b)).tconfint_diff(alpha=0.05, usevar="unequal")

    assert result.statistic == pytest.approx(ref.statistic, abs=TOL) and result.statistic == pytest.approx(
        sm_stat, abs=TOL
    )
    assert result.p_value == pytest.approx(ref.pvalue, abs=TOL) and result.p_value == pytest.approx(sm_p, abs=TOL)
    assert result.df == pytest.approx(sm_df, abs=TOL)
    assert result.df != int(result.df)  # Welch-Satterthwaite df, not n_a + n_b - 2
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=TOL)
    assert result.effect_size == pytest.approx(_cohen_d(A, b), abs=TOL)


def test_paired_t_matches_scipy_and_statsmodels():
    result = compute_paired_t(A, B)
    ref = sps.ttest_rel(A, B)
    diff = DescrStatsW(A - B)
    sm_stat, sm_p, sm_df = diff.ttest_mean(0.0)
    low, high = diff.tconfint_mean(alpha=0.05)

    assert result.statistic == pytest.approx(ref.statistic, abs=TOL) and result.statistic == pytest.approx(
        sm_stat, abs=TOL
    )
    assert result.p_value == pytest.approx(ref.pvalue, abs=TOL) and result.p_value == pytest.approx(sm_p, abs=TOL)
    assert result.df == sm_df == 9
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=TOL)
    assert result.effect_size == pytest.approx((A - B).mean() / (A - B).std(ddof=1), abs=TOL)
    assert result.effect_size_name == "d_z"


@pytest.mark.parametrize("confidence", [0.9, 0.99])
def test_confidence_level_sets_every_interval(confidence):
    alpha = 1 - confidence
    compare = CompareMeans(DescrStatsW(A), DescrStatsW(B_UNEQUAL))
    student = compute_student_t(A, B_UNEQUAL, confidence=confidence)
    welch = compute_welch_t(A, B_UNEQUAL, confidence=confidence)
    paired = compute_paired_t(A, B, confidence=confidence)
    assert (student.ci_low, student.ci_high) == pytest.approx(compare.tconfint_diff(alpha, usevar="pooled"), abs=TOL)
    assert (welch.ci_low, welch.ci_high) == pytest.approx(compare.tconfint_diff(alpha, usevar="unequal"), abs=TOL)
    assert (paired.ci_low, paired.ci_high) == pytest.approx(DescrStatsW(A - B).tconfint_mean(alpha), abs=TOL)
    assert student.confidence == confidence


def test_corrected_resampled_t_matches_independent_reference_values():
    # Reference values worked out by hand, not with the code's formula: differences d = (0.01, 0.02, 0.03)
    # over J = 3 folds with n_test/n_train = 1/2: mean 0.02, s^2 = 1e-4, corrected SE = 0.01 * sqrt(5/6),
    # t = 2 / sqrt(5/6) = sqrt(24/5). With 2 degrees of freedom Student's t has closed forms: the
    # two-sided p of t is 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/17), and the 97.5% quantile is
    # (2q - 1) / sqrt(2q(1 - q)) at q = 0.975 = 0.95 / sqrt(0.04875) (4.3027, as in printed t tables).
    a, b = np.array([0.81, 0.82, 0.83]), np.array([0.80, 0.80, 0.80])
    result = compute_corrected_resampled_t(a, b, 0.5)
    assert result.name == "Nadeau-Bengio corrected t"
    assert result.df == 2
    assert result.statistic == pytest.approx(math.sqrt(24 / 5), rel=1e-9)
    assert result.p_value == pytest.approx(1 - math.sqrt(12 / 17), rel=1e-9)
    assert result.p_value == pytest.approx(0.15983, abs=1e-5)
    half = 0.95 / math.sqrt(0.04875) * 0.01 * math.sqrt(5 / 6)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.02 - half, 0.02 + half), rel=1e-9)
    assert result.effect_size == pytest.approx(2.0, rel=1e-9)  # d_z = mean / sd = 0.02 / 0.01
    # The uncorrected paired test on the same numbers: t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3).
    paired = compute_paired_t(a, b)
    assert paired.statistic == pytest.approx(2 * math.sqrt(3), rel=1e-9)
    assert paired.p_value == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert abs(result.statistic) < abs(paired.statistic) and result.p_value > paired.p_value


def test_corrected_t_needs_a_positive_ratio():
    for bad in (0.0, -0.1, float("nan"), None):
        with pytest.raises(ValueError, match="test_train_ratio"):
            compute_corrected_resampled_t(A, B, bad)


def test_compare_scores_runs_the_applicable_tests():
    names = [r.name for r in compare_scores(A, B_UNEQUAL, paired=False)]
    assert names == ["Student t", "Welch t"]
    paired = compare_scores(A, B, paired=True)
    assert [r.name for r in paired] == ["Student t", "Welch t", "paired t"]
    assert "ignores the pairing" in paired[0].note
    full = compare_scores(A, B, paired=True, test_train_ratio=1 / 9, confidence=0.9)
    assert [r.name for r in full][-1] == "Nadeau-Bengio corrected t"
    assert full[-1] == compute_corrected_resampled_t(A, B, 1 / 9, confidence=0.9)
    assert full[2] == compute_paired_t(A, B, confidence=0.9)


def test_compare_scores_rejects_inconsistent_options():
    with pytest.raises(ValueError, match="pass paired=True"):
        compare_scores(A, B, paired=False, test_train_ratio=0.1)
    with pytest.raises(ValueError, match="same length .* got 10 and 7"):
        compare_scores(A, B_UNEQUAL, paired=True)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0], [1.0, 2.0], "a needs at least 2 values"),
        ([1.0, 2.0], [], "b is empty"),
        ([1.0, float("nan"), 2.0], [1.0, 2.0], r"a has 1 non-finite.*row\(s\) \[1\]"),
        ([1.0, 2.0], [1.0, float("inf")], "b has 1 non-finite"),
        ([[1.0, 2.0]], [1.0, 2.0], "a must be 1-D"),
        (["x", "y"], [1.0, 2.0], "numbers only"),
        ([0.9, 0.9, 0.9], [0.8, 0.8, 0.8], "both samples are constant"),
    ],
)
def test_independent_tests_reject_bad_samples(a, b, message):
    for test in (compute_student_t, compute_welch_t):
        with pytest.raises(ValueError, match=message):
            test(a, b)


def test_paired_tests_reject_constant_nonzero_differences_including_rounding_noise():
    a = np.array([0.95, 0.93, 0.91, 0.97])
    b = np.array([0.85, 0.83, 0.81, 0.87])  # differences 0.1 up to the last bit: scipy gives t = 3.6e15
    assert np.ptp(a - b) > 0
    with pytest.raises(ValueError, match="every paired difference a - b equals 0.1"):
        compute_paired_t(a, b)
    with pytest.raises(ValueError, match="every paired difference"):
        compute_corrected_resampled_t(a, b, 0.25)


def test_identical_constant_samples_give_documented_p_one():
    for result in (compute_student_t([0.9] * 3, [0.9] * 4), compute_welch_t([0.9] * 3, [0.9] * 3)):
        assert (result.statistic, result.p_value, result.ci_low, result.ci_high) == (0.0, 1.0, 0.0, 0.0)
        assert "same constant" in result.note
    paired = compute_paired_t([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert paired.p_value == 1.0 and "is 0" in paired.note


@pytest.mark.filterwarnings("error")  # scipy's precision-loss warning is expected and hidden for a constant sample
def test_one_constant_sample_is_a_valid_test():
    result = compute_student_t([0.9, 0.9, 0.9], [0.8, 0.85, 0.82])
    assert result.p_value == pytest.approx(sm_ttest_ind([0.9, 0.9, 0.9], [0.8, 0.85, 0.82])[1], abs=TOL)
    assert "sample a is constant" in result.note


def test_to_dict_turns_nan_into_none():
    welch = compute_welch_t([0.9] * 3, [0.9] * 3)  # df is undefined here
    data = welch.to_dict()
    assert data["df"] is None and data["p_value"] == 1.0 and data["name"] == "Welch t"


# ----------------------------------------------------------------------------------------------- McNemar


def _mcnemar_case(both_right: int, only_a: int, only_b: int, both_wrong: int):
    """Labels and predictions realising a given 2x2 correctness table (binary labels)."""
    n = both_right + only_a + only_b + both_wrong
    y = np.zeros(n, dtype=int)
    a_right = np.r_[np.ones(both_right + only_a), np.zeros(only_b + both_wrong)].astype(bool)
    b_right = np.r_[np.ones(both_right), np.zeros(only_a), np.ones(only_b), np.zeros(both_wrong)].astype(bool)
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 1)


def test_mcnemar_exact_for_few_discordant_pairs_matches_statsmodels_and_binomial():
    y, pa, pb = _mcnemar_case(40, 9, 3, 8)
    result = compute_mcnemar(y, pa, pb)
    ref = sm_mcnemar([[40, 9], [3, 8]], exact=True)
    assert result.exact and result.name == "McNemar exact"
    np.testing.assert_array_equal(result.table, [[40, 9], [3, 8]])
    assert (result.only_a_correct, result.only_b_correct) == (9, 3)
    assert result.statistic == pytest.approx(ref.statistic, abs=TOL) == 3
    assert result.p_value == pytest.approx(ref.pvalue, abs=TOL)
    assert result.p_value == pytest.approx(sps.binomtest(3, 12, 0.5).pvalue, abs=TOL)


def test_mcnemar_chi_square_for_many_discordant_pairs_matches_statsmodels():
    y, pa, pb = _mcnemar_case(50, 25, 10, 15)
    result = compute_mcnemar(y, pa, pb)
    ref = sm_mcnemar([[50, 25], [10, 15]], exact=False, correction=True)
    assert not result.exact and result.df == 1
    assert result.statistic == pytest.approx(ref.statistic, abs=TOL)
    assert result.statistic == pytest.approx((abs(25 - 10) - 1) ** 2 / 35, abs=TOL)
    assert result.p_value == pytest.approx(ref.pvalue, abs=TOL)


def test_mcnemar_switch_at_25_discordant_pairs_and_override():
    assert compute_mcnemar(*_mcnemar_case(10, 14, 10, 5)).exact  # 24 discordant
    assert not compute_mcnemar(*_mcnemar_case(10, 15, 10, 5)).exact  # 25 discordant
    forced = compute_mcnemar(*_mcnemar_case(10, 9, 3, 5), exact=False)
    assert not forced.exact
    assert forced.p_value == pytest.approx(sm_mcnemar([[10, 9], [3, 5]], exact=False).pvalue, abs=TOL)


def test_mcnemar_degenerate_tables_are_documented_not_infinite():
    agree = compute_mcnemar(*_mcnemar_case(20, 0, 0, 5), exact=False)
    assert (agree.statistic, agree.p_value) == (0.0, 1.0) and "no discordant" in agree.note
    tie = compute_mcnemar(*_mcnemar_case(20, 15, 15, 5))
    assert (tie.statistic, tie.p_value) == (0.0, 1.0) and "clipped" in tie.note


def test_mcnemar_works_on_multiclass_labels_and_rejects_bad_lengths():
    result = compute_mcnemar(["L1", "L2", "L3", "L1"], ["L1", "L2", "L1", "L1"], ["L1", "L3", "L3", "L2"])
    np.testing.assert_array_equal(result.table, [[1, 2], [1, 0]])
    with pytest.raises(ValueError, match="y_true and pred_b must have the same length"):
        compute_mcnemar([0, 1, 1], [0, 1, 1], [0, 1])


# ----------------------------------------------------------------------------------------------- AUC difference


def _two_models(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.45 * y + rng.uniform(0, 0.55, n), 0, 1)
    weak = np.clip(0.1 * y + rng.uniform(0, 0.9, n), 0, 1)
    return y, good, weak


def test_auc_difference_of_a_clearly_better_model_is_significant():
    y, good, weak = _two_models()
    result = compute_auc_difference_test(y, good, weak, n_resamples=1000)
    assert result.auc_a == pytest.approx(roc_auc_score(y, good), abs=1e-12)
    assert result.auc_b == pytest.approx(roc_auc_score(y, weak), abs=1e-12)
    assert result.difference == pytest.approx(result.auc_a - result.auc_b)
    assert 0 < result.ci_low < result.difference < result.ci_high
    assert result.p_value < 0.01 and result.n_valid == 1000
    assert result.std_error > 0


def test_auc_difference_of_identical_scores_is_zero_with_p_one():
    y, good, _ = _two_models()
    result = compute_auc_difference_test(y, good, good, n_resamples=200)
    assert (result.difference, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_auc_difference_is_reproducible_and_antisymmetric():
    y, good, weak = _two_models(n=80, seed=3)
    first = compute_auc_difference_test(y, good, weak, n_resamples=300, seed=5)
    assert first == compute_auc_difference_test(y, good, weak, n_resamples=300, seed=5)
    swapped = compute_auc_difference_test(y, weak, good, n_resamples=300, seed=5)
    assert swapped.difference == pytest.approx(-first.difference)
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-first.ci_high, -first.ci_low))
    assert swapped.p_value == pytest.approx(first.p_value)


def test_auc_difference_multiclass_uses_macro_ovr_auc():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    sa, sb = rng.dirichlet(np.ones(3), 90), rng.dirichlet(np.ones(3), 90)
    result = compute_auc_difference_test(y, sa, sb, n_resamples=50)
    assert result.auc_a == pytest.approx(roc_auc_score(y, sa, multi_class="ovr"), abs=1e-12)


def test_auc_difference_rejects_bad_inputs():
    y, good, weak = _two_models(n=20)
    with pytest.raises(ValueError, match="same shape"):
        compute_auc_difference_test(y, good, weak[:10])
    with pytest.raises(ValueError, match="single class"):
        compute_auc_difference_test(np.ones(20, dtype=int), good, weak)


def test_detectable_difference_matches_closed_form_quantiles_and_simulated_power():
    from allmtl_spark.metrics import compute_detectable_difference

    # J = 3, s = 0.01, ratio 1/2: SE = 0.01 sqrt(5/6); with 2 degrees of freedom t_0.975 = 0.95 / sqrt(0.04875)
    # and t_0.8 = 0.6 / sqrt(0.32) (closed form (2q - 1) / sqrt(2q(1 - q))).
    expected = (0.95 / math.sqrt(0.04875) + 0.6 / math.sqrt(0.32)) * 0.01 * math.sqrt(5 / 6)
    assert compute_detectable_difference(0.01, 3, 0.5) == pytest.approx(expected, rel=1e-9)
    # Simulated: differences of true mean delta and sd s over J = 20 independent pairs (ratio ~0): the
    # corrected test (with a tiny ratio) should reject in about 80% of runs.
    rng = np.random.default_rng(0)
    delta = compute_detectable_difference(0.05, 20, 1e-6)
    rejected = [
        compute_corrected_resampled_t(rng.normal(delta, 0.05, 20), np.zeros(20), 1e-6).p_value < 0.05
        for _ in range(2000)
    ]
    assert 0.74 < np.mean(rejected) < 0.86
    with pytest.raises(ValueError, match="n_pairs >= 2"):
        compute_detectable_difference(0.01, 1, 0.5)
