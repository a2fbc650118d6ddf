"""``allmtl summary``: what the jobs made in a lakehouse and where to look next.

``make demo`` ends with it: the rows of every table, the newest models with their validation
figures, the newest evaluation's pooled test accuracy per approach, the newest scoring run's
slide counts, and the folders of the reports, models and MLflow runs to open.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from allmtl_spark import tables
from allmtl_spark.lakehouse import Lakehouse, read_table, table_exists

# The tables in the order the jobs fill them.
TABLE_ORDER = (
    tables.SLIDES,
    tables.CELLS,
    tables.REJECTS,
    tables.SEGMENTED_SLIDES,
    tables.SLIDE_CELLS,
    tables.SPLITS,
    tables.MODELS,
    tables.PREDICTIONS,
    tables.EVALUATION_RUNS,
    tables.EVALUATION_METRICS,
    tables.SLIDE_SCORES,
    tables.SCORE_AGGREGATES,
)


@dataclass
class LakeSummary:
    """What ``collect_summary`` found (plain values, so ``format_summary`` needs no Spark)."""

    root: str
    rows: dict[str, int | None]  # table -> rows, None when the table does not exist yet
    models: list[dict] = field(default_factory=list)  # model_id, stage, task, approach, metrics
    evaluation: dict | None = None  # eval_id, n_folds, trials, accuracy: {label: (mean, min, max)}, report
    scoring: dict | None = None  # run_id, slides, leukemia, model_version, report
    reports: list[str] = field(default_factory=list)
    models_dir: str = ""
    mlflow_uri: str = ""


def collect_summary(spark, lake: Lakehouse) -> LakeSummary:
    """Read the lakehouse's tables (counts and a few aggregates, all computed in Spark)."""
    present = {t.name: t for t in TABLE_ORDER if table_exists(spark, lake, t)}
    rows = {t.name: (read_table(spark, lake, t).count() if t.name in present else None) for t in TABLE_ORDER}
    summary = LakeSummary(lake.root, rows, models_dir=lake.models, mlflow_uri=lake.mlflow_uri)
    if rows.get("models"):
        summary.models = _newest_models(spark, lake)
    if rows.get("evaluation_metrics"):
        summary.evaluation = _newest_evaluation(spark, lake)
    if rows.get("slide_scores"):
        summary.scoring = _newest_scoring(spark, lake)
    summary.reports = sorted(glob.glob(os.path.join(lake.reports, "**", "*.html"), recursive=True))
    summary.reports += sorted(glob.glob(os.path.join(lake.reports, "*.png")))
    return summary


def _newest_models(spark, lake: Lakehouse) -> list[dict]:
    """The newest segmenter and the models of the newest training run (purpose train, or unknown)."""
    from pyspark.sql import functions as F

    models = read_table(spark, lake, tables.MODELS).where(F.coalesce(F.col("purpose"), F.lit("train")) == "train")
    picked = []
    for kind in ("segmenter", "classifier"):
        newest = models.where(F.col("kind") == kind).orderBy(F.col("created_at").desc()).limit(1).collect()
        if newest:
            run = models.where((F.col("kind") == kind) & (F.col("run_id") == newest[0]["run_id"]))
            picked += [r.asDict() for r in run.orderBy("stage", "task", "approach").collect()]
    return [
        {k: r[k] for k in ("model_id", "run_id", "stage", "task", "approach", "backbone")} | {"metrics": r["metrics"]}
        for r in picked
    ]


def _newest_evaluation(spark, lake: Lakehouse) -> dict:
    from pyspark.sql import functions as F

    metrics = read_table(spark, lake, tables.EVALUATION_METRICS)
    eval_id = metrics.orderBy(F.col("computed_at").desc()).limit(1).collect()[0]["eval_id"]
    pooled = metrics.where((F.col("eval_id") == eval_id) & (F.col("metric") == "accuracy") & (F.col("fold") == -1))
    per = (
        pooled.groupBy("task", "backbone", "approach")
        .agg(F.mean("value").alias("mean"), F.min("value").alias("low"), F.max("value").alias("high"))
        .agg(F.collect_list(F.struct("task", "backbone", "approach", "mean", "low", "high")).alias("rows"))
        .collect()[0]["rows"]
    )
    runs = read_table(spark, lake, tables.EVALUATION_RUNS).where(F.col("eval_id") == eval_id)
    shape = runs.agg(F.max("n_folds").alias("folds"), F.countDistinct("trial").alias("trials")).collect()[0]
    report = os.path.join(lake.reports, "evaluation", eval_id, "index.html")
    return {
        "eval_id": eval_id,
        "folds": shape["folds"],
        "trials": shape["trials"],
        "accuracy": {
            f"{r['task']} {r['backbone']} {r['approach']}": (r["mean"], r["low"], r["high"])
            for r in sorted(per, key=lambda r: (r["task"], r["backbone"], r["approach"]))
        },
        "report": report if os.path.exists(report) else None,
    }


def _newest_scoring(spark, lake: Lakehouse) -> dict:
    from pyspark.sql import functions as F

    scores = read_table(spark, lake, tables.SLIDE_SCORES)
    run_id = scores.orderBy(F.col("scored_at").desc()).limit(1).collect()[0]["scoring_run_id"]
    row = (
        scores.where(F.col("scoring_run_id") == run_id)
        .agg(
            F.count("*").alias("slides"),
            F.sum(F.col("predicted_leukemia").cast("int")).alias("leukemia"),
            F.first("model_version").alias("model_version"),
        )
        .collect()[0]
    )
    report = os.path.join(lake.reports, "score", run_id, "index.html")
    return {
        "run_id": run_id,
        "slides": row["slides"],
        "leukemia": row["leukemia"] or 0,
        "model_version": row["model_version"],
        "report": report if os.path.exists(report) else None,
        "total": scores.count(),
    }


def _metric_text(metrics: dict | None) -> str:
    chosen = {k: v for k, v in (metrics or {}).items() if k in ("accuracy", "val_accuracy", "test_accuracy", "dice")}
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(chosen.items())) or "-"


def format_summary(summary: LakeSummary) -> str:
    """The text ``allmtl summary`` prints."""
    lines = [f"== summary of the lakehouse {summary.root}", "tables (rows):"]
    for name, count in summary.rows.items():
        lines.append(f"  {name:<20} {'not made yet' if count is None else count}")
    if summary.models:
        lines.append("models (newest segmenter and newest training run):")
        for m in summary.models:
            what = " ".join(str(m[k]) for k in ("stage", "task", "approach", "backbone") if m.get(k))
            lines.append(f"  {m['model_id']:<48} {what:<36} {_metric_text(m['metrics'])}")
    if summary.evaluation:
        ev = summary.evaluation
        lines.append(
            f"evaluation {ev['eval_id']}: {ev['trials']} trial(s) x {ev['folds']} folds; "
            "pooled test accuracy, mean (min-max over trials):"
        )
        for label, (mean, low, high) in ev["accuracy"].items():
            lines.append(f"  {label:<40} {mean:.3f} ({low:.3f}-{high:.3f})")
    if summary.scoring:
        sc = summary.scoring
        lines.append(
            f"scoring run {sc['run_id']}: {sc['slides']} slide(s) scored by {sc['model_version']}, "
            f"{sc['leukemia']} predicted leukemia ({sc['total']} scores in all runs); `allmtl results` lists them"
        )
    lines.append("open next:")
    key_reports = [part["report"] for part in (summary.evaluation, summary.scoring) if part and part.get("report")]
    for path in key_reports + [p for p in summary.reports if p not in key_reports]:
        lines.append(f"  report   {path}")
    lines.append(f"  models   {summary.models_dir}")
    lines.append(f"  MLflow   mlflow ui --backend-store-uri {summary.mlflow_uri}   (`allmtl mlflow` lists the runs)")
    return "\n".join(lines)
