"""Cross-validation results from per-case predictions: metrics per fold and trial, and the
classical-vs-multistage comparisons. pandas glue around the pure functions of ``allmtl_spark.metrics``;
no Spark (the job gathers the small prediction table and calls these on the driver).

Frames used here:

- ``predictions``: one row per test case and model, columns ``trial, fold, backbone, task, approach,
  content_sha256, item_id, label, predicted, scores`` (``label``/``predicted`` class indices,
  ``scores`` a sequence of k floats in class order).
- ``metrics``: the long format of ``tables.EVALUATION_METRICS`` without ``eval_id``/``computed_at``:
  ``trial, fold, backbone, task, approach, metric, class_name, value``; ``fold == -1`` is the
  trial's folds pooled (every case predicted once, by the model that did not train on it).

Differences are always multistage minus classical (A = ``mtl``, B = ``classical``): positive means
the multistage model scored higher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from allmtl_spark.metrics import (
    ClassificationReport,
    compare_scores,
    compute_auc_difference_test,
    compute_bootstrap_ci,
    compute_classification_metrics,
    compute_detectable_difference,
    compute_mcnemar,
)

MODEL = ("backbone", "task", "approach")
FOLD_KEYS = ("trial", "fold", *MODEL)
METRIC_COLUMNS = (*FOLD_KEYS, "metric", "class_name", "value")
POOLED_FOLD = -1
MTL, CLASSICAL = "mtl", "classical"
AVERAGES = ("macro", "micro", "weighted")
PER_CLASS = ("precision", "recall", "specificity", "f1")


# ------------------------------------------------------------------------------------ metrics


def case_report(cases: pd.DataFrame, class_names: Sequence[str]) -> ClassificationReport:
    """Every classification metric of a set of prediction rows (one model, or one model's folds pooled).

    Args:
        cases: rows with ``label`` (int), ``predicted`` (int) and ``scores`` (k floats each).
        class_names: the k class names in score order.

    Returns:
        The ``ClassificationReport`` (labels from the stored ``predicted`` column, ROC from ``scores``).
    """
    scores = np.stack([np.asarray(s, dtype=np.float64) for s in cases["scores"]])
    return compute_classification_metrics(
        cases["label"].to_numpy(dtype=np.int64),
        scores,
        list(class_names),
        y_pred=cases["predicted"].to_numpy(dtype=np.int64),
    )


def report_rows(report: ClassificationReport) -> list[tuple[str, str, float]]:
    """A report as ``(metric, class_name, value)`` rows (the long format of ``evaluation_metrics``).

    Returns:
        accuracy and n_test (class ''); per class precision, recall, specificity, f1, support, auc;
        ``<macro|micro|weighted>_<precision|recall|specificity|f1>`` and ``micro_auc``/``macro_auc``
        (class ''); ``confusion`` counts with class ``<true>/<predicted>``. Undefined values are NaN.
    """
    rows = [("accuracy", "", float(report.accuracy)), ("n_test", "", float(report.n_samples))]
    aucs = report.roc.auc if report.roc is not None else {}
    for i, name in enumerate(report.class_names):
        rows += [(metric, name, float(getattr(report, metric)[i])) for metric in PER_CLASS]
        rows += [("support", name, float(report.support[i])), ("auc", name, float(aucs.get(name, math.nan)))]
    for kind in AVERAGES:
        averaged = getattr(report, kind)
        rows += [(f"{kind}_{metric}", "", float(getattr(averaged, metric))) for metric in PER_CLASS]
    if report.roc is not None:
        rows += [("micro_auc", "", float(report.roc.micro.auc)), ("macro_auc", "", float(report.roc.macro.auc))]
    counts = report.confusion.counts
    rows += [
        ("confusion", f"{true}/{pred}", float(counts[i, j]))
        for i, true in enumerate(report.class_names)
        for j, pred in enumerate(report.class_names)
    ]
    return rows


def compute_metrics_table(predictions: pd.DataFrame, class_names: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Metrics of every fold's model, and of each trial's folds pooled (``fold == -1``), long format.

    Args:
        predictions: the per-case test predictions (module docstring).
        class_names: task -> class names in score order.

    Returns:
        A ``metrics`` frame (module docstring), sorted by its keys.
    """
    records = []
    for keys, cases in predictions.groupby(list(FOLD_KEYS), sort=True):
        key = dict(zip(FOLD_KEYS, keys, strict=True))
        records += [
            {**key, "metric": m, "class_name": c, "value": v}
            for m, c, v in report_rows(case_report(cases, class_names[key["task"]]))
        ]
    for keys, cases in predictions.groupby(["trial", *MODEL], sort=True):
        key = dict(zip(("trial", *MODEL), keys, strict=True)) | {"fold": POOLED_FOLD}
        records += [
            {**key, "metric": m, "class_name": c, "value": v}
            for m, c, v in report_rows(case_report(cases, class_names[key["task"]]))
        ]
    frame = pd.DataFrame.from_records(records, columns=list(METRIC_COLUMNS))
    return frame.sort_values(list(METRIC_COLUMNS[:-1]), kind="stable").reset_index(drop=True)


def summarize_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD of every metric over trials (pooled-fold values) and over all folds.

    Returns:
        One row per backbone, task, approach, metric, class_name with ``mean``, ``sd``, ``n_trials``
        (over the trials' pooled values) and ``fold_mean``, ``fold_sd``, ``n_folds`` (over every
        fold of every trial). SDs are NaN from a single value.
    """
    keys = [*MODEL, "metric", "class_name"]
    pooled = metrics[metrics["fold"] == POOLED_FOLD].groupby(keys)["value"]
    folds = metrics[metrics["fold"] != POOLED_FOLD].groupby(keys)["value"]
    trial_stats = pooled.agg(mean="mean", sd="std", n_trials="count")
    fold_stats = folds.agg(fold_mean="mean", fold_sd="std", n_folds="count")
    return trial_stats.join(fold_stats, how="outer").reset_index()


def per_trial_scores(metrics: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One metric of each trial (folds pooled), classical beside multistage.

    Returns:
        Columns backbone, task, trial, classical, mtl, difference (mtl - classical); NaN where an
        approach was not evaluated.
    """
    rows = metrics[(metrics["fold"] == POOLED_FOLD) & (metrics["metric"] == metric) & (metrics["class_name"] == "")]
    wide = rows.pivot_table(index=["backbone", "task", "trial"], columns="approach", values="value", dropna=False)
    wide = wide.reindex(columns=[CLASSICAL, MTL])
    wide["difference"] = wide[MTL] - wide[CLASSICAL]
    wide.columns.name = None
    return wide.reset_index()


# ------------------------------------------------------------------------- score comparisons


def paired_values(metrics: pd.DataFrame, backbone: str, task: str, metric: str, level: str) -> tuple[np.ndarray, ...]:
    """Multistage and classical values of one metric, paired by (trial, fold).

    Args:
        level: ``fold`` (one pair per fold of every trial, J = R * k) or ``trial`` (one pair per
            trial, folds pooled).

    Returns:
        ``(mtl, classical)`` float arrays of equal length; pairs with a missing or NaN side are dropped.
    """
    rows = metrics[
        (metrics["backbone"] == backbone)
        & (metrics["task"] == task)
        & (metrics["metric"] == metric)
        & (metrics["class_name"] == "")
    ]
    rows = rows[rows["fold"] == POOLED_FOLD] if level == "trial" else rows[rows["fold"] != POOLED_FOLD]
    wide = rows.pivot_table(index=["trial", "fold"], columns="approach", values="value")
    if MTL not in wide or CLASSICAL not in wide:
        return np.array([]), np.array([])
    wide = wide[[MTL, CLASSICAL]].dropna()
    return wide[MTL].to_numpy(dtype=np.float64), wide[CLASSICAL].to_numpy(dtype=np.float64)


def compare_approaches(
    metrics: pd.DataFrame,
    compare_metrics: Sequence[str],
    test_train_ratio: Mapping[str, float],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """t-tests of multistage against classical per backbone, task and metric, at fold and trial level.

    Fold level: the J = R * k per-fold scores, paired by fold: Student, Welch, paired t and the
    Nadeau-Bengio corrected t (with the task's n_test / n_train). Trial level: the R per-trial
    pooled scores (the paper's 10-trial comparison): Student, Welch and paired t.

    Args:
        metrics: the long metrics frame.
        compare_metrics: metric names with class '' (``accuracy``, ``macro_f1``, ``macro_auc`` ...).
        test_train_ratio: task -> n_test / n_train of one fold.
        confidence: level of every interval.

    Returns:
        One row per test, or one row with ``test == "-"`` and the reason in ``note`` when the tests
        cannot run (fewer than 2 pairs, zero-variance differences). Columns: backbone, task, metric,
        level, n_pairs, mean_mtl, mean_classical, test, statistic, df, p_value, mean_difference,
        ci_low, ci_high, effect_size, effect_size_name, confidence, note.
    """
    rows = []
    pairs = metrics[list(MODEL[:2])].drop_duplicates().sort_values(list(MODEL[:2]))
    for backbone, task in pairs.itertuples(index=False):
        for metric in compare_metrics:
            for level in ("fold", "trial"):
                mtl, classical = paired_values(metrics, backbone, task, metric, level)
                if mtl.size == 0:
                    continue
                ratio = test_train_ratio.get(task) if level == "fold" else None
                head = {
                    "backbone": backbone,
                    "task": task,
                    "metric": metric,
                    "level": level,
                    "n_pairs": mtl.size,
                    "mean_mtl": float(mtl.mean()),
                    "mean_classical": float(classical.mean()),
                }
                rows += [head | r for r in _test_rows(mtl, classical, ratio, confidence)]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


COMPARE_COLUMNS = [
    "backbone",
    "task",
    "metric",
    "level",
    "n_pairs",
    "mean_mtl",
    "mean_classical",
    "test",
    "statistic",
    "df",
    "p_value",
    "mean_difference",
    "ci_low",
    "ci_high",
    "effect_size",
    "effect_size_name",
    "confidence",
    "note",
]


def _test_rows(mtl: np.ndarray, classical: np.ndarray, ratio: float | None, confidence: float) -> list[dict]:
    try:
        results = compare_scores(mtl, classical, paired=True, test_train_ratio=ratio, confidence=confidence)
    except ValueError as err:
        return [{"test": "-", "confidence": confidence, "note": f"not tested: {err}"}]
    return [{key: value for key, value in asdict(r).items() if key != "name"} | {"test": r.name} for r in results]


# ------------------------------------------------------------------------ per-case comparisons


def paired_cases(predictions: pd.DataFrame, backbone: str, task: str, trial: int) -> pd.DataFrame:
    """The multistage and classical predictions of the same test cases of one trial (its folds pooled).

    Cases are paired by fold and ``content_sha256``: within a fold both approaches were tested on
    the same slides.

    Returns:
        Columns fold, content_sha256, label, predicted_mtl, predicted_classical, scores_mtl,
        scores_classical; empty when an approach is missing.

    Raises:
        ValueError: a case carries different true labels for the two approaches.
    """
    rows = predictions[
        (predictions["backbone"] == backbone) & (predictions["task"] == task) & (predictions["trial"] == trial)
    ]
    columns = ["fold", "content_sha256", "label", "predicted", "scores"]
    mtl = rows[rows["approach"] == MTL][columns]
    classical = rows[rows["approach"] == CLASSICAL][columns]
    merged = mtl.merge(
        classical, on=["fold", "content_sha256"], suffixes=("_mtl", "_classical"), validate="one_to_one"
    ).sort_values(["fold", "content_sha256"])
    if (merged["label_mtl"] != merged["label_classical"]).any():
        raise ValueError(f"{backbone}/{task} trial {trial}: the two approaches disagree on true labels")
    return merged.rename(columns={"label_mtl": "label"}).drop(columns="label_classical").reset_index(drop=True)


def _trials_to_pair(predictions: pd.DataFrame):
    keys = predictions[["backbone", "task", "trial"]].drop_duplicates().sort_values(["backbone", "task", "trial"])
    for backbone, task, trial in keys.itertuples(index=False):
        cases = paired_cases(predictions, backbone, task, trial)
        if not cases.empty:
            yield {"backbone": backbone, "task": task, "trial": int(trial), "n_cases": len(cases)}, cases


def mcnemar_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """McNemar's test of multistage against classical on each trial's test cases (folds pooled).

    Returns:
        One row per backbone, task, trial: n_cases, both_right, only_mtl_right, only_classical_right,
        both_wrong, test (exact / chi-square), statistic, df, p_value, note.
    """
    rows = []
    for head, cases in _trials_to_pair(predictions):
        r = compute_mcnemar(
            cases["label"].to_numpy(), cases["predicted_mtl"].to_numpy(), cases["predicted_classical"].to_numpy()
        )
        rows.append(
            head
            | {
                "both_right": int(r.table[0, 0]),
                "only_mtl_right": r.only_a_correct,
                "only_classical_right": r.only_b_correct,
                "both_wrong": int(r.table[1, 1]),
                "test": r.name,
                "statistic": r.statistic,
                "df": r.df,
                "p_value": r.p_value,
                "note": r.note,
            }
        )
    return pd.DataFrame(rows, columns=MCNEMAR_COLUMNS)


MCNEMAR_COLUMNS = [
    "backbone",
    "task",
    "trial",
    "n_cases",
    "both_right",
    "only_mtl_right",
    "only_classical_right",
    "both_wrong",
    "test",
    "statistic",
    "df",
    "p_value",
    "note",
]


def auc_difference_table(predictions: pd.DataFrame, n_resamples: int, confidence: float, seed: int) -> pd.DataFrame:
    """Paired bootstrap test of the macro AUC difference (multistage - classical) per trial (folds pooled).

    Returns:
        One row per backbone, task, trial: n_cases, auc_mtl, auc_classical, difference, ci_low,
        ci_high, p_value, std_error, n_resamples, n_valid, note (the reason when untestable).
    """
    rows = []
    for head, cases in _trials_to_pair(predictions):
        labels = cases["label"].to_numpy(dtype=np.int64)
        a, b = (np.stack([np.asarray(s, np.float64) for s in cases[c]]) for c in ("scores_mtl", "scores_classical"))
        try:
            r = compute_auc_difference_test(labels, a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
        except ValueError as err:
            rows.append(head | {"note": f"not tested: {err}"})
            continue
        rows.append(head | {"auc_mtl": r.auc_a, "auc_classical": r.auc_b} | {k: getattr(r, k) for k in AUC_COLUMNS[6:]})
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


AUC_COLUMNS = [
    "backbone",
    "task",
    "trial",
    "n_cases",
    "auc_mtl",
    "auc_classical",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "std_error",
    "n_resamples",
    "n_valid",
    "note",
]


def bootstrap_table(
    predictions: pd.DataFrame, class_names: Mapping[str, Sequence[str]], n_resamples: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Percentile bootstrap CIs of accuracy, macro F1 and macro AUC per model and trial (folds pooled).

    Returns:
        One row per backbone, task, approach, trial, metric: estimate, ci_low, ci_high, confidence,
        n_resamples, n_valid, note.
    """
    rows = []
    for keys, cases in predictions.groupby([*MODEL, "trial"], sort=True):
        head = dict(zip((*MODEL, "trial"), keys, strict=True))
        scores = np.stack([np.asarray(s, np.float64) for s in cases["scores"]])
        try:
            intervals = compute_bootstrap_ci(
                cases["label"].to_numpy(dtype=np.int64),
                scores,
                y_pred=cases["predicted"].to_numpy(dtype=np.int64),
                class_names=list(class_names[head["task"]]),
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            )
        except ValueError as err:
            rows.append(head | {"metric": "-", "note": f"not computed: {err}"})
            continue
        rows += [
            head
            | {
                "metric": ci.metric,
                "estimate": ci.estimate,
                "ci_low": ci.ci_low,
                "ci_high": ci.ci_high,
                "confidence": ci.confidence,
                "n_resamples": ci.n_resamples,
                "n_valid": ci.n_valid,
                "note": ci.note,
            }
            for ci in intervals.values()
        ]
    return pd.DataFrame(rows, columns=BOOTSTRAP_COLUMNS)


BOOTSTRAP_COLUMNS = [
    "backbone",
    "task",
    "approach",
    "trial",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "confidence",
    "n_resamples",
    "n_valid",
    "note",
]


def fold_test_train_ratio(runs: pd.DataFrame) -> dict[str, float]:
    """Nadeau-Bengio's n_test / n_train per task: the mean over the evaluated folds.

    Args:
        runs: ``evaluation_runs`` rows (columns task, trial, fold, n_train, n_test).

    Returns:
        task -> mean of n_test / n_train over that task's (trial, fold) splits.
    """
    splits = runs.drop_duplicates(["task", "trial", "fold"])
    splits = splits[splits["n_train"] > 0]
    ratios = (splits["n_test"] / splits["n_train"]).groupby(splits["task"]).mean()
    return {task: float(value) for task, value in ratios.items()}


# ------------------------------------------------------------------------------------ headline


HEADLINE_COLUMNS = [
    "task",
    "backbone",
    "n_pairs",
    "mean_mtl",
    "mean_classical",
    "mean_difference",
    "ci_low",
    "ci_high",
    "p_value",
    "detectable_difference",
    "verdict",
]


def headline_table(
    metrics: pd.DataFrame, comparisons: pd.DataFrame, ratio: Mapping[str, float], confidence: float
) -> pd.DataFrame:
    """The answer the evaluation exists for: multistage minus classical accuracy over folds x trials.

    Per backbone and task: J = trials x folds paired fold accuracies, the mean difference with its
    Nadeau-Bengio corrected CI and p-value, and the smallest true difference this design detects
    with 80% power (``compute_detectable_difference`` from the observed spread of the differences).

    Returns:
        Columns of ``HEADLINE_COLUMNS``; ``verdict`` says in words what the interval allows.
    """
    rows = []
    fold_rows = comparisons[(comparisons["metric"] == "accuracy") & (comparisons["level"] == "fold")]
    for (backbone, task), group in fold_rows.groupby(["backbone", "task"], sort=True):
        nb = group[group["test"] == "Nadeau-Bengio corrected t"]
        mtl, classical = paired_values(metrics, backbone, task, "accuracy", "fold")
        diff = mtl - classical
        row = {
            "task": task,
            "backbone": backbone,
            "n_pairs": int(diff.size),
            "mean_mtl": float(mtl.mean()) if diff.size else math.nan,
            "mean_classical": float(classical.mean()) if diff.size else math.nan,
            "mean_difference": float(diff.mean()) if diff.size else math.nan,
        }
        if nb.empty:
            note = group["note"].dropna().iloc[0] if group["note"].notna().any() else "not tested"
            rows.append(row | {"verdict": str(note)})
            continue
        r = nb.iloc[0]
        spread = float(diff.std(ddof=1)) if diff.size >= 2 else math.nan
        # With no spread (identical fold differences, e.g. both models at the majority class) the power
        # formula gives 0, which would read as "this design detects everything": say so instead.
        detectable = (
            compute_detectable_difference(spread, diff.size, ratio[task], confidence=confidence)
            if spread > 0 and task in ratio
            else math.nan
        )
        if r["ci_low"] > 0:
            verdict = "multistage ahead"
        elif r["ci_high"] < 0:
            verdict = "classical ahead"
        elif spread == 0:
            verdict = (
                f"no difference shown (every fold's difference is {float(diff[0]):+.3f}: without spread this run "
                "cannot say what difference the design would detect)"
            )
        else:
            verdict = f"no difference shown (CI includes 0; differences below {detectable:.3f} are likely missed)"
        rows.append(
            row
            | {
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "p_value": r["p_value"],
                "detectable_difference": detectable,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


# ----------------------------------------------------------------------------------- all of it


@dataclass(frozen=True)
class EvaluationResults:
    """Everything the report shows, computed from the prediction table on the driver."""

    predictions: pd.DataFrame  # the per-case test predictions
    class_names: dict[str, tuple[str, ...]]  # task -> class names
    runs: pd.DataFrame  # evaluation_runs rows
    metrics: pd.DataFrame  # long metrics, per fold and per trial (fold -1)
    summary: pd.DataFrame  # summarize_metrics
    test_train_ratio: dict[str, float]  # task -> the Nadeau-Bengio ratio used
    comparisons: pd.DataFrame  # compare_approaches
    mcnemar: pd.DataFrame  # mcnemar_table
    auc_tests: pd.DataFrame  # auc_difference_table
    bootstrap: pd.DataFrame  # bootstrap_table
    headline: pd.DataFrame  # headline_table: multistage - classical over folds x trials


def evaluate_predictions(
    predictions: pd.DataFrame,
    runs: pd.DataFrame,
    class_names: Mapping[str, Sequence[str]],
    *,
    compare_metrics: Sequence[str],
    n_resamples: int,
    confidence: float,
    seed: int,
    test_train_ratio: float | None = None,
) -> EvaluationResults:
    """Metrics, summaries and every classical-vs-multistage test of a cross-validation run.

    Args:
        predictions: per-case test predictions (module docstring).
        runs: ``evaluation_runs`` rows (task, trial, fold, n_train, n_test at least).
        class_names: task -> class names in score order.
        compare_metrics: metrics (class '') compared with t-tests.
        n_resamples: bootstrap resamples for the CIs and the AUC-difference test.
        confidence: level of every interval.
        seed: bootstrap seed.
        test_train_ratio: Nadeau-Bengio n_test / n_train for every task; None: from the folds' sizes.

    Returns:
        The ``EvaluationResults``.
    """
    names = {task: tuple(values) for task, values in class_names.items()}
    metrics = compute_metrics_table(predictions, names)
    measured = fold_test_train_ratio(runs)
    ratio = {task: test_train_ratio for task in measured} if test_train_ratio is not None else measured
    comparisons = compare_approaches(metrics, compare_metrics, ratio, confidence)
    return EvaluationResults(
        predictions=predictions,
        class_names=names,
        runs=runs,
        metrics=metrics,
        summary=summarize_metrics(metrics),
        test_train_ratio=ratio,
        comparisons=comparisons,
        mcnemar=mcnemar_table(predictions),
        auc_tests=auc_difference_table(predictions, n_resamples, confidence, seed),
        bootstrap=bootstrap_table(predictions, names, n_resamples, confidence, seed),
        headline=headline_table(metrics, comparisons, ratio, confidence),
    )
