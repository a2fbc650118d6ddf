"""``score_aggregates``: stage-wise counts, labelled-slide metrics with CIs, model-version comparison.

Counts are Spark aggregations (``stage_counts``); the metrics are pure pandas/numpy functions of the
labelled slides, at most ``score.metrics_max_slides`` of them collected to the driver
(``compute_aggregates``), using the ``metrics`` functions (scikit-learn / scipy / statsmodels
underneath). The driver's memory does not grow with ``slide_scores`` (``allmtl bench aggregates``).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.stats import binomtest

from allmtl_spark import tables
from allmtl_spark.config.schema import ScoreConfig
from allmtl_spark.metrics.classification import compute_bootstrap_ci, compute_classification_metrics
from allmtl_spark.metrics.stats import compute_auc_difference_test, compute_mcnemar

COLUMNS = ["scope", "scope_value", "metric", "class_name", "value", "ci_low", "ci_high", "n", "undefined_reason"]
BINARY_CLASSES = ("normal", "leukemia")


def _row(scope, scope_value, metric, class_name="", value=None, ci=(None, None), n=None, undefined=None) -> dict:
    """One aggregate row; ``undefined`` (why the value does not exist) empties the value and its interval."""
    clean = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    if undefined is not None:
        clean, ci = None, (None, None)
    return {
        "scope": scope,
        "scope_value": str(scope_value),
        "metric": metric,
        "class_name": class_name,
        "value": clean,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n": None if n is None else int(n),
        "undefined_reason": undefined,
    }


def undefined_reasons(support: int, predicted: int, negatives: int, auc: float) -> dict[str, str]:
    """Why a class's one-vs-rest metrics do not exist (a ratio over zero slides), by metric; {} when all do.

    Args:
        support: labelled slides of the class; predicted: slides called the class; negatives: labelled
            slides of the other classes; auc: the class's AUC (NaN when undefined).
    """
    reasons = {}
    if predicted == 0:
        reasons["precision"] = "no slide was called this class"
    if support == 0:
        reasons["recall"] = "no labelled slide of this class"
    if negatives == 0:
        reasons["specificity"] = "every labelled slide is of this class"
    if "precision" in reasons or "recall" in reasons:
        reasons["f1"] = reasons.get("recall") or reasons["precision"]
    if auc is None or math.isnan(auc):
        reasons["auc"] = reasons.get("recall") or reasons.get("specificity") or "needs slides of this class and others"
    return reasons


def compute_proportion_ci(successes: int, n: int, confidence: float) -> tuple[float | None, float | None]:
    """Exact (Clopper-Pearson) interval of a proportion (``scipy.stats.binomtest``); (None, None) for n = 0."""
    if n == 0:
        return None, None
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def needs_review(frame: pd.DataFrame) -> pd.Series:
    """Per row, whether the slide needs review (False for rows scored before the column existed)."""
    if "needs_review" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["needs_review"].fillna(False).astype(bool)


def stage_counts(scores: DataFrame, run_id: str) -> pd.DataFrame:
    """Slides per predicted class and review flag, and flagged slides per review reason, in Spark.

    Scopes: this run, each scoring day and each site (all runs of the version).

    Args:
        scores: ``slide_scores`` rows of one model version (a Spark DataFrame, any size).
        run_id: the scoring run whose slides make the ``run`` scope.

    Returns:
        A small pandas frame ``scope, key, predicted_class, review, reason, n, leukemia``: rows with
        no ``reason`` count slides per class and ``review`` flag (``leukemia`` of them called
        leukemia); rows with a ``reason`` count the flagged slides giving that reason.
    """
    keys = F.array(
        F.struct(F.lit("run").alias("scope"), F.when(F.col("scoring_run_id") == run_id, F.lit(run_id)).alias("key")),
        F.struct(F.lit("day").alias("scope"), F.date_format("scored_at", "yyyy-MM-dd").alias("key")),
        F.struct(F.lit("site").alias("scope"), F.coalesce(F.col("site"), F.lit("unknown")).alias("key")),
    )
    no_reasons = F.array().cast("array<string>")
    review = F.coalesce(F.col("needs_review"), F.lit(False)) if "needs_review" in scores.columns else F.lit(False)
    reasons = F.coalesce(F.col("review_reasons"), no_reasons) if "review_reasons" in scores.columns else no_reasons
    keyed = scores.select(
        F.explode(keys).alias("k"), "predicted_class", "predicted_leukemia", review.alias("review"), reasons.alias("rs")
    ).where(F.col("k.key").isNotNull())
    scope = [F.col("k.scope").alias("scope"), F.col("k.key").alias("key")]
    classes = keyed.groupBy(*scope, "predicted_class", "review").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("predicted_leukemia").cast("long")).alias("leukemia")
    )
    per_reason = (
        keyed.where("review")
        .select(*scope, F.explode("rs").alias("reason"))
        .groupBy("scope", "key", "reason")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    return classes.unionByName(per_reason, allowMissingColumns=True).toPandas()


def count_rows(counts: pd.DataFrame, class_names: list[str]) -> list[dict]:
    """Aggregate rows from ``stage_counts``.

    The stage-wise counts (``count`` per class, 0 where absent, and ``leukemia_count``) leave out
    slides that need review; those are counted separately (``needs_review``, n = all scored slides
    of the scope) and per reason (``review_reason``, class_name the reason).
    """
    rows = []
    for scope in ("run", "day", "site"):
        scoped = counts[counts["scope"] == scope]
        for key, group in sorted(scoped.groupby("key"), key=lambda kv: kv[0]):
            classes = group[group["reason"].isna()]
            flagged = classes["review"].fillna(False).astype(bool)
            trusted = classes[~flagged]
            n = int(trusted["n"].sum())
            per_class = trusted.groupby("predicted_class")["n"].sum().astype(int).to_dict()
            rows += [_row(scope, key, "count", c, per_class.get(c, 0), n=n) for c in class_names]
            rows.append(_row(scope, key, "leukemia_count", "", int(trusted["leukemia"].fillna(0).sum()), n=n))
            n_all = int(classes["n"].sum())
            rows.append(_row(scope, key, "needs_review", "", int(classes[flagged]["n"].sum()), n=n_all))
            reasons = group[group["reason"].notna()].sort_values(["n", "reason"], ascending=[False, True])
            rows += [
                _row(scope, key, "review_reason", r, int(v), n=n_all)
                for r, v in zip(reasons["reason"], reasons["n"], strict=True)
            ]
    return rows


def labelled_rows(frame: pd.DataFrame, class_names: list[str], cfg: ScoreConfig) -> list[dict]:
    """Metrics on the labelled slides, with bootstrap confidence intervals.

    Stage-wise (the model's classes) where slides carry that label, and normal vs leukemia wherever
    they carry a binary one: ALL-IDB1 names give only the latter, so a 4-class model scoring an
    ALL-IDB1 archive still reports how often it tells leukemia from normal.
    """
    return _stage_rows(frame, class_names, cfg) + _binary_rows(frame, cfg) + selective_rows(frame, class_names)


COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _shown(frame: pd.DataFrame) -> np.ndarray:
    """(n, k) probabilities as reported: calibrated where a row has them, else raw."""
    if "calibrated_probabilities" not in frame:
        return np.stack(frame["probabilities"].to_numpy())
    return np.stack(
        [
            np.asarray(c if c is not None else p, dtype=float)
            for c, p in zip(frame["calibrated_probabilities"], frame["probabilities"], strict=True)
        ]
    )


def selective_rows(frame: pd.DataFrame, class_names: list[str]) -> list[dict]:
    """How accurate the model is on the slides it does not flag, and accuracy-vs-coverage by confidence.

    For the stage-wise task (where slides carry the model's labels) and normal vs leukemia (binary
    labels): ``<task>_accuracy_not_flagged`` (n = slides not needing review), ``<task>_coverage_not_flagged``
    (share of labelled slides not flagged), and ``<task>_accuracy_at_coverage`` per coverage in
    ``COVERAGES`` (class_name the coverage): the accuracy of the most confident slides (calibrated
    top-class probability) when only that share is kept.
    """
    from allmtl_spark.metrics.calibration import compute_risk_coverage

    rows = []
    flagged = needs_review(frame)
    truth = frame["label_fab"] if len(class_names) == 4 else frame["label_binary"].map({0: "normal", 1: "ALL"})
    stage = frame[truth.isin(class_names)]
    binary = frame[frame["label_binary"].isin([0, 1])]
    for name, part in (("stage", stage), ("binary", binary)):
        if part.empty:
            continue
        probs = _shown(part)
        if name == "stage":
            y = truth[part.index].map({c: i for i, c in enumerate(class_names)}).to_numpy(int)
            correct, confidence = probs.argmax(axis=1) == y, probs.max(axis=1)
        else:
            p = 1.0 - probs[:, class_names.index("normal")]
            correct = (p >= 0.5).astype(int) == part["label_binary"].to_numpy(int)
            confidence = np.maximum(p, 1.0 - p)
        keep = ~flagged[part.index].to_numpy()
        n = len(part)
        rows.append(_row("labelled", "all", f"{name}_coverage_not_flagged", "", keep.mean(), n=n))
        rows.append(
            _row(
                "labelled",
                "all",
                f"{name}_accuracy_not_flagged",
                "",
                correct[keep].mean() if keep.any() else None,
                n=int(keep.sum()),
            )
        )
        curve = compute_risk_coverage(correct, confidence)
        rows += [
            _row(
                "labelled",
                "all",
                f"{name}_accuracy_at_coverage",
                f"{c:.1f}",
                curve.accuracy_at(c),
                n=math.ceil(c * n - 1e-9),
            )
            for c in COVERAGES
        ]
    return rows


def _stage_rows(frame: pd.DataFrame, class_names: list[str], cfg: ScoreConfig) -> list[dict]:
    """Accuracy, macro F1/AUC, per-class metrics and the confusion matrix over the model's classes."""
    truth = frame["label_fab"] if len(class_names) == 4 else frame["label_binary"].map({0: "normal", 1: "ALL"})
    known = frame[truth.isin(class_names)]
    if len(known) < 2:
        return []
    y_true = truth[known.index].map({c: i for i, c in enumerate(class_names)}).to_numpy(int)
    scores = np.stack(known["probabilities"].to_numpy())
    report = compute_classification_metrics(y_true, scores, class_names)
    cis = (
        compute_bootstrap_ci(
            y_true,
            scores,
            class_names=class_names,
            n_resamples=cfg.bootstrap_resamples,
            confidence=cfg.confidence,
            seed=cfg.seed,
        )
        if cfg.bootstrap_resamples
        else {}
    )
    n = len(known)

    def ci(name):
        return (cis[name].ci_low, cis[name].ci_high) if name in cis else (None, None)

    macro_auc = report.roc.macro.auc if report.roc else None
    rows = [
        _row("labelled", "all", "accuracy", "", report.accuracy, ci("accuracy"), n),
        _row("labelled", "all", "macro_f1", "", report.macro.f1, ci("macro_f1"), n),
        _row(
            "labelled",
            "all",
            "macro_auc",
            "",
            macro_auc,
            ci("auc"),
            n,
            undefined=None if macro_auc is not None and not math.isnan(macro_auc) else "no class has a defined AUC",
        ),
    ]
    counts = report.confusion.counts
    for i, (name, values) in enumerate(report.per_class().items()):
        support = values["support"]
        reasons = undefined_reasons(support, int(counts[:, i].sum()), n - support, values["auc"])
        rows += [
            _row("labelled", "all", metric, name, values[metric], n=support, undefined=reasons.get(metric))
            for metric in ("precision", "recall", "specificity", "f1", "auc")
        ]
    rows += [
        _row("labelled", "all", "confusion", f"{t}/{p}", counts[i, j], n=n)
        for i, t in enumerate(class_names)
        for j, p in enumerate(class_names)
    ]
    return rows


def _binary_rows(frame: pd.DataFrame, cfg: ScoreConfig) -> list[dict]:
    """Normal vs leukemia from ``p_leukemia`` (called leukemia at >= 0.5), whenever slides carry a binary label.

    Both classes present: accuracy and AUC with bootstrap intervals, sensitivity and specificity. One class
    only (an archive of normal smears): accuracy and that class's rate (specificity for normal slides,
    sensitivity for leukemic ones) with exact binomial intervals; the other rate and the AUC are undefined and
    their rows say why. Always: the 2x2 counts (``binary_confusion``, ``true/called``).
    """
    labelled = frame[frame["label_binary"].isin([0, 1])]
    if labelled.empty:
        return []
    y = labelled["label_binary"].to_numpy(int)
    p = labelled["p_leukemia"].to_numpy(float)
    called = (p >= 0.5).astype(int)
    n, n_leukemia = len(y), int(y.sum())
    rows = [
        _row("labelled", "all", "binary_confusion", f"{t}/{c}", int(((y == i) & (called == j)).sum()), n=n)
        for i, t in enumerate(BINARY_CLASSES)
        for j, c in enumerate(BINARY_CLASSES)
    ]
    if 0 < n_leukemia < n:
        return rows + _two_class_rows(y, p, cfg)
    present = "leukemia" if n_leukemia else "normal"
    one_class = f"every labelled slide is {present} ({n})"
    correct = int((called == y).sum())
    rate = ("sensitivity", "specificity") if n_leukemia else ("specificity", "sensitivity")
    return rows + [
        _row(
            "labelled", "all", "binary_accuracy", "", correct / n, compute_proportion_ci(correct, n, cfg.confidence), n
        ),
        _row("labelled", "all", "binary_auc", "", n=n, undefined=f"{one_class}: an AUC needs both classes"),
        _row("labelled", "all", rate[0], "leukemia", correct / n, compute_proportion_ci(correct, n, cfg.confidence), n),
        _row(
            "labelled",
            "all",
            rate[1],
            "leukemia",
            n=0,
            undefined=f"{one_class}: no {BINARY_CLASSES[n_leukemia == 0]} slide",
        ),
    ]


def _two_class_rows(y: np.ndarray, p: np.ndarray, cfg: ScoreConfig) -> list[dict]:
    report = compute_classification_metrics(y, p, list(BINARY_CLASSES))
    cis = (
        compute_bootstrap_ci(
            y,
            p,
            class_names=list(BINARY_CLASSES),
            n_resamples=cfg.bootstrap_resamples,
            confidence=cfg.confidence,
            seed=cfg.seed,
        )
        if cfg.bootstrap_resamples
        else {}
    )
    n = len(y)
    return [
        _row(
            "labelled",
            "all",
            "binary_accuracy",
            "",
            report.accuracy,
            (cis["accuracy"].ci_low, cis["accuracy"].ci_high) if "accuracy" in cis else (None, None),
            n,
        ),
        _row(
            "labelled",
            "all",
            "binary_auc",
            "",
            report.roc.per_class[1].auc,
            (cis["auc"].ci_low, cis["auc"].ci_high) if "auc" in cis else (None, None),
            n,
        ),
        _row("labelled", "all", "sensitivity", "leukemia", report.recall[1], n=int(report.support[1])),
        _row("labelled", "all", "specificity", "leukemia", report.specificity[1], n=int(report.support[0])),
    ]


def comparison_rows(pairs: pd.DataFrame, previous_version: str, cfg: ScoreConfig) -> list[dict]:
    """McNemar on per-slide correctness and a paired bootstrap test of the AUC difference (normal vs leukemia).

    Args:
        pairs: one row per slide both versions scored: ``label_binary``, ``predicted_leukemia``,
            ``p_leukemia`` and the previous version's ``predicted_leukemia_prev``, ``p_leukemia_prev``.
    """
    both = pairs[pairs["label_binary"].isin([0, 1])]
    if len(both) < 2 or both["label_binary"].nunique() < 2:
        return []
    y = both["label_binary"].to_numpy(int)
    mcnemar = compute_mcnemar(
        y, both["predicted_leukemia"].to_numpy(int), both["predicted_leukemia_prev"].to_numpy(int)
    )
    auc = compute_auc_difference_test(
        y,
        both["p_leukemia"].to_numpy(float),
        both["p_leukemia_prev"].to_numpy(float),
        n_resamples=max(cfg.bootstrap_resamples, 200),
        confidence=cfg.confidence,
        seed=cfg.seed,
    )
    n = len(both)
    return [
        _row("comparison", previous_version, "mcnemar_statistic", "", mcnemar.statistic, n=n),
        _row("comparison", previous_version, "mcnemar_p", "", mcnemar.p_value, n=n),
        _row("comparison", previous_version, "only_current_correct", "", mcnemar.only_a_correct, n=n),
        _row("comparison", previous_version, "only_previous_correct", "", mcnemar.only_b_correct, n=n),
        _row("comparison", previous_version, "auc_current", "", auc.auc_a, n=n),
        _row("comparison", previous_version, "auc_previous", "", auc.auc_b, n=n),
        _row("comparison", previous_version, "auc_difference", "", auc.difference, (auc.ci_low, auc.ci_high), n),
        _row("comparison", previous_version, "auc_difference_p", "", auc.p_value, n=n),
    ]


def previous_version(all_scores: DataFrame, current_version: str, task: str) -> str | None:
    """The most recent other model version of the same task that scored slides (by its first scoring), in Spark."""
    first = (
        all_scores.where((F.col("model_version") != current_version) & (F.col("task") == task))
        .groupBy("model_version")
        .agg(F.min("scored_at").alias("first"))
        .orderBy(F.col("first").desc(), F.col("model_version").desc())
        .first()
    )
    return None if first is None else str(first["model_version"])


_SAMPLE_ORDER = "_sample_order"


def _bounded(frame: DataFrame, cap: int, seed: int) -> tuple[DataFrame, int]:
    """``frame`` if it has at most ``cap`` rows, else a seeded sample of ``cap`` of them; and its full count.

    The sample is the ``cap`` rows with the smallest SHA-256 of ``content_sha256|seed``. That key is a
    column computed once per row: ordered by the expression itself, Spark's top-k (``TakeOrderedAndProject``)
    evaluates it again at every comparison, and sampling 20,000 of 50,000 labelled slides took 144 s
    instead of 10 s (``allmtl bench aggregates``, docs/reliability.md).
    """
    total = frame.count()
    if total <= cap:
        return frame, total
    keyed = frame.withColumn(_SAMPLE_ORDER, F.sha2(F.concat_ws("|", F.col("content_sha256"), F.lit(str(seed))), 256))
    return keyed.orderBy(_SAMPLE_ORDER).limit(cap).drop(_SAMPLE_ORDER), total


def compute_aggregates(
    spark, lake, cfg: ScoreConfig, model_version: str, class_names: list[str], run_id: str
) -> pd.DataFrame:
    """Every aggregate of one scoring run, as ``tables.SCORE_AGGREGATES`` rows (a small pandas frame).

    Spark does the work that grows with the tables: the counts per run, day and site are Spark
    aggregations over all the version's rows, and only the labelled slides of this version (and the
    slides both it and the previous version scored) reach the driver, at most
    ``cfg.metrics_max_slides`` of each (a seeded sample above that; the ``labelled_slides`` row says
    how many there were and how many the metrics used). The metric math is the pure functions above.
    """
    from allmtl_spark.lakehouse import read_table

    all_scores = read_table(spark, lake, tables.SLIDE_SCORES)
    scores = all_scores.where(F.col("model_version") == model_version)
    rows = count_rows(stage_counts(scores, run_id), class_names)
    labels = read_table(spark, lake, tables.SLIDES).select("content_sha256", "label_binary", "label_fab")
    known = scores.join(labels, "content_sha256").where(
        F.col("label_binary").isin(0, 1) | F.col("label_fab").isin(*class_names)
    )
    sample, total = _bounded(known, cfg.metrics_max_slides, cfg.seed)
    if total:
        wanted = ["content_sha256", "probabilities", "p_leukemia", "label_binary", "label_fab"]
        wanted += [c for c in ("calibrated_probabilities", "needs_review") if c in scores.columns]
        labelled = _sorted_frame(sample.select(*wanted))
        labelled["probabilities"] = labelled["probabilities"].apply(lambda p: np.asarray(p, dtype=float))
        rows += labelled_rows(labelled, class_names, cfg)
        rows.append(_row("labelled", "all", "labelled_slides", "", total, n=len(labelled)))
    task = "fab4" if len(class_names) == 4 else "binary"
    previous = previous_version(all_scores, model_version, task)
    if previous:
        prev = all_scores.where(F.col("model_version") == previous).select(
            "content_sha256",
            F.col("predicted_leukemia").alias("predicted_leukemia_prev"),
            F.col("p_leukemia").alias("p_leukemia_prev"),
        )
        pairs = known.where(F.col("label_binary").isin(0, 1)).join(prev, "content_sha256")
        sample, _ = _bounded(pairs, cfg.metrics_max_slides, cfg.seed)
        rows += comparison_rows(
            _sorted_frame(
                sample.select(
                    "content_sha256",
                    "label_binary",
                    "predicted_leukemia",
                    "p_leukemia",
                    "predicted_leukemia_prev",
                    "p_leukemia_prev",
                )
            ),
            previous,
            cfg,
        )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    table = pd.DataFrame(rows, columns=COLUMNS).assign(
        scoring_run_id=run_id, model_version=model_version, computed_at=now
    )
    return table[[f.name for f in tables.SCORE_AGGREGATES.schema.fields]]


def _sorted_frame(frame: DataFrame) -> pd.DataFrame:
    """``frame`` as pandas in content-hash order (the bootstrap resamples by position: same rows, same CIs)."""
    return frame.toPandas().sort_values("content_sha256", kind="stable").reset_index(drop=True)


def commit_aggregates(spark, lake, table: pd.DataFrame) -> int:
    """MERGE ``compute_aggregates``' rows into ``score_aggregates``: this commit marks the run complete."""
    from allmtl_spark.lakehouse import merge_new_rows

    frame = spark.createDataFrame(table.astype(object).where(table.notna(), None), tables.SCORE_AGGREGATES.schema)
    return merge_new_rows(spark, lake, tables.SCORE_AGGREGATES, frame)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Printable lines for the headline aggregates; an undefined one says why."""
    lines = []
    wanted = [
        ("accuracy", "", "4-class accuracy"),
        ("macro_auc", "", "macro AUC"),
        ("binary_accuracy", "", "normal vs leukemia accuracy"),
        ("binary_auc", "", "normal vs leukemia AUC"),
        ("stage_accuracy_not_flagged", "", "stage-wise accuracy on the slides not needing review"),
        ("binary_accuracy_not_flagged", "", "normal vs leukemia accuracy on the slides not needing review"),
        ("sensitivity", "leukemia", "sensitivity (leukemia called leukemia)"),
        ("specificity", "leukemia", "specificity (normal called normal)"),
        ("mcnemar_p", "", "McNemar p vs previous version"),
        ("auc_difference", "", "AUC difference vs previous version"),
    ]
    reasons = table["undefined_reason"] if "undefined_reason" in table else pd.Series(None, index=table.index)
    for metric, class_name, label in wanted:
        hit = table[(table["metric"] == metric) & (table["class_name"] == class_name)]
        if hit.empty:
            continue
        row, reason = hit.iloc[0], reasons[hit.index[0]]
        if isinstance(reason, str) and reason:
            lines.append(f"{label}: undefined ({reason})")
            continue
        if row["value"] is None or pd.isna(row["value"]):
            continue
        ci = "" if row["ci_low"] is None or pd.isna(row["ci_low"]) else f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        lines.append(f"{label}: {row['value']:.3f}{ci} (n={row['n']}, labelled slides)")
    return lines
