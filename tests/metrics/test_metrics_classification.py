"""Classification metrics: hand-computed cases, agreement with scikit-learn, degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from allmtl_spark.metrics.classification import (
    compute_classification_metrics,
    compute_confusion,
    compute_metrics_from_confusion,
    compute_roc,
)

pytestmark = pytest.mark.unit

NAMES = ("normal", "L1", "L2", "L3")

# 8 cases, 3 classes. Confusion (rows true, cols predicted): [[2,1,0],[0,2,1],[1,0,1]].
HAND_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2])
HAND_PRED = np.array([0, 0, 1, 1, 1, 2, 2, 0])


def _random_case(n: int = 300, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Informative probability rows (summing to 1) on a coarse 1/20 grid, so that scores tie."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[np.arange(n), y] += rng.uniform(0.0, 1.0, n)
    probs /= probs.sum(axis=1, keepdims=True)
    counts = np.array([rng.multinomial(20, row) for row in probs])
    return y, counts / 20.0


def test_hand_computed_three_class_case():
    report = compute_classification_metrics(HAND_TRUE, class_names=["a", "b", "c"], y_pred=HAND_PRED)

    assert report.accuracy == pytest.approx(5 / 8)
    np.testing.assert_array_equal(report.confusion.counts, [[2, 1, 0], [0, 2, 1], [1, 0, 1]])
    np.testing.assert_allclose(report.precision, [2 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(report.recall, [2 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(report.f1, [2 / 3, 2 / 3, 1 / 2])
    # specificity = TN / (TN + FP): class a has 5 negatives, 1 of them predicted a.
    np.testing.assert_allclose(report.specificity, [4 / 5, 4 / 5, 5 / 6])
    np.testing.assert_array_equal(report.support, [3, 3, 2])
    assert report.macro.precision == pytest.approx(11 / 18)
    assert report.micro.precision == pytest.approx(5 / 8)
    assert report.micro.f1 == pytest.approx(5 / 8)
    assert report.weighted.recall == pytest.approx((3 * 2 / 3 + 3 * 2 / 3 + 2 * 1 / 2) / 8)
    assert report.micro.specificity == pytest.approx(13 / 16)  # (4 + 4 + 5) / (5 + 5 + 6)
    assert report.weighted.specificity == pytest.approx((3 * 0.8 + 3 * 0.8 + 2 * 5 / 6) / 8)
    np.testing.assert_allclose(report.confusion.row_percent[0], [200 / 3, 100 / 3, 0.0])
    assert report.roc is None
    assert report.notes == ()


def test_per_class_and_averages_match_sklearn():
    y, scores = _random_case()
    report = compute_classification_metrics(y, scores, NAMES)
    pred = scores.argmax(axis=1)
    labels = list(range(4))

    assert report.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(report.precision, p)
    np.testing.assert_allclose(report.recall, r)
    np.testing.assert_allclose(report.f1, f)
    np.testing.assert_array_equal(report.support, s)
    for kind in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=kind, zero_division=0)
        averaged = getattr(report, kind)
        assert (averaged.precision, averaged.recall, averaged.f1) == pytest.approx((p, r, f))
    np.testing.assert_array_equal(report.confusion.counts, skm.confusion_matrix(y, pred, labels=labels))
    # Specificity of class c is the recall of "not c".
    for c in range(4):
        assert report.specificity[c] == pytest.approx(skm.recall_score(y != c, pred != c))


def test_roc_matches_sklearn_per_class_micro_and_macro():
    y, scores = _random_case()
    roc = compute_roc(y, scores, NAMES)

    for c, curve in enumerate(roc.per_class):
        fpr, tpr, thresholds = skm.roc_curve(y == c, scores[:, c])
        np.testing.assert_allclose(curve.fpr, fpr)
        np.testing.assert_allclose(curve.tpr, tpr)
        np.testing.assert_array_equal(curve.thresholds, thresholds)
        assert curve.auc == pytest.approx(skm.roc_auc_score(y == c, scores[:, c]), abs=1e-12)
    onehot = np.eye(4)[y]
    assert roc.micro.auc == pytest.approx(skm.roc_auc_score(onehot, scores, average="micro"), abs=1e-12)
    assert roc.macro.auc == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovr", average="macro"), abs=1e-12)


def test_macro_curve_is_mean_of_class_curves_and_its_area_is_the_macro_auc():
    y, scores = _random_case(n=120, k=3, seed=3)
    roc = compute_roc(y, scores)
    macro = roc.macro

    assert macro.fpr[0] == 0.0 and macro.fpr[-1] == 1.0
    assert np.all(np.diff(macro.fpr) >= 0) and np.all(np.diff(macro.tpr) >= -1e-12)
    # The averaged curve's trapezoid area equals the mean per-class AUC exactly (vertical steps kept).
    assert skm.auc(macro.fpr, macro.tpr) == pytest.approx(np.mean([c.auc for c in roc.per_class]), abs=1e-12)
    # At a FPR strictly inside every class curve's linear pieces the macro TPR is the mean interpolated TPR.
    probe = 0.5 * (macro.fpr[macro.fpr > 0][0])
    expected = np.mean([np.interp(probe, c.fpr, c.tpr) for c in roc.per_class])
    assert np.interp(probe, macro.fpr, macro.tpr) == pytest.approx(expected)


def test_macro_curve_area_exact_with_vertical_steps():
    # Class curves with a diagonal piece ending on a vertical step at the same FPR: plain np.interp on the
    # union grid would get this area wrong.
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6], [0.45, 0.55]])
    roc = compute_roc(y, scores)
    assert skm.auc(roc.macro.fpr, roc.macro.tpr) == pytest.approx(roc.macro.auc, abs=1e-12)
    assert roc.macro.auc == pytest.approx(skm.roc_auc_score(y, scores[:, 1]))


@pytest.mark.filterwarnings("error")  # no UndefinedMetricWarning or division warning may leak out
def test_class_absent_from_y_true_gives_nan_auc_with_reason_and_is_left_out_of_macro():
    y, scores = _random_case(n=200, k=4, seed=1)
    y = np.where(y == 3, 2, y)  # L3 never occurs
    report = compute_classification_metrics(y, scores, NAMES)

    assert math.isnan(report.roc.auc["L3"])
    assert report.roc.per_class[3].fpr.size == 0
    assert "absent from y_true" in report.roc.per_class[3].note
    defined = [skm.roc_auc_score(y == c, scores[:, c]) for c in range(3)]
    assert report.roc.macro.auc == pytest.approx(np.mean(defined))
    assert report.recall[3] == 0.0 and report.support[3] == 0
    assert any("'L3'" in note and "macro" in note for note in report.notes)
    assert any("'L3'" in note and "recall is 0.0" in note for note in report.notes)


@pytest.mark.filterwarnings("error")
def test_never_predicted_class_has_precision_zero_and_a_note():
    report = compute_classification_metrics([0, 1, 2, 2], class_names=["a", "b", "c"], y_pred=[0, 0, 2, 2])
    assert report.precision[1] == 0.0
    assert report.precision[0] == pytest.approx(0.5)
    assert any("'b' is never predicted" in note for note in report.notes)


@pytest.mark.filterwarnings("error")
def test_single_class_y_true_gives_zero_specificity_and_undefined_aucs():
    report = compute_classification_metrics([1, 1, 1], np.array([0.2, 0.7, 0.9]), ["neg", "pos"])
    assert report.specificity[1] == 0.0
    assert math.isnan(report.roc.auc["pos"]) and math.isnan(report.roc.auc["neg"])
    assert math.isnan(report.roc.macro.auc)
    assert any("every case is class 'pos'" in note for note in report.notes)


def test_binary_1d_and_two_column_scores_agree():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 100)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 100), 0, 1)
    one_d = compute_classification_metrics(y, p1, ["healthy", "ALL"])
    two_d = compute_classification_metrics(y, np.column_stack([1 - p1, p1]), ["healthy", "ALL"])

    assert one_d.accuracy == pytest.approx(skm.accuracy_score(y, p1 >= 0.5))
    assert one_d.roc.auc["ALL"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert one_d.roc.macro.auc == pytest.approx(skm.roc_auc_score(y, p1))
    np.testing.assert_allclose(one_d.f1, two_d.f1)
    assert one_d.roc.auc == pytest.approx(two_d.roc.auc)


def test_binary_threshold_is_used_for_1d_scores():
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.2, 0.6, 0.8, 0.7])
    assert compute_classification_metrics(y, p1, threshold=0.5).accuracy == pytest.approx(0.75)
    assert compute_classification_metrics(y, p1, threshold=0.75).accuracy == pytest.approx(0.75)
    assert compute_classification_metrics(y, p1, threshold=0.65).accuracy == pytest.approx(0.5)


def test_explicit_y_pred_overrides_argmax_but_roc_uses_scores():
    y, scores = _random_case(n=50, k=3, seed=2)
    forced = np.zeros(50, dtype=int)
    report = compute_classification_metrics(y, scores, y_pred=forced)
    assert report.accuracy == pytest.approx(np.mean(y == 0))
    assert report.roc.macro.auc == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovr"))


def test_unnormalised_scores_are_used_as_is_and_noted():
    y, scores = _random_case(n=80, k=3, seed=4)
    logits = np.log(scores + 0.01) * 3.0
    report = compute_classification_metrics(y, logits)
    assert any("do not sum to 1" in note for note in report.notes)
    assert report.roc.auc["1"] == pytest.approx(skm.roc_auc_score(y == 1, logits[:, 1]))
    np.testing.assert_array_equal(report.confusion.counts, skm.confusion_matrix(y, logits.argmax(axis=1)))


def test_to_dict_is_strict_json_and_keeps_values():
    y, scores = _random_case(n=60, k=4, seed=6)
    y = np.where(y == 3, 0, y)  # NaN AUC for L3 must become null
    report = compute_classification_metrics(y, scores, NAMES)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    assert data["per_class"]["L3"]["auc"] is None
    assert data["per_class"]["L1"]["precision"] == pytest.approx(report.precision[1])
    assert data["macro"]["f1"] == pytest.approx(report.macro.f1)
    assert data["confusion"]["counts"] == report.confusion.counts.tolist()
    assert data["roc"]["micro"]["auc"] == pytest.approx(report.roc.micro.auc)
    assert data["roc"]["per_class"]["L1"]["thresholds"][0] is None  # the +inf first threshold
    assert data["notes"] == list(report.notes)


def test_report_arrays_are_read_only():
    report = compute_classification_metrics(HAND_TRUE, class_names=["a", "b", "c"], y_pred=HAND_PRED)
    with pytest.raises(ValueError, match="read-only"):
        report.precision[0] = 1.0


def test_metrics_from_confusion_equal_metrics_from_labels():
    from_labels = compute_classification_metrics(HAND_TRUE, class_names=["a", "b", "c"], y_pred=HAND_PRED)
    from_matrix = compute_metrics_from_confusion([[2, 1, 0], [0, 2, 1], [1, 0, 1]], ["a", "b", "c"])
    assert from_matrix.accuracy == pytest.approx(from_labels.accuracy)
    np.testing.assert_allclose(from_matrix.f1, from_labels.f1)
    np.testing.assert_allclose(from_matrix.specificity, from_labels.specificity)
    assert from_matrix.weighted == from_labels.weighted
    np.testing.assert_array_equal(from_matrix.confusion.counts, from_labels.confusion.counts)


def test_compute_confusion_row_percent_of_absent_class_is_zero():
    matrix = compute_confusion([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    np.testing.assert_array_equal(matrix.counts, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(matrix.row_percent, [[50, 50, 0], [0, 100, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_true": [0, 1, 5], "scores": np.full((3, 3), 1 / 3)}, r"class indices in \[0, 3\); found \[5\]"),
        ({"y_true": [0, 1], "scores": np.full((3, 3), 1 / 3)}, "same length, got 2 and 3"),
        ({"y_true": [0, 1, 0.5], "scores": np.full((3, 3), 1 / 3)}, "integer class indices"),
        ({"y_true": [[0, 1]], "scores": np.full((2, 2), 0.5)}, "y_true must be 1-D"),
        ({"y_true": [0, 1], "scores": [[0.5, np.nan], [0.5, 0.5]]}, r"non-finite value\(s\).*row\(s\) \[0\]"),
        ({"y_true": [0, 1], "scores": [[1.0], [1.0]]}, "at least 2 classes"),
        ({"y_true": [0, 1], "scores": [0.2, 1.4]}, r"in \[0, 1\]"),
        ({"y_true": [0, 1], "scores": [[0.5, 0.5], [0.1, 0.9]], "class_names": ["x"]}, "1 names but there are 2"),
        ({"y_true": [0, 1], "y_pred": [0, 1]}, "pass y_pred and class_names"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_classification_metrics(**kwargs)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], "square"),
        ([[1, -2], [3, 4]], "non-negative whole counts"),
        ([[1.5, 2], [3, 4]], "non-negative whole counts"),
        ([[0, 0], [0, 0]], "no cases"),
    ],
)
def test_bad_confusion_matrices_raise(counts, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics_from_confusion(counts, ["a", "b"] if len(counts) == 2 else ["a", "b", "c"])
