"""The review queue: every scored slide that needs a person to look before its call is used.

``review_queue(spark, lake)`` is the ``review_queue`` view (a Spark temporary view of that name
after ``register_review_queue``): one row per ``slide_scores`` row with ``needs_review``, with the
slide, site, model version, scoring run, the failed checks (``review_reasons``), the calibrated
probabilities (raw ones where the model had no temperature) and the run's report. Pure Spark
column expressions over ``slide_scores``; nothing is copied.
"""

from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.lakehouse import Lakehouse, read_table

VIEW = "review_queue"
COLUMNS = (
    "slide_id",
    "site",
    "model_version",
    "scoring_run_id",
    "review_reasons",
    "ood_score",
    "class_names",
    "probabilities_shown",
    "calibrated",
    "predicted_class",
    "report",
    "scored_at",
)


def review_queue(
    spark: SparkSession, lake: Lakehouse, run_id: str | None = None, model_version: str | None = None
) -> DataFrame:
    """The slides that need review (optionally of one scoring run or model version), newest first."""
    scores = read_table(spark, lake, tables.SLIDE_SCORES)
    if "needs_review" not in scores.columns:  # a lakehouse scored before the column existed: nothing flagged
        return spark.createDataFrame([], "slide_id string").select(*[F.lit(None).alias(c) for c in COLUMNS]).limit(0)
    flagged = scores.where(F.col("needs_review"))
    if run_id:
        flagged = flagged.where(F.col("scoring_run_id") == run_id)
    if model_version:
        flagged = flagged.where(F.col("model_version") == model_version)
    reports = os.path.join(lake.reports, "score")
    return flagged.select(
        "slide_id",
        "site",
        "model_version",
        "scoring_run_id",
        "review_reasons",
        "ood_score",
        "class_names",
        F.coalesce("calibrated_probabilities", "probabilities").alias("probabilities_shown"),
        F.col("calibrated_probabilities").isNotNull().alias("calibrated"),
        "predicted_class",
        F.concat(F.lit(reports + "/"), F.col("scoring_run_id"), F.lit("/index.html")).alias("report"),
        "scored_at",
    ).orderBy(F.col("scored_at").desc(), "slide_id")


def register_review_queue(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    """``review_queue`` as a temporary view of this session (``SELECT * FROM review_queue``)."""
    frame = review_queue(spark, lake)
    frame.createOrReplaceTempView(VIEW)
    return frame


def format_queue(frame: DataFrame, limit: int = 50) -> str:
    """A plain-text table of the queue (at most ``limit`` rows) and how many there are per reason."""
    rows = frame.limit(limit).collect()
    total = frame.count()
    if not total:
        return "review queue: no slide needs review"
    reasons = (
        frame.select(F.explode("review_reasons").alias("reason")).groupBy("reason").count().orderBy("reason").collect()
    )
    lines = [
        f"review queue: {total} slide(s) need review ("
        + ", ".join(f"{r['reason']} {r['count']}" for r in reasons)
        + ")"
    ]
    for row in rows:
        probs = ", ".join(f"{c} {p:.2f}" for c, p in zip(row["class_names"], row["probabilities_shown"], strict=True))
        ood = "" if row["ood_score"] is None else f" ood {row['ood_score']:.1f}"
        lines.append(
            f"  {row['slide_id']}  site {row['site']}  {'; '.join(row['review_reasons'])}{ood}  "
            f"[{'calibrated' if row['calibrated'] else 'raw'}: {probs}]  model {row['model_version']}  "
            f"report {row['report']}"
        )
    if total > len(rows):
        lines.append(f"  ... {total - len(rows)} more (--limit)")
    return "\n".join(lines)


def separation_lines(is_out: list[bool], score: list[float], flagged: list[bool], scope: str) -> list[str]:
    """AUROC of the OOD score and the flag rates, out vs in distribution (empty without both kinds).

    Args:
        is_out: per slide, whether it is out of distribution.
        score: per slide, its OOD score (higher: more unusual).
        flagged: per slide, whether it went to review.
        scope: which slides these are, printed with the figures.
    """
    from sklearn.metrics import roc_auc_score

    n_out = sum(is_out)
    n_in = len(is_out) - n_out
    if not (n_in and n_out):
        return []
    flagged_in = sum(f for f, o in zip(flagged, is_out, strict=True) if not o)
    flagged_out = sum(f for f, o in zip(flagged, is_out, strict=True) if o)
    low, high = _interval(flagged_in, n_in)
    return [
        f"  {scope}: AUROC of ood_score, out vs in distribution {roc_auc_score(is_out, score):.3f}; flagged for "
        f"review in distribution {flagged_in}/{n_in} = {flagged_in / n_in:.3f} (95 % CI {low:.3f}-{high:.3f}), "
        f"out of distribution {flagged_out}/{n_out} = {flagged_out / n_out:.3f}"
    ]


def held_out_flag_lines(metrics: dict[str, float]) -> list[str]:
    """The model's held-out test slides its out-of-distribution check flagged at registration (empty: not measured).

    Another in-distribution sample beside the scored batch: a batch of a dozen patients can sit far
    from the training mean by chance (docs/scoring.md), so both rates are shown with their intervals.
    """
    if not metrics.get("test_ood_n"):
        return []
    k, n = int(metrics["test_ood_flagged"]), int(metrics["test_ood_n"])
    low, high = _interval(k, n)
    return [
        f"  the model's held-out test part ({n} slides, checked at registration): flagged out of distribution "
        f"{k}/{n} = {k / n:.3f} (95 % CI {low:.3f}-{high:.3f})"
    ]


def _interval(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a rate k / n (what n slides can show about a flag rate)."""
    from scipy.stats import binomtest

    interval = binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(interval.low), float(interval.high)


def trust_check(spark: SparkSession, lake: Lakehouse, model_version: str, ood_sites: list[str]) -> list[str]:
    """Printable figures: does the review flag separate ``ood_sites``' slides from the model's other scored slides?

    In-distribution: every other slide this model version scored (e.g. a held-out archive);
    out-of-distribution: the slides of ``ood_sites`` (e.g. a synthetic batch drawn outside the
    training ranges). A slide the job rejected (``rejects``, stage score: no white cell, undecodable)
    counts as flagged with the highest score: it got no call. Also the model's ECE on its held-out
    test part before and after temperature scaling (``models.metrics``).
    """
    from allmtl_spark.registry import resolve_model

    slides = read_table(spark, lake, tables.SLIDES).select("content_sha256", F.col("site").alias("slide_site"))
    scores = read_table(spark, lake, tables.SLIDE_SCORES).where(F.col("model_version") == model_version)
    if "needs_review" not in scores.columns:
        return [f"model {model_version}: slide_scores has no review columns yet (score with this release first)"]
    scored = scores.select("content_sha256", "site", "ood_score", "needs_review", "review_reasons").toPandas()
    rejected = (
        read_table(spark, lake, tables.REJECTS)
        .where((F.col("stage") == "score") & (F.col("version") == model_version) & F.col("content_sha256").isNotNull())
        .select("content_sha256", "reason")
        .join(slides, "content_sha256")
        .toPandas()
    )
    ood = set(ood_sites)
    lines = [f"trust check of model {model_version}: out-of-distribution sites {', '.join(sorted(ood))}"]
    is_out = list(scored["site"].isin(ood)) + list(rejected["slide_site"].isin(ood))
    top = float(scored["ood_score"].max()) + 1.0 if scored["ood_score"].notna().any() else 1.0
    score = list(scored["ood_score"].fillna(0.0)) + [top] * len(rejected)
    flagged = list(scored["needs_review"].fillna(False).astype(bool)) + [True] * len(rejected)
    n_out, n_in = sum(is_out), len(is_out) - sum(is_out)
    lines.append(
        f"  slides: {n_in} in distribution, {n_out} out of distribution "
        f"({int(rejected['slide_site'].isin(ood).sum())} of them and "
        f"{int((~rejected['slide_site'].isin(ood)).sum())} in-distribution ones rejected by the job: counted flagged)"
    )
    lines += separation_lines(is_out, score, flagged, "every slide, rejected ones flagged")
    if len(rejected):
        # The rejected slides (a blank slide has no white cell) are flagged for free: the same figures
        # on the scored slides alone say what the OOD score and the review checks themselves do.
        n_scored = len(scored)
        lines += separation_lines(is_out[:n_scored], score[:n_scored], flagged[:n_scored], "scored slides only")
    reasons: dict[str, int] = {}
    for site, rs in zip(scored["site"], scored["review_reasons"], strict=True):
        for reason in rs if rs is not None else []:
            key = f"{'out' if site in ood else 'in'}: {reason}"
            reasons[key] = reasons.get(key, 0) + 1
    for site, reason in zip(rejected["slide_site"], rejected["reason"], strict=True):
        key = f"{'out' if site in ood else 'in'}: rejected {reason}"
        reasons[key] = reasons.get(key, 0) + 1
    lines += [f"  {k}: {v}" for k, v in sorted(reasons.items())]
    metrics = resolve_model(spark, lake, model_version).metrics
    lines += held_out_flag_lines(metrics)
    if "test_ece" in metrics:
        lines.append(
            f"  ECE on the model's held-out test part ({int(metrics.get('test_n', 0))} slides): "
            f"{metrics['test_ece']:.3f} raw -> {metrics['test_ece_calibrated']:.3f} calibrated "
            f"(temperature {metrics.get('temperature', float('nan')):.3f}, fitted on {int(metrics.get('val_n', 0))} "
            "validation slides)"
        )
        if "test_ece_floor" in metrics:
            lines.append(
                f"  a perfectly calibrated model giving those calibrated probabilities would measure ECE "
                f"{metrics['test_ece_floor']:.3f} on average (95th percentile {metrics['test_ece_floor_p95']:.3f}): "
                "the ECE's sampling noise at this number of slides"
            )
    return lines
