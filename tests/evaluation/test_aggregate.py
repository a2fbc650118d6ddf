"""Metrics, summaries and comparisons of cross-validation predictions, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from allmtl_spark.evaluation import aggregate as agg
from allmtl_spark.metrics import compute_corrected_resampled_t, compute_mcnemar
from tests.evaluation.synthetic import CLASS_NAMES, make_predictions, make_runs

pytestmark = pytest.mark.unit

KEYS = {"backbone": "Xception", "task": "binary"}


def _case(trial, fold, approach, key, label, predicted, p_all=None):
    p_all = (0.9 if predicted == 1 else 0.1) if p_all is None else p_all
    return {
        "trial": trial,
        "fold": fold,
        **KEYS,
        "approach": approach,
        "content_sha256": key,
        "item_id": key,
        "label": label,
        "predicted": predicted,
        "scores": [1 - p_all, p_all],
    }


def _value(metrics, **where):
    rows = metrics
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, where
    return rows["value"].iloc[0]


@pytest.fixture
def small():
    """One trial, two folds of two slides each; mtl gets 4/4 right, classical 2/4."""
    truth = {"a": 1, "b": 0, "c": 1, "d": 0}
    fold_of = {"a": 0, "b": 0, "c": 1, "d": 1}
    classical = {"a": 1, "b": 1, "c": 0, "d": 0}
    rows = [_case(0, fold_of[k], "mtl", k, truth[k], truth[k]) for k in truth]
    rows += [_case(0, fold_of[k], "classical", k, truth[k], classical[k]) for k in truth]
    return pd.DataFrame(rows[::-1])  # reversed: nothing may depend on row order


def test_metrics_per_fold_and_pooled_trial(small):
    metrics = agg.compute_metrics_table(small, CLASS_NAMES)

    assert _value(metrics, fold=0, approach="classical", metric="accuracy") == 0.5
    assert _value(metrics, fold=1, approach="classical", metric="accuracy") == 0.5
    assert _value(metrics, fold=-1, approach="classical", metric="accuracy") == 0.5
    assert _value(metrics, fold=-1, approach="mtl", metric="accuracy") == 1.0
    assert _value(metrics, fold=-1, approach="classical", metric="n_test") == 4
    # classical pooled: a TP, b FP, c FN, d TN
    assert _value(metrics, fold=-1, approach="classical", metric="confusion", class_name="ALL/normal") == 1
    assert _value(metrics, fold=-1, approach="classical", metric="confusion", class_name="normal/ALL") == 1
    assert _value(metrics, fold=-1, approach="classical", metric="precision", class_name="ALL") == 0.5
    assert _value(metrics, fold=-1, approach="mtl", metric="auc", class_name="ALL") == 1.0
    assert _value(metrics, fold=-1, approach="mtl", metric="macro_f1", class_name="") == 1.0
    names = set(metrics["metric"])
    assert {"specificity", "support", "weighted_f1", "micro_precision", "micro_auc", "macro_auc"} <= names


def test_undefined_auc_is_nan_not_an_error():
    rows = pd.DataFrame([_case(0, 0, "mtl", k, 1, 1) for k in "ab"])  # one class only in the fold
    metrics = agg.compute_metrics_table(rows, CLASS_NAMES)
    assert np.isnan(_value(metrics, fold=0, metric="auc", class_name="ALL"))
    assert _value(metrics, fold=0, metric="accuracy") == 1.0


def test_summary_is_mean_and_sd_over_trials_and_over_folds():
    predictions = make_predictions(trials=3, folds=2, tasks=("binary",))
    metrics = agg.compute_metrics_table(predictions, CLASS_NAMES)
    summary = agg.summarize_metrics(metrics)

    acc = metrics[(metrics["metric"] == "accuracy") & (metrics["approach"] == "mtl")]
    row = summary[(summary["metric"] == "accuracy") & (summary["approach"] == "mtl")].iloc[0]
    per_trial = acc[acc["fold"] == -1]["value"].to_numpy()
    per_fold = acc[acc["fold"] >= 0]["value"].to_numpy()
    assert row["mean"] == pytest.approx(per_trial.mean()) and row["sd"] == pytest.approx(per_trial.std(ddof=1))
    assert row["fold_mean"] == pytest.approx(per_fold.mean()) and (row["n_trials"], row["n_folds"]) == (3, 6)


def test_paired_values_pair_by_trial_and_fold():
    metrics = pd.DataFrame(
        {
            "trial": [0, 0, 1, 1, 1, 0, 0, 1],
            "fold": [0, 1, 0, 1, 0, 1, 0, 1],
            **{k: v for k, v in KEYS.items()},
            "approach": ["mtl"] * 4 + ["classical"] * 4,
            "metric": "accuracy",
            "class_name": "",
            "value": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
        }
    )
    mtl, classical = agg.paired_values(metrics, "Xception", "binary", "accuracy", "fold")
    # pairs (0,0): .9/.3  (0,1): .8/.4  (1,0): .7/.5  (1,1): .6/.2
    assert mtl.tolist() == [0.9, 0.8, 0.7, 0.6] and classical.tolist() == [0.3, 0.4, 0.5, 0.2]


def test_compare_uses_the_fold_ratio_for_nadeau_bengio_and_only_at_fold_level():
    predictions = make_predictions(trials=2, folds=3, tasks=("binary",), skill={"mtl": 0.5, "classical": 0.2})
    metrics = agg.compute_metrics_table(predictions, CLASS_NAMES)

    tests = agg.compare_approaches(metrics, ["accuracy"], {"binary": 0.25})

    fold = tests[tests["level"] == "fold"]
    assert list(fold["test"]) == ["Student t", "Welch t", "paired t", "Nadeau-Bengio corrected t"]
    assert "Nadeau-Bengio corrected t" not in set(tests[tests["level"] == "trial"]["test"])
    mtl, classical = agg.paired_values(metrics, "InceptionV3", "binary", "accuracy", "fold")
    expected = compute_corrected_resampled_t(mtl, classical, 0.25)
    nb = fold[fold["test"] == "Nadeau-Bengio corrected t"].iloc[0]
    assert nb["n_pairs"] == 6 and nb["statistic"] == pytest.approx(expected.statistic)
    assert nb["mean_difference"] == pytest.approx(mtl.mean() - classical.mean())


def test_untestable_comparison_is_a_row_with_the_reason(small):
    metrics = agg.compute_metrics_table(small, CLASS_NAMES)
    tests = agg.compare_approaches(metrics, ["accuracy"], {"binary": 1.0})
    trial = tests[tests["level"] == "trial"]
    assert list(trial["test"]) == ["-"] and "not tested" in trial["note"].iloc[0]  # one trial: one pair


def test_paired_cases_match_the_same_slides_within_each_fold(small):
    cases = agg.paired_cases(small, "Xception", "binary", 0)
    assert list(cases["content_sha256"]) == ["a", "b", "c", "d"]
    assert list(cases["predicted_mtl"]) == [1, 0, 1, 0] and list(cases["predicted_classical"]) == [1, 1, 0, 0]
    broken = small.copy()
    broken.loc[(broken["approach"] == "mtl") & (broken["content_sha256"] == "a"), "label"] = 0
    with pytest.raises(ValueError, match="disagree on true labels"):
        agg.paired_cases(broken, "Xception", "binary", 0)


def test_mcnemar_counts_discordant_cases(small):
    table = agg.mcnemar_table(small)
    row = table.iloc[0]
    assert (row["n_cases"], row["both_right"], row["only_mtl_right"], row["only_classical_right"]) == (4, 2, 2, 0)
    expected = compute_mcnemar([1, 0, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0])
    assert row["p_value"] == pytest.approx(expected.p_value) and row["test"] == "McNemar exact"


def test_auc_difference_and_bootstrap_tables():
    predictions = make_predictions(trials=1, folds=2, tasks=("fab4",))
    auc = agg.auc_difference_table(predictions, n_resamples=100, confidence=0.9, seed=1)
    row = auc.iloc[0]
    assert row["difference"] == pytest.approx(row["auc_mtl"] - row["auc_classical"])
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["n_resamples"] == 100

    ci = agg.bootstrap_table(predictions, CLASS_NAMES, n_resamples=100, confidence=0.9, seed=1)
    assert set(ci["metric"]) == {"accuracy", "macro_f1", "auc"} and len(ci) == 2 * 3
    assert ((ci["ci_low"] <= ci["estimate"]) & (ci["estimate"] <= ci["ci_high"])).all()


def test_auc_test_of_a_single_class_trial_gives_a_note():
    rows = pd.DataFrame([_case(0, 0, a, k, 1, 1) for a in ("mtl", "classical") for k in "abc"])
    auc = agg.auc_difference_table(rows, n_resamples=10, confidence=0.95, seed=0)
    assert "single class" in auc["note"].iloc[0] and np.isnan(auc["difference"].iloc[0])


def test_test_train_ratio_is_the_mean_over_folds_per_task():
    runs = pd.DataFrame(
        {
            "task": ["binary"] * 4 + ["fab4"] * 2,
            "trial": [0, 0, 0, 0, 0, 0],
            "fold": [0, 0, 1, 1, 0, 1],
            "n_train": [10, 10, 12, 12, 8, 8],
            "n_test": [5, 5, 3, 3, 4, 4],
        }
    )
    assert agg.fold_test_train_ratio(runs) == {"binary": pytest.approx((0.5 + 0.25) / 2), "fab4": 0.5}


def test_evaluate_predictions_bundles_everything():
    predictions = make_predictions(trials=2, folds=2)
    results = agg.evaluate_predictions(
        predictions,
        make_runs(predictions),
        CLASS_NAMES,
        compare_metrics=["accuracy", "macro_auc"],
        n_resamples=50,
        confidence=0.95,
        seed=0,
        test_train_ratio=0.1,
    )
    assert results.test_train_ratio == {"binary": 0.1, "fab4": 0.1}
    assert set(results.comparisons["metric"]) == {"accuracy", "macro_auc"}
    assert len(results.mcnemar) == len(results.auc_tests) == 2 * 2  # tasks x trials


def test_headline_without_spread_does_not_claim_a_detectable_difference_of_zero():
    # Both approaches predict the same (say the majority class) on every fold: every fold's difference is 0,
    # so the power formula's 0 would read as "this design detects any difference".
    truth = {"a": 1, "b": 0, "c": 1, "d": 0}
    fold_of = {"a": 0, "b": 0, "c": 1, "d": 1}
    rows = [_case(0, fold_of[k], approach, k, truth[k], 0) for k in truth for approach in ("mtl", "classical")]
    metrics = agg.compute_metrics_table(pd.DataFrame(rows), CLASS_NAMES)
    comparisons = agg.compare_approaches(metrics, ["accuracy"], {"binary": 1.0})

    head = agg.headline_table(metrics, comparisons, {"binary": 1.0}, 0.95).iloc[0]

    assert head["mean_difference"] == 0
    assert np.isnan(head["detectable_difference"])
    assert "without spread" in head["verdict"] and "below 0.000" not in head["verdict"]
