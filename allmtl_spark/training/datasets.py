"""Delta tables -> labelled examples -> split -> augmented training rows -> Petastorm converters.

The split is decided on the small (key, group, label) table on the driver and recorded in
``splits`` before anything is augmented; augmentation then runs in a pandas UDF over the
training part only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from allmtl_spark import tables
from allmtl_spark.config.schema import AugmentConfig, SplitConfig
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table
from allmtl_spark.segmentation.crops import resampled_crops
from allmtl_spark.training.augment import AugmentParams, copies_per_item
from allmtl_spark.training.examples import TASK_CLASSES, ViewSpec, example_image
from allmtl_spark.training.split import fold_parts, split_id, train_val_test

log = logging.getLogger(__name__)


@dataclass
class ExampleSet:
    """One task's examples with their split: ``frame`` has key, group, label, part, sources."""

    task: str
    class_names: tuple[str, ...]
    frame: DataFrame
    spec: ViewSpec
    split_id: str
    counts: dict[str, dict[str, int]]  # part -> class -> originals
    meta: pd.DataFrame | None = None  # key, item_id, group, label, part (+ patient/source slide for cells)
    source_table: str = "slides"
    fold: int | None = None

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}


def cell_examples(
    spark: SparkSession, lake: Lakehouse, task: str = "cell_binary", pixel_size_um: float | None = None
) -> DataFrame:
    """Single-cell crops from ``cells`` (stage 2): blast / normal (ALL-IDB2's labels), or their FAB
    class when the manifest gives one (``cell_fab4``); resampled to ``pixel_size_um`` (the slide crops'
    pixel size, ``segmentation.crops.crop_pixel_size``) when given.

    Besides the example columns, each row carries what ties the cell to stage 3's data: ``patient``
    (hash), ``source_slide`` (content hash of the slide it was cut from) and ``source_slide_id``.
    Its group is the patient, else the source slide, else the cell itself.
    """
    cells = read_table(spark, lake, tables.CELLS)
    if task == "cell_fab4":
        cells, label = cells.where(F.col("label_fab").isNotNull()), F.col("label_fab")
    else:
        cells = cells.where(F.col("label_binary").isNotNull())
        label = F.when(F.col("label_binary") == 1, "blast").otherwise("normal")
    return cells.select(
        F.col("content_sha256").alias("key"),
        F.col("cell_id").alias("item_id"),
        F.coalesce(
            "patient_hash",
            F.concat(F.lit("slide:"), "source_slide_sha256"),
            F.concat(F.lit("slide-id:"), "source_slide_id"),
            F.concat(F.lit("cell:"), "cell_id"),
        ).alias("group"),
        label.alias("label"),
        F.array(resampled_crops("content", "pixel_size_um", pixel_size_um) if pixel_size_um else "content").alias(
            "sources"
        ),
        F.col("patient_hash").alias("patient"),
        F.col("source_slide_sha256").alias("source_slide"),
        "source_slide_id",
    )


def slide_examples(
    spark: SparkSession, lake: Lakehouse, task: str, segmenter_version: str, view: str, grid: int
) -> DataFrame:
    """Segmented slides with the task's label (stage 3): montage crops or the isolated slide."""
    slides = read_table(spark, lake, tables.SLIDES)
    label = (
        F.when(F.col("label_binary") == 1, "ALL").when(F.col("label_binary") == 0, "normal")
        if task == "binary"
        else F.col("label_fab")
    )
    slides = slides.select("content_sha256", "slide_id", "patient_hash", label.alias("label")).where(
        F.col("label").isNotNull()
    )
    segmented = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where(F.col("segmenter_version") == segmenter_version)
        .select("content_sha256", "isolated")
    )
    if view == "montage":
        cells = read_table(spark, lake, tables.SLIDE_CELLS).where(F.col("segmenter_version") == segmenter_version)
        largest_first = F.sort_array(F.collect_list(F.struct((-F.col("area_px")).alias("order"), "crop")))
        crops = cells.groupBy("content_sha256").agg(
            F.slice(F.transform(largest_first, lambda s: s["crop"]), 1, grid * grid).alias("sources")
        )
        sources = segmented.join(crops, "content_sha256").select("content_sha256", "sources")
    else:
        sources = segmented.select("content_sha256", F.array("isolated").alias("sources"))
    return slides.join(sources, "content_sha256").select(
        F.col("content_sha256").alias("key"),
        F.col("slide_id").alias("item_id"),
        F.coalesce("patient_hash", F.concat(F.lit("slide:"), "slide_id")).alias("group"),
        "label",
        "sources",
    )


def slide_split(
    spark: SparkSession,
    lake: Lakehouse,
    segmenter_version: str,
    cfg: SplitConfig,
    fold: tuple[int, int] | None,
    tasks: tuple[str, ...] = ("binary", "fab4"),
) -> pd.DataFrame:
    """One split of every segmented slide labelled for a planned task, shared by all stage-3 tasks of a run.

    Grouped by patient (else slide) and stratified by the finest label a slide has (its FAB class,
    else normal / ALL), so the binary and the 4-class models of a run hold out the same slides and
    stage 2 can be kept off all of them. Slides no planned task can use (``slides_for_tasks``) stay
    out, so the split does not change when such slides join the lakehouse.

    Returns:
        Columns key, item_id, group, patient, label (the stratification label), part; sorted by key.
    """
    slides = read_table(spark, lake, tables.SLIDES)
    segmented = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where(F.col("segmenter_version") == segmenter_version)
        .select("content_sha256")
        .distinct()
    )
    meta = (
        slides.join(segmented, "content_sha256")
        .select(
            F.col("content_sha256").alias("key"),
            F.col("slide_id").alias("item_id"),
            F.coalesce("patient_hash", F.concat(F.lit("slide:"), "slide_id")).alias("group"),
            F.col("patient_hash").alias("patient"),
            "label_fab",
            "label_binary",
        )
        .toPandas()
    )
    meta = slides_for_tasks(meta, tasks).sort_values("key").reset_index(drop=True)
    if meta.empty:
        raise ValueError(f"no segmented slides labelled for {', '.join(tasks)}: ingest and segment data first")
    meta["part"] = parts_of(meta, cfg, fold).to_numpy()
    return meta


def slides_for_tasks(meta: pd.DataFrame, tasks: tuple[str, ...]) -> pd.DataFrame:
    """The slides a run's stage-3 tasks can use, with their stratification label (pure pandas).

    A slide counts when it has the label of at least one task (``fab4``: a FAB class; ``binary``: normal or
    ALL). Its stratification label is the finest it has: the FAB class, else normal / ALL.

    Args:
        meta: one row per slide with ``label_fab`` (class name or None) and ``label_binary`` (0, 1 or None).
        tasks: the planned stage-3 tasks.

    Returns:
        The usable rows, ``label_fab`` and ``label_binary`` replaced by ``label``.
    """
    has_fab = meta["label_fab"].notna()
    has_binary = meta["label_binary"].notna()
    usable = pd.Series(False, index=meta.index)
    if "fab4" in tasks:
        usable |= has_fab
    if "binary" in tasks:
        usable |= has_binary
    binary = meta["label_binary"].map({1: "ALL", 0: "normal"})
    label = meta["label_fab"].where(has_fab, binary)
    return meta.assign(label=label)[usable].drop(columns=["label_fab", "label_binary"])


def parts_of(meta: pd.DataFrame, cfg: SplitConfig, fold: tuple[int, int] | None) -> pd.Series:
    """train / val / test per row of ``meta`` (group, label): ``cfg``'s split, or fold ``fold[1]`` of ``fold[0]``."""
    if fold is None:
        return train_val_test(meta, cfg.test_fraction, cfg.val_fraction, cfg.seed)
    return fold_parts(meta, fold[0], fold[1], cfg.val_fraction, cfg.seed)


def split_examples(
    spark: SparkSession,
    examples: DataFrame,
    task: str,
    source_table: str,
    spec: ViewSpec,
    cfg: SplitConfig,
    augment: AugmentConfig,
    fold: tuple[int, int] | None = None,
    parts: pd.DataFrame | None = None,
    allowed=None,
) -> ExampleSet:
    """Split by group, stratified by label; attach part and copy counts (``record_split`` stores it).

    Args:
        fold: ``(n_folds, index)`` for k-fold evaluation (fold ``index`` is the test part);
            None for the train / validation / test split of ``cfg``.
        parts: a split decided already (``slide_split``: key -> part); the task's examples take their
            part from it. None: split this task's examples here.
        allowed: optional function (meta frame -> boolean series) keeping only some examples before
            the split (stage 2: no cell of a held-out slide or patient).
    """
    extra = [c for c in ("patient", "source_slide", "source_slide_id") if c in examples.columns]
    meta = examples.select("key", "item_id", "group", "label", *extra).toPandas()
    meta = meta.sort_values("key").reset_index(drop=True)
    unknown = sorted(set(meta["label"]) - set(TASK_CLASSES[task]))
    if unknown:
        raise ValueError(f"task {task}: labels {unknown} are not among {TASK_CLASSES[task]}")
    settings = {"task": task, "val": cfg.val_fraction, "seed": cfg.seed}
    if allowed is not None and not meta.empty:
        kept = allowed(meta)
        settings["excluded"] = int((~kept).sum())
        meta = meta[kept].reset_index(drop=True)
    if meta.empty:
        raise ValueError(
            f"task {task}: no labelled examples in {source_table} (after keeping held-out slides' cells out); "
            "ingest and segment data first"
        )
    if parts is not None:
        meta["part"] = meta["key"].map(parts.set_index("key")["part"])
        meta = meta[meta["part"].notna()].reset_index(drop=True)
    else:
        meta["part"] = parts_of(meta, cfg, fold).to_numpy()
    if fold is None:
        settings["test"] = cfg.test_fraction
    else:
        settings["fold"] = f"{fold[1]}/{fold[0]}"
    sid = split_id(meta["key"].tolist(), settings)
    meta["copies"] = 0
    train = meta["part"] == "train"
    if augment.enabled:
        meta.loc[train, "copies"] = copies_per_item(
            meta.loc[train, "label"].tolist(), augment.copies_per_image, augment.balance_to
        )
    frame_parts = spark.createDataFrame(meta[["key", "part", "copies"]])
    counts = {p: meta[meta["part"] == p]["label"].value_counts().to_dict() for p in ("train", "val", "test")}
    frame = examples.join(F.broadcast(frame_parts), "key")
    return ExampleSet(task, TASK_CLASSES[task], frame, spec, sid, counts, meta, source_table, fold[1] if fold else None)


def record_split(spark: SparkSession, lake: Lakehouse, examples: ExampleSet, check: str | None) -> None:
    """Store an example set's split in ``splits``, with the cross-stage overlap check it passed."""
    meta = examples.meta
    rows = meta.assign(
        split_id=examples.split_id,
        source_table=examples.source_table,
        fold=examples.fold,
        created_at=datetime.now(timezone.utc).replace(tzinfo=None),
        source_slide_sha256=meta.get("source_slide", None),
        overlap_check=check,
    )
    rows = rows.rename(columns={"key": "content_sha256", "group": "group_key"})
    rows = rows[[f.name for f in tables.SPLITS.schema.fields]]
    merge_new_rows(spark, lake, tables.SPLITS, spark.createDataFrame(rows.astype(object), tables.SPLITS.schema))


def materialize(examples: ExampleSet, part: str, augment: AugmentConfig, partitions: int) -> DataFrame:
    """Rows ``image`` (raw uint8 bytes, size x size x 3) and ``label`` (class index) of one part.

    The training part holds each original (copy 0) plus its augmented copies.
    """
    index = examples.label_index()
    params = AugmentParams(augment.flip, augment.rotate_max_deg, augment.shift_fraction, augment.scale_range)
    make = make_example_udf(examples.spec, augment.seed, params)
    rows = examples.frame.where(F.col("part") == part)
    copies = F.sequence(F.lit(0), F.col("copies")) if part == "train" else F.array(F.lit(0))
    rows = rows.withColumn("copy", F.explode(copies)).repartition(partitions, "key", "copy")
    label = F.create_map(*[x for name, i in index.items() for x in (F.lit(name), F.lit(i))])[F.col("label")]
    return rows.select(
        make("key", "sources", "copy").alias("image"), label.cast("int").alias("label"), "key", "item_id", "copy"
    )


def make_example_udf(spec: ViewSpec, seed: int, params: AugmentParams):
    """pandas UDF (key, sources, copy) -> raw image bytes, with the view and augmentation bound once."""

    @pandas_udf("binary")
    def make_example(key: pd.Series, sources: pd.Series, copy: pd.Series) -> pd.Series:
        return pd.Series(
            [
                example_image([bytes(b) for b in s], spec, k, int(c), seed, params)
                for k, s, c in zip(key, sources, copy, strict=True)
            ]
        )

    return make_example


@dataclass
class Arrays:
    """A (small) part collected to the driver: originals only, ordered by key."""

    images: np.ndarray  # (n, size, size, 3) uint8 RGB
    labels: np.ndarray  # (n,) class index
    keys: list[str]
    item_ids: list[str]


def to_numpy(frame: DataFrame, size: int) -> Arrays:
    rows = frame.where(F.col("copy") == 0).select("key", "item_id", "image", "label").orderBy("key").collect()
    images = (
        np.stack([np.frombuffer(r["image"], np.uint8).reshape(size, size, 3) for r in rows])
        if rows
        else np.zeros((0, size, size, 3), np.uint8)
    )
    return Arrays(
        images, np.array([r["label"] for r in rows], dtype=int), [r["key"] for r in rows], [r["item_id"] for r in rows]
    )
