"""Significance tests comparing two models: scipy and statsmodels, no Spark.

``a`` and ``b`` are per-trial (or per-fold) scores of two models, e.g. the accuracies of
multistage and classical transfer learning over 10 repeated trials; every difference is ``a - b``.
All tests are two-sided. The paper uses Student's independent t-test; repeated trials on shared
data are not independent, so the paired t-test and the Nadeau-Bengio corrected resampled t-test are
offered too (``compare_scores`` runs every test that applies).

Degenerate input is never turned into a number silently:

- fewer than 2 values, NaN or infinite values, unequal lengths for a paired test: ``ValueError``;
- both samples (or all paired differences) constant but different: the t statistic is a non-zero
  number divided by zero, so ``ValueError``;
- identical constant samples (or all paired differences zero): a documented result with
  statistic 0, p = 1, CI [0, 0], effect size 0 and a ``note``;
- one constant sample next to a varying one is fine (the pooled or Welch variance is positive).

"Constant" allows rounding error (a spread of a few ulps): differences such as
``[0.95, 0.93] - [0.85, 0.83]`` are not exactly equal in floating point, and scipy would report a
t of about 1e15 for them.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from allmtl_spark.metrics import _bootstrap
from allmtl_spark.metrics._validate import (
    as_labels,
    as_sample,
    check_confidence,
    check_same_length,
    is_constant,
    is_zero,
)
from allmtl_spark.metrics.classification import prepare_scores

# Below this many discordant pairs the chi-square approximation of McNemar's test is poor.
MCNEMAR_EXACT_BELOW = 25

STUDENT, WELCH, PAIRED, CORRECTED = "Student t", "Welch t", "paired t", "Nadeau-Bengio corrected t"


def _json_value(value):
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass(frozen=True)
class TestResult:
    """Result of one two-sample test of ``mean(a) - mean(b)`` (two-sided).

    Attributes:
        name: ``"Student t"``, ``"Welch t"``, ``"paired t"`` or ``"Nadeau-Bengio corrected t"``.
        statistic: the t statistic.
        df: degrees of freedom (Welch: Welch-Satterthwaite, non-integer; NaN if undefined).
        p_value: two-sided p-value.
        mean_difference: ``mean(a) - mean(b)`` (equal to the mean paired difference).
        ci_low, ci_high: confidence interval of ``mean_difference`` at ``confidence``.
        effect_size: Cohen's d (pooled SD) for independent tests, d_z (mean / SD of the paired
            differences) for paired ones.
        effect_size_name: ``"cohen_d"`` or ``"d_z"``.
        confidence: the confidence level of the interval.
        note: degenerate cases met, or "".
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    statistic: float
    df: float
    p_value: float
    mean_difference: float
    ci_low: float
    ci_high: float
    effect_size: float
    effect_size_name: str
    confidence: float = 0.95
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-serialisable fields; NaN becomes None."""
        return {key: _json_value(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two classifiers on the same cases.

    Attributes:
        name: ``"McNemar exact"`` (binomial) or ``"McNemar chi-square"`` (continuity corrected).
        statistic: exact: min(b, c); chi-square: (max(|b - c| - 1, 0))^2 / (b + c).
        df: 1 for the chi-square test, NaN for the exact one.
        p_value: two-sided p-value.
        table: ``(2, 2)`` int64; rows A correct / A wrong, columns B correct / B wrong.
        only_a_correct: b = ``table[0, 1]``, cases A gets right and B wrong.
        only_b_correct: c = ``table[1, 0]``, cases B gets right and A wrong.
        exact: whether the exact binomial test was used.
        note: degenerate cases met, or "".
    """

    name: str
    statistic: float
    df: float
    p_value: float
    table: np.ndarray
    only_a_correct: int
    only_b_correct: int
    exact: bool
    note: str = ""

    def to_dict(self) -> dict:
        return {key: _json_value(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class AucDifferenceResult:
    """Paired bootstrap test of ``AUC(scores_a) - AUC(scores_b)`` on the same cases.

    Attributes:
        auc_a, auc_b: AUC of each score set on the full sample (macro one-vs-rest for k > 2).
        difference: ``auc_a - auc_b``.
        ci_low, ci_high: percentile bootstrap interval of the difference.
        p_value: two-sided bootstrap p-value (see ``compute_auc_difference_test``).
        std_error: standard deviation of the bootstrap differences.
        confidence: the confidence level.
        n_resamples: resamples drawn; n_valid: those on which both AUCs were defined.
        stratified: whether resamples kept the class counts.
        seed: generator seed.
        note: degenerate cases met, or "".
    """

    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    std_error: float
    confidence: float
    n_resamples: int
    n_valid: int
    stratified: bool
    seed: int | None
    note: str = ""

    def to_dict(self) -> dict:
        return {key: _json_value(value) for key, value in asdict(self).items()}


def _cohen_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled_var = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    return float((a.mean() - b.mean()) / math.sqrt(pooled_var))


def _no_difference(name: str, df: float, effect: str, confidence: float, what: str) -> TestResult:
    note = f"{what}: no difference and no spread, t = 0/0 is reported as 0 with p = 1"
    return TestResult(name, 0.0, df, 1.0, 0.0, 0.0, 0.0, 0.0, effect, confidence, note)


def _scipy_quietly(constant: bool, func, *args, **kwargs):
    """Call a scipy test, hiding its precision-loss warning when we know a sample is exactly constant
    (its variance 0 is then correct, not a cancellation artefact)."""
    with warnings.catch_warnings():
        if constant:
            warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return func(*args, **kwargs)


def _independent(a, b, equal_var: bool, confidence: float) -> TestResult:
    name = STUDENT if equal_var else WELCH
    confidence = check_confidence(confidence)
    x, y = as_sample(a, "a"), as_sample(b, "b")
    const_x, const_y = is_constant(x), is_constant(y)
    if const_x and const_y:
        if is_constant(np.concatenate([x, y])):
            df = float(x.size + y.size - 2) if equal_var else math.nan
            return _no_difference(name, df, "cohen_d", confidence, "both samples are the same constant")
        raise ValueError(
            f"both samples are constant (a = {x[0]:g}, b = {y[0]:g}): with zero variance the t statistic is "
            "undefined (a difference divided by 0); check the inputs, or report the difference without a test"
        )
    res = _scipy_quietly(const_x or const_y, sps.ttest_ind, x, y, equal_var=equal_var)
    ci = res.confidence_interval(confidence_level=confidence)
    note = "; ".join(f"sample {s} is constant" for s, c in (("a", const_x), ("b", const_y)) if c)
    return TestResult(
        name=name,
        statistic=float(res.statistic),
        df=float(res.df),
        p_value=float(res.pvalue),
        mean_difference=float(x.mean() - y.mean()),
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        effect_size=_cohen_d(x, y),
        effect_size_name="cohen_d",
        confidence=confidence,
        note=note,
    )


def compute_student_t(a, b, *, confidence: float = 0.95) -> TestResult:
    """Student's independent two-sample t-test (equal variances), as ``scipy.stats.ttest_ind``.

    Args:
        a: ``(n_a,)`` float scores of model A, n_a >= 2.
        b: ``(n_b,)`` float scores of model B, n_b >= 2.
        confidence: level of the CI of ``mean(a) - mean(b)`` (pooled variance).

    Returns:
        ``TestResult`` with df = n_a + n_b - 2 and Cohen's d (pooled SD).
    """
    return _independent(a, b, equal_var=True, confidence=confidence)


def compute_welch_t(a, b, *, confidence: float = 0.95) -> TestResult:
    """Welch's unequal-variance t-test, as ``scipy.stats.ttest_ind(equal_var=False)``.

    Args:
        a: ``(n_a,)`` float scores of model A, n_a >= 2.
        b: ``(n_b,)`` float scores of model B, n_b >= 2.
        confidence: level of the CI of ``mean(a) - mean(b)`` (Welch-Satterthwaite df).

    Returns:
        ``TestResult`` with Cohen's d (pooled SD, the usual effect size whichever t is used).
    """
    return _independent(a, b, equal_var=False, confidence=confidence)


def _paired_differences(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = as_sample(a, "a"), as_sample(b, "b")
    if x.size != y.size:
        raise ValueError(
            f"a paired test needs a and b of the same length (one pair per trial), got {x.size} and {y.size}"
        )
    return x, y, x - y


def _constant_differences(name: str, x, y, diff, df: float, confidence: float) -> TestResult | None:
    """The documented result for all-zero differences, a ValueError for constant non-zero ones, else None."""
    if not is_constant(diff):
        return None
    if is_zero(diff, max(float(np.max(np.abs(x))), float(np.max(np.abs(y))))):
        return _no_difference(name, df, "d_z", confidence, "every paired difference a - b is 0")
    raise ValueError(
        f"every paired difference a - b equals {diff[0]:g}: with zero variance the t statistic is undefined "
        "(a difference divided by 0); check the inputs, or report the difference without a test"
    )


def compute_paired_t(a, b, *, confidence: float = 0.95) -> TestResult:
    """Paired t-test on ``a - b``, as ``scipy.stats.ttest_rel``.

    Args:
        a: ``(n,)`` float scores of model A, one per trial, n >= 2.
        b: ``(n,)`` float scores of model B on the same trials (same order).
        confidence: level of the CI of the mean difference.

    Returns:
        ``TestResult`` with df = n - 1 and d_z = mean(d) / sd(d).
    """
    confidence = check_confidence(confidence)
    x, y, diff = _paired_differences(a, b)
    degenerate = _constant_differences(PAIRED, x, y, diff, float(diff.size - 1), confidence)
    if degenerate is not None:
        return degenerate
    res = sps.ttest_rel(x, y)
    ci = res.confidence_interval(confidence_level=confidence)
    d_z = float(diff.mean() / diff.std(ddof=1))
    return TestResult(
        name=PAIRED,
        statistic=float(res.statistic),
        df=float(res.df),
        p_value=float(res.pvalue),
        mean_difference=float(diff.mean()),
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        effect_size=d_z,
        effect_size_name="d_z",
        confidence=confidence,
    )


def compute_corrected_resampled_t(a, b, test_train_ratio: float, *, confidence: float = 0.95) -> TestResult:
    """Nadeau-Bengio corrected resampled t-test on paired per-fold (or per-split) scores.

    Folds or resampled splits share training cases, so the per-fold differences are correlated and
    the paired t-test's variance ``s^2 / J`` is too small. Nadeau and Bengio (2003, Machine
    Learning 52:239-281) inflate it to ``(1/J + n_test/n_train) * s^2``:
    ``t = mean(d) / sqrt((1/J + n_test/n_train) * s^2)`` with J - 1 degrees of freedom, where
    ``d = a - b`` and ``s^2`` is the sample variance of d (ddof=1).

    Args:
        a: ``(J,)`` float scores of model A, one per fold/split, J >= 2.
        b: ``(J,)`` float scores of model B on the same folds.
        test_train_ratio: n_test / n_train of one split, > 0. For k-fold cross-validation it is
            1 / (k - 1) (0.111 for 10 folds); for r repeats of k folds, J = r * k with the same ratio.
        confidence: level of the CI ``mean(d) +- t_(J-1) * sqrt((1/J + ratio) * s^2)``.

    Returns:
        ``TestResult`` with df = J - 1 and d_z = mean(d) / sd(d) (the uncorrected standardised mean).
    """
    confidence = check_confidence(confidence)
    if not (isinstance(test_train_ratio, numbers.Real) and math.isfinite(test_train_ratio) and test_train_ratio > 0):
        raise ValueError(
            f"test_train_ratio must be n_test / n_train > 0 (1 / (k - 1) for k-fold CV), got {test_train_ratio!r}"
        )
    x, y, diff = _paired_differences(a, b)
    n = diff.size
    degenerate = _constant_differences(CORRECTED, x, y, diff, float(n - 1), confidence)
    if degenerate is not None:
        return degenerate
    mean, var = float(diff.mean()), float(diff.var(ddof=1))
    std_error = math.sqrt((1.0 / n + test_train_ratio) * var)
    statistic = mean / std_error
    p_value = float(2.0 * sps.t.sf(abs(statistic), n - 1))
    half_width = float(sps.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std_error
    return TestResult(
        name=CORRECTED,
        statistic=statistic,
        df=float(n - 1),
        p_value=p_value,
        mean_difference=mean,
        ci_low=mean - half_width,
        ci_high=mean + half_width,
        effect_size=mean / math.sqrt(var),
        effect_size_name="d_z",
        confidence=confidence,
    )


def compute_detectable_difference(
    sd_difference: float, n_pairs: int, test_train_ratio: float, *, confidence: float = 0.95, power: float = 0.8
) -> float:
    """Smallest true mean difference the Nadeau-Bengio corrected t-test finds with probability ``power``.

    For J paired per-fold differences with standard deviation s, the corrected standard error is
    ``sqrt(1/J + n_test/n_train) * s``; a two-sided test at ``confidence`` detects a true difference
    delta with probability about ``power`` when ``delta >= (t_{(1+confidence)/2, J-1} + t_{power, J-1}) * SE``
    (the usual normal-theory approximation, with Student quantiles for J - 1 degrees of freedom).
    Use the observed s of a pilot or of the run itself: it says what this design (folds x trials, slides
    per fold) can tell apart; a smaller true difference is likely to come out "not significant".

    Args:
        sd_difference: standard deviation (ddof=1) of the per-fold differences, >= 0.
        n_pairs: J = trials x folds, >= 2.
        test_train_ratio: n_test / n_train of one fold, > 0.
        confidence: level of the test.
        power: wanted probability of detecting the difference, in (0, 1).

    Returns:
        The detectable difference in the metric's units (0 when the differences do not vary).
    """
    confidence = check_confidence(confidence)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if n_pairs < 2 or not math.isfinite(sd_difference) or sd_difference < 0 or not test_train_ratio > 0:
        raise ValueError(
            f"need n_pairs >= 2, sd_difference >= 0 and test_train_ratio > 0; got {n_pairs}, {sd_difference}, "
            f"{test_train_ratio}"
        )
    df = n_pairs - 1
    quantiles = sps.t.ppf((1.0 + confidence) / 2.0, df) + sps.t.ppf(power, df)
    return float(quantiles * math.sqrt(1.0 / n_pairs + test_train_ratio) * sd_difference)


def compare_scores(
    a, b, paired: bool, test_train_ratio: float | None = None, *, confidence: float = 0.95
) -> list[TestResult]:
    """Run every test that applies to two score samples.

    Args:
        a: float scores of model A (per trial or per fold).
        b: float scores of model B.
        paired: whether ``a[i]`` and ``b[i]`` come from the same trial/fold (same data split).
        test_train_ratio: n_test / n_train; adds the corrected resampled t-test (needs ``paired``).
        confidence: confidence level of every interval.

    Returns:
        Student t and Welch t; with ``paired`` also the paired t, and with ``test_train_ratio`` the
        Nadeau-Bengio corrected t. On paired data the independent tests carry a note that they
        ignore the pairing (the paper's Student test is kept for comparison with it).
    """
    if test_train_ratio is not None and not paired:
        raise ValueError("the corrected resampled t-test compares paired per-fold scores: pass paired=True as well")
    if paired:
        _paired_differences(a, b)  # length check first, so the error names the real problem
    results = [compute_student_t(a, b, confidence=confidence), compute_welch_t(a, b, confidence=confidence)]
    if not paired:
        return results
    ignored = "the samples are paired; this test ignores the pairing"
    results = [replace(r, note="; ".join(filter(None, [r.note, ignored]))) for r in results]
    results.append(compute_paired_t(a, b, confidence=confidence))
    if test_train_ratio is not None:
        results.append(compute_corrected_resampled_t(a, b, test_train_ratio, confidence=confidence))
    return results


def _correctness(y_true, pred_a, pred_b) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(v) for v in (y_true, pred_a, pred_b)]
    for arr, name in zip(arrays, ("y_true", "pred_a", "pred_b"), strict=True):
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array of labels, got shape {arr.shape}")
    check_same_length(arrays[0], arrays[1], "y_true", "pred_a")
    check_same_length(arrays[0], arrays[2], "y_true", "pred_b")
    return arrays[1] == arrays[0], arrays[2] == arrays[0]


def compute_mcnemar(y_true, pred_a, pred_b, exact: bool | None = None) -> McNemarResult:
    """McNemar's test: do two classifiers err on the same cases at different rates?

    Only the discordant cases count: b (A right, B wrong) and c (B right, A wrong). Uses
    ``statsmodels.stats.contingency_tables.mcnemar``; two cases are settled here instead, because
    statsmodels would give a wrong number:

    - no discordant case (b + c = 0): the classifiers agree everywhere; statistic 0, p = 1 with a
      note (statsmodels' chi-square gives 0/0 -> inf, p = 0);
    - chi-square with b = c: the continuity correction is clipped at zero, as scipy clips Yates'
      correction, giving statistic 0, p = 1 (statsmodels squares |b - c| - 1 = -1 into 1/(b + c)).

    Args:
        y_true: ``(n,)`` true labels (any comparable type).
        pred_a: ``(n,)`` predictions of classifier A.
        pred_b: ``(n,)`` predictions of classifier B.
        exact: True for the exact binomial test, False for chi-square with continuity correction,
            None to choose exact when b + c < 25.

    Returns:
        ``McNemarResult`` with the 2x2 table and the discordant counts.
    """
    right_a, right_b = _correctness(y_true, pred_a, pred_b)
    table = np.array(
        [
            [np.sum(right_a & right_b), np.sum(right_a & ~right_b)],
            [np.sum(~right_a & right_b), np.sum(~right_a & ~right_b)],
        ],
        dtype=np.int64,
    )
    b, c = int(table[0, 1]), int(table[1, 0])
    use_exact = (b + c < MCNEMAR_EXACT_BELOW) if exact is None else bool(exact)
    name = "McNemar exact" if use_exact else "McNemar chi-square"
    df = math.nan if use_exact else 1.0
    table.setflags(write=False)
    if b + c == 0:
        note = "no discordant cases: the classifiers are right and wrong on the same cases; p = 1"
        return McNemarResult(name, 0.0, df, 1.0, table, b, c, use_exact, note)
    if not use_exact and b == c:
        note = "b = c: the continuity-corrected statistic is clipped at 0, p = 1"
        return McNemarResult(name, 0.0, df, 1.0, table, b, c, use_exact, note)
    res = sm_mcnemar(table, exact=use_exact, correction=True)
    return McNemarResult(name, float(res.statistic), df, float(res.pvalue), table, b, c, use_exact)


def compute_auc_difference_test(
    y_true,
    scores_a,
    scores_b,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
) -> AucDifferenceResult:
    """Paired bootstrap test of the AUC difference of two score sets on the same cases.

    Each resample draws cases with replacement (within each class when ``stratified``) and scores
    both models on the same draw, so the correlation between them is kept. The interval is the
    percentile interval of the resampled differences; the p-value inverts it: twice the smaller
    share of resampled differences on either side of 0, ``2 * min(#(d* <= 0) + 1, #(d* >= 0) + 1) /
    (B + 1)`` capped at 1 (the +1 keeps a finite resample count from claiming p = 0).

    Args:
        y_true: ``(n,)`` int true class indices in ``[0, k)``.
        scores_a: ``(n, k)`` or binary ``(n,)`` scores of model A.
        scores_b: scores of model B, same shape as ``scores_a``.
        n_resamples: bootstrap resamples, >= 1.
        confidence: confidence level of the interval.
        stratified: keep the class counts in every resample.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``AucDifferenceResult``. The AUC is the macro one-vs-rest AUC over the classes present (the
        ordinary AUC for binary probabilities), as ``compute_roc(...).macro.auc``.
    """
    confidence = check_confidence(confidence)
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    matrix_a, _ = prepare_scores(scores_a)
    matrix_b, _ = prepare_scores(scores_b)
    if matrix_a.shape != matrix_b.shape:
        raise ValueError(f"scores_a and scores_b must have the same shape, got {matrix_a.shape} and {matrix_b.shape}")
    truth = as_labels(y_true, "y_true", matrix_a.shape[1])
    check_same_length(truth, matrix_a, "y_true", "scores")
    classes = np.array([c for c in range(matrix_a.shape[1]) if 0 < np.sum(truth == c) < truth.size], dtype=int)
    if classes.size == 0:
        raise ValueError("AUC is undefined: y_true holds a single class")
    full = np.arange(truth.size)[None, :]
    auc_a = float(_bootstrap.batch_macro_auc(truth, matrix_a, full, classes)[0])
    auc_b = float(_bootstrap.batch_macro_auc(truth, matrix_b, full, classes)[0])
    rng = np.random.default_rng(seed)
    strata = truth if stratified else None
    batches = _bootstrap.resample_index_batches(truth.size, int(n_resamples), rng, strata)
    diffs = np.concatenate(
        [
            _bootstrap.batch_macro_auc(truth, matrix_a, idx, classes)
            - _bootstrap.batch_macro_auc(truth, matrix_b, idx, classes)
            for idx in batches
        ]
    )
    valid = diffs[~np.isnan(diffs)]
    lost = diffs.size - valid.size
    common = {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b, "confidence": confidence}
    common |= {"n_resamples": int(n_resamples), "n_valid": int(valid.size), "stratified": stratified, "seed": seed}
    common["note"] = f"{lost} resamples lost every case of a class and were left out" if lost else ""
    if valid.size == 0:
        return AucDifferenceResult(ci_low=math.nan, ci_high=math.nan, p_value=math.nan, std_error=math.nan, **common)
    low, high = _bootstrap.percentile_interval(valid, confidence)
    below, above = int(np.sum(valid <= 0.0)), int(np.sum(valid >= 0.0))
    p_value = min(1.0, 2.0 * (min(below, above) + 1) / (valid.size + 1))
    std_error = float(valid.std(ddof=1)) if valid.size > 1 else math.nan
    return AucDifferenceResult(ci_low=low, ci_high=high, p_value=p_value, std_error=std_error, **common)
