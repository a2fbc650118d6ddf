"""``allmtl results``: the per-slide scores of a scoring run (or of a model version) and per-site aggregates.

Reads ``slide_scores`` (and the slides' labels) with Spark filters and collects only what is printed:
the per-site aggregates are computed in Spark, a table shows at most ``limit`` slides, CSV streams the
rows. Slide names are the stored ``slide_id`` (a pseudonym with ``privacy.pseudonymise_names``);
source paths are never shown.

Probabilities: ``calibrated_probabilities`` where a row has them, else ``probabilities``; the
header says which. Flags: every reason a row gives to look at the slide (``slide_cell_disagreement``,
and ``review_reasons`` where the table has that column).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.errors import LakehouseError
from allmtl_spark.lakehouse import Lakehouse, read_table, table_exists

FORMATS = ("table", "csv", "json")
PROBABILITY_COLUMNS = ("calibrated_probabilities", "probabilities")  # the first a row fills is shown
FLAG_COLUMNS = ("slide_cell_disagreement",)  # reason codes, one per column (null: no flag)
FLAG_LIST_COLUMNS = ("review_reasons",)  # arrays of reason codes
SLIDE_FIELDS = (
    "slide_id",
    "site",
    "predicted_class",
    "p_leukemia",
    "white_cell_count",
    "blast_cell_count",
    "blast_cell_pct",
    "label",
    "flags",
    "model_version",
    "scoring_run_id",
    "scored_at",
)


@dataclass
class ResultSet:
    """What ``allmtl results`` shows: which rows (and why those), per-site aggregates, the slides."""

    description: str
    class_names: list[str]
    probability_column: str
    sites: pd.DataFrame
    slides: DataFrame  # Spark: the selected rows, one per slide and model version, as ``slide_frame`` columns
    total: int
    notes: list[str] = field(default_factory=list)


def select_results(
    spark: SparkSession,
    lake: Lakehouse,
    run_id: str | None = None,
    model_version: str | None = None,
    site: str | None = None,
) -> ResultSet:
    """The rows of a scoring run, of a model version, or (neither given) of the newest scoring run.

    Args:
        run_id: ``slide_scores.scoring_run_id``.
        model_version: ``slide_scores.model_version`` (every run of it).
        site: only slides of this site.

    Raises:
        LakehouseError: nothing has been scored yet, or nothing matches (the message lists what exists).
    """
    if not table_exists(spark, lake, tables.SLIDE_SCORES):
        raise LakehouseError(f"no slide_scores table in {lake.root}: nothing has been scored yet (allmtl score)")
    scores = read_table(spark, lake, tables.SLIDE_SCORES)
    if site:
        scores = scores.where(F.col("site") == site)
    where = f" at site {site}" if site else ""
    if run_id:
        scores = scores.where(F.col("scoring_run_id") == run_id)
        description = f"scoring run {run_id}{where}"
    elif model_version:
        scores = scores.where(F.col("model_version") == model_version)
        description = f"every slide model {model_version} scored{where}"
    else:
        newest = (
            scores.orderBy(F.col("scored_at").desc(), F.col("scoring_run_id").desc()).select("scoring_run_id").first()
        )
        if newest is None:
            raise LakehouseError(f"no scored slides{where} in {lake.path(tables.SLIDE_SCORES)}")
        run_id = newest[0]
        scores = scores.where(F.col("scoring_run_id") == run_id)
        description = f"scoring run {run_id}{where} (the newest; --run ID or --model VERSION for others)"
    first = scores.select("class_names").first()
    if first is None:
        raise LakehouseError(f"nothing matches {description}; runs: {_known_runs(spark, lake)}")
    columns = set(scores.columns)
    # Calibrated probabilities are shown where a row has them; name them only if some row does.
    calibrated = "calibrated_probabilities" in columns and (
        scores.where(F.col("calibrated_probabilities").isNotNull()).limit(1).count() > 0
    )
    probability = "calibrated_probabilities" if calibrated else "probabilities"
    notes = []
    if probability != "probabilities":
        notes.append(f"probabilities: {probability} where a row has them, else the uncalibrated ones")
    slides = slide_frame(spark, lake, scores, list(first[0]))
    sites = site_aggregates(slides, list(first[0])).toPandas()
    versions = sorted(r[0] for r in scores.select("model_version").distinct().limit(6).collect())
    notes.insert(0, "model version(s): " + ", ".join(versions[:5]) + (" ..." if len(versions) > 5 else ""))
    return ResultSet(
        description, list(first[0]), probability, sites, slides, int(sites["slides"].sum()) if len(sites) else 0, notes
    )


def _known_runs(spark: SparkSession, lake: Lakehouse, shown: int = 8) -> str:
    runs = (
        read_table(spark, lake, tables.SLIDE_SCORES)
        .groupBy("scoring_run_id", "model_version")
        .agg(F.max("scored_at").alias("at"), F.count(F.lit(1)).alias("n"))
        .orderBy(F.col("at").desc())
        .limit(shown)
        .collect()
    )
    return "; ".join(f"{r['scoring_run_id']} (model {r['model_version']}, {r['n']} slides)" for r in runs) or "none"


def slide_frame(spark: SparkSession, lake: Lakehouse, scores: DataFrame, class_names: list[str]) -> DataFrame:
    """One row per selected score: ``SLIDE_FIELDS`` plus ``p_<class>`` per class (Spark, not collected)."""
    columns = set(scores.columns)
    probabilities = F.coalesce(*[F.col(c) for c in PROBABILITY_COLUMNS if c in columns])
    none = F.array().cast("array<string>")
    parts = [F.array(*[F.col(c) for c in FLAG_COLUMNS if c in columns]) if FLAG_COLUMNS else none]
    parts += [F.coalesce(F.col(c), none) for c in FLAG_LIST_COLUMNS if c in columns]
    flag_array = F.array_distinct(F.filter(F.flatten(F.array(*parts)), lambda x: x.isNotNull()))
    labels = read_table(spark, lake, tables.SLIDES).select(
        "content_sha256",
        F.coalesce(F.col("label_fab"), F.col("label_binary").cast("string")).alias("label"),
    )
    p_leukemia = F.col("p_leukemia")
    if "calibrated_probabilities" in columns:  # P(leukemia) = 1 - P(normal) of the shown probabilities
        p_leukemia = F.coalesce(1 - probabilities[class_names.index("normal")], p_leukemia)
    return (
        scores.join(labels, "content_sha256", "left")
        .select(
            "slide_id",
            "site",
            "predicted_class",
            p_leukemia.alias("p_leukemia"),
            *[probabilities[i].alias(f"p_{name}") for i, name in enumerate(class_names)],
            "white_cell_count",
            "blast_cell_count",
            "blast_cell_pct",
            "label",
            F.array_join(flag_array, ";").alias("flags"),
            "model_version",
            "scoring_run_id",
            "scored_at",
        )
        .orderBy("slide_id", "model_version")
    )


def site_aggregates(slides: DataFrame, class_names: list[str]) -> DataFrame:
    """Per site: slides, slides per predicted class, leukemia calls, flagged and labelled slides (in Spark)."""
    return (
        slides.groupBy(F.coalesce(F.col("site"), F.lit("unknown")).alias("site"))
        .agg(
            F.count(F.lit(1)).alias("slides"),
            *[F.sum((F.col("predicted_class") == c).cast("int")).alias(c) for c in class_names],
            F.sum((F.col("p_leukemia") >= 0.5).cast("int")).alias("leukemia_calls"),
            F.round(F.avg("p_leukemia"), 3).alias("mean_p_leukemia"),
            F.sum((F.length("flags") > 0).cast("int")).alias("flagged"),
            F.sum(F.col("label").isNotNull().cast("int")).alias("labelled"),
        )
        .orderBy("site")
    )


def format_results(result: ResultSet, fmt: str, limit: int = 50, sites_only: bool = False) -> Iterator[str]:
    """The text ``allmtl results`` prints, piece by piece (CSV streams the rows from Spark).

    Args:
        fmt: ``table`` (sites, then at most ``limit`` slides), ``csv`` (every slide; the sites with
            ``sites_only``) or ``json`` (one object: query, sites, slides).
    """
    if fmt == "csv":
        if sites_only:
            yield result.sites.to_csv(index=False).rstrip("\n")
        else:
            yield from _csv_lines(result.slides)
        return
    if fmt == "json":
        slides = [] if sites_only else [_jsonable(r.asDict()) for r in result.slides.toLocalIterator()]
        payload = {
            "query": result.description,
            "class_names": result.class_names,
            "probabilities": result.probability_column,
            "sites": [_jsonable(r) for r in result.sites.to_dict("records")],
            "slides": slides,
        }
        yield json.dumps(payload, indent=1, default=str)
        return
    yield f"{result.description}: {result.total} slide(s)"
    yield from (f"  {note}" for note in result.notes)
    yield "\nper site:"
    yield result.sites.to_string(index=False)
    if sites_only:
        return
    shown = result.slides.limit(limit).toPandas()
    yield f"\nslides ({min(limit, result.total)} of {result.total}; --format csv for all):"
    yield _slide_table(shown)


def _slide_table(frame: pd.DataFrame) -> str:
    view = frame.drop(columns=["scored_at"]).copy()
    for column in view.columns:
        if column.startswith("p_") or column == "blast_cell_pct":
            view[column] = view[column].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3f}")
    view = view.fillna("")
    return view.to_string(index=False)


def _csv_lines(slides: DataFrame) -> Iterator[str]:
    """The header and one line per slide, streamed from Spark (a large run is never held whole)."""

    def line(values) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in values])
        return buffer.getvalue()

    yield line(slides.columns)
    for row in slides.toLocalIterator():
        yield line(row)


def _jsonable(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif hasattr(value, "item"):  # numpy scalars
            value = value.item()
        out[key] = value
    return out
