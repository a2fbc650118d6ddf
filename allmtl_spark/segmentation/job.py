"""``allmtl segment``: slides not yet segmented by this segmenter -> segmented_slides, slide_cells, rejects.

One ``mapInPandas`` pass does the work on the Python workers: per slide it checks the size before
decoding, decodes, finds its pixel size (stored at ingest; estimated for older rows), resamples it to
the segmenter's working pixel size, runs the U-Net (loaded once per worker by ``make_predict_fn``) and the
pure pipeline, and emits rows of four kinds in one DataFrame (``row_kind``): ``slide``, ``cell``,
``reject`` and, once per task, ``stats`` (worker pid, the worker's model loads so far, its peak RSS).
A slide that cannot be segmented becomes a ``reject`` row and the rest of its batch goes on: permanent
(``decode_error``, ``bad_pixel_size``, ``empty_mask``: a property of the slide) or retryable
(``too_large_for_worker``, ``out_of_memory``: the cause may pass), as ``rejects`` describes. Any other
error (a bug) fails the task, so Spark retries it and, if it keeps failing, the job stops instead of
skipping the slide for good. Every run tries the retryable rejects again. The driver persists that
DataFrame, splits it into the three tables with insert-only MERGEs (so a rerun adds nothing) and
prints a summary.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from allmtl_spark import tables, units
from allmtl_spark.config.schema import RoiConfig, SegmentConfig
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table
from allmtl_spark.partitioning import spread_over_tasks
from allmtl_spark.registry import ModelRecord, resolve_model, verify_artifact
from allmtl_spark.rejects import merge_rejects, reject_rows, resolve_retried, retryable_column
from allmtl_spark.segmentation.pipeline import (
    SlideSegmentation,
    decode_mask,
    decode_rgb,
    encode_png,
    segment_slide,
    to_working,
    working_shape,
)
from allmtl_spark.session import assert_on_driver
from allmtl_spark.transforms.resample import resize_by
from allmtl_spark.transforms.scale import PixelSizePolicy

log = logging.getLogger(__name__)

STAGE = "segment"
# Working pixel size with mask_source roi when segment.pixel_size_um is null: a U-Net's default.
ROI_ONLY_PIXEL_SIZE_UM = 2 * units.ALLIDB1_PIXEL_SIZE_UM

SEGMENT_ROWS = StructType(
    [
        StructField(name, dtype)
        for name, dtype in (
            ("row_kind", StringType()),  # slide | cell | reject | stats
            ("content_sha256", StringType()),
            ("slide_id", StringType()),
            ("source_path", StringType()),
            # slide rows (stored images at the working scale)
            ("width", IntegerType()),
            ("height", IntegerType()),
            ("isolated", BinaryType()),
            ("mask", BinaryType()),
            ("cell_count", IntegerType()),
            ("blast_truth_count", IntegerType()),
            ("detect_tp", IntegerType()),
            ("detect_fp", IntegerType()),
            ("detect_fn", IntegerType()),
            ("truth_cell_count", IntegerType()),
            ("truth_cells_found", IntegerType()),
            ("dice_vs_truth", DoubleType()),
            ("roi_dice_vs_truth", DoubleType()),
            ("scale", DoubleType()),
            ("pixel_size_um", DoubleType()),  # slide and cell rows: the slide's own
            ("pixel_size_source", StringType()),
            ("working_pixel_size_um", DoubleType()),
            # cell rows (original slide pixels)
            ("cell_index", IntegerType()),
            ("bbox_x", IntegerType()),
            ("bbox_y", IntegerType()),
            ("bbox_w", IntegerType()),
            ("bbox_h", IntegerType()),
            ("centroid_x", DoubleType()),
            ("centroid_y", DoubleType()),
            ("area_px", IntegerType()),
            ("area_um2", DoubleType()),
            ("crop", BinaryType()),
            ("matches_blast", BooleanType()),
            # reject rows
            ("reason", StringType()),
            ("detail", StringType()),
            # stats rows (one per task)
            ("pid", LongType()),
            ("model_loads", IntegerType()),
            ("max_rss_bytes", LongType()),
            ("slides_done", IntegerType()),
            ("seconds", DoubleType()),
            ("cpu_seconds", DoubleType()),
        )
    ]
)
_COLUMNS = SEGMENT_ROWS.fieldNames()

INPUT_COLUMNS = StructType(
    [
        StructField("content_sha256", StringType()),
        StructField("slide_id", StringType()),
        StructField("source_path", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
        StructField("content", BinaryType()),
        StructField("truth_mask", BinaryType()),
        StructField("blast_xy", ArrayType(IntegerType())),  # x0, y0, x1, y1, ...; null without .xyc
        StructField("pixel_size_um", DoubleType()),  # null for slides ingested before pixel sizes were kept
        StructField("pixel_size_source", StringType()),
    ]
)


@dataclass
class SegmentSummary:
    """What one ``segment`` run did; ``format()`` gives the printed summary."""

    run_id: str
    segmenter_version: str
    mask_source: str
    pixel_size_um: float  # the working pixel size
    pending: int = 0
    segmented: int = 0
    cells: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    blast_tp: int = 0
    blast_fp: int = 0
    blast_fn: int = 0
    slides_with_xyc: int = 0
    truth_tp: int = 0
    truth_fp: int = 0
    truth_fn: int = 0
    dice: list[float] = field(default_factory=list)
    roi_dice: list[float] = field(default_factory=list)
    pixel_sizes: dict[str, int] = field(default_factory=dict)  # slides per pixel_size_source
    defaulted: list[str] = field(default_factory=list)  # slides at a default pixel size
    loads_per_worker: dict[int, int] = field(default_factory=dict)
    tasks: int = 0
    peak_rss_bytes: int = 0
    planning_seconds: float = 0.0  # resolving the segmenter and listing the pending slides
    task_seconds: list[float] = field(default_factory=list)  # time inside each task's Python function
    task_slides: list[int] = field(default_factory=list)  # slides each task was given
    worker_cpu_seconds: float = 0.0  # CPU time the Python workers spent in this job's tasks
    segment_seconds: float = 0.0
    seconds: float = 0.0

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    @property
    def blast_recall(self) -> float:
        return self._ratio(self.blast_tp, self.blast_tp + self.blast_fn)

    @property
    def blast_precision(self) -> float:
        return self._ratio(self.blast_tp, self.blast_tp + self.blast_fp)

    @property
    def cell_recall(self) -> float:
        return self._ratio(self.truth_tp, self.truth_tp + self.truth_fn)

    @property
    def cell_precision(self) -> float:
        return self._ratio(self.truth_tp, self.truth_tp + self.truth_fp)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice)) if self.dice else float("nan")

    @property
    def mean_roi_dice(self) -> float:
        return float(np.mean(self.roi_dice)) if self.roi_dice else float("nan")

    def format(self) -> str:
        lines = [
            f"segment run {self.run_id}: segmenter {self.segmenter_version} ({self.mask_source} mask, "
            f"working pixel size {self.pixel_size_um:g} um)"
        ]
        if not self.pending:
            lines.append("  nothing to do: every slide is already segmented (or rejected) by this segmenter")
            return "\n".join(lines)
        rate = self.pending / self.segment_seconds if self.segment_seconds else float("nan")
        lines += [
            f"  slides: {self.pending} pending, {self.segmented} segmented, {sum(self.rejects.values())} rejected; "
            f"{self.cells} white cells found",
            f"  time: {self.seconds:.1f} s in all, {self.segment_seconds:.1f} s segmenting ({rate:.2f} slides/s)",
            "  new rows: " + ", ".join(f"{k} {v}" for k, v in self.inserted.items()),
        ]
        if self.pixel_sizes:
            lines.append("  slides' pixel size: " + ", ".join(f"{k} {v}" for k, v in sorted(self.pixel_sizes.items())))
        if self.defaulted:
            shown = ", ".join(self.defaulted[:5]) + (
                f" and {len(self.defaulted) - 5} more" if len(self.defaulted) > 5 else ""
            )
            lines.append(
                f"  {len(self.defaulted)} slide(s) segmented at a default pixel size (not given, red-cell estimate "
                f"not confident): {shown}; give pixel_size_um in the manifest or ingest.sources[].pixel_size_um"
            )
        if self.rejects:
            lines.append("  rejects by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejects.items())))
        if self.slides_with_xyc:
            lines.append(
                f"  blast detection vs .xyc ({self.slides_with_xyc} slides, radius match): recall "
                f"{self.blast_recall:.3f} ({self.blast_tp}/{self.blast_tp + self.blast_fn}), precision "
                f"{self.blast_precision:.3f} (.xyc lists blasts only: found normal white cells count as "
                "false positives)"
            )
        if self.dice:
            lines.append(
                f"  white-cell detection vs truth masks ({len(self.dice)} slides): recall "
                f"{self.cell_recall:.3f}, precision {self.cell_precision:.3f}"
            )
            lines.append(
                f"  mask Dice vs truth: {self.mask_source} {self.mean_dice:.4f}, threshold ROI "
                f"{self.mean_roi_dice:.4f} (both after filling holes and dropping specks)"
            )
        if self.loads_per_worker:
            loads = ", ".join(f"pid {pid}: {n}" for pid, n in sorted(self.loads_per_worker.items()))
            lines.append(
                f"  model loads per Python worker ({self.tasks} tasks): {loads}; peak worker RSS "
                f"{self.peak_rss_bytes / 2**30:.2f} GiB"
            )
        return "\n".join(lines)


# ----------------------------------------------------------------------------- worker side


def _row(kind: str, **values) -> dict:
    row = dict.fromkeys(_COLUMNS)
    row["row_kind"] = kind
    row.update(values)
    return row


def _reject(slide, reason: str, detail: str) -> list[dict]:
    return [
        _row(
            "reject",
            content_sha256=slide.content_sha256,
            slide_id=slide.slide_id,
            source_path=slide.source_path,
            reason=reason,
            detail=detail,
        )
    ]


def _result_rows(slide, result: SlideSegmentation, has_xyc: bool, pixel_source: str) -> list[dict]:
    base = {
        "content_sha256": slide.content_sha256,
        "slide_id": slide.slide_id,
        "source_path": slide.source_path,
        "pixel_size_um": result.pixel_size_um,
        "pixel_size_source": pixel_source,
        "working_pixel_size_um": result.working_pixel_size_um,
    }
    blast, truth = result.blast_match, result.truth_match
    rows = [
        _row(
            "slide",
            **base,
            width=int(result.mask.shape[1]),
            height=int(result.mask.shape[0]),
            isolated=encode_png(result.isolated),
            mask=encode_png(result.mask),
            cell_count=len(result.cells),
            blast_truth_count=(blast.tp + blast.fn) if blast else None,
            detect_tp=blast.tp if blast else None,
            detect_fp=blast.fp if blast else None,
            detect_fn=blast.fn if blast else None,
            truth_cell_count=(truth.tp + truth.fn) if truth else None,
            truth_cells_found=truth.tp if truth else None,
            dice_vs_truth=result.dice_vs_truth,
            roi_dice_vs_truth=result.roi_dice_vs_truth,
            scale=result.scale,
        )
    ]
    for cell in result.cells:
        x, y, w, h = cell.bbox
        rows.append(
            _row(
                "cell",
                **base,
                cell_index=cell.index,
                bbox_x=x,
                bbox_y=y,
                bbox_w=w,
                bbox_h=h,
                centroid_x=float(cell.centroid[0]),
                centroid_y=float(cell.centroid[1]),
                area_px=cell.area,
                area_um2=cell.area_um2,
                crop=encode_png(cell.crop),
                matches_blast=cell.matches_blast if has_xyc else None,
            )
        )
    return rows


def segment_one(
    slide,
    predict: Callable[[], Callable[[np.ndarray], np.ndarray]] | None,
    roi_cfg: RoiConfig,
    cfg: SegmentConfig,
    working_pixel_size_um: float,
    policy: PixelSizePolicy = PixelSizePolicy(),
) -> list[dict]:
    """Rows for one input slide (an object with the ``INPUT_COLUMNS`` attributes).

    Args:
        slide: the slide's input row.
        predict: returns the U-Net predict function (called only when a slide needs it); None for ROI masks.
        roi_cfg: the ``roi`` section.
        cfg: the ``segment`` section.
        working_pixel_size_um: the segmenter's micrometres per pixel.
        policy: the pixel size of a slide whose row has none (ingested before pixel sizes were kept).

    Returns:
        One ``slide`` row plus one ``cell`` row per cell, or a single ``reject`` row.
    """
    pixels = int(slide.width) * int(slide.height)
    if pixels > cfg.max_decoded_pixels:
        return _reject(
            slide,
            "too_large_for_worker",
            f"{slide.width}x{slide.height} = {pixels} pixels exceeds segment.max_decoded_pixels="
            f"{cfg.max_decoded_pixels}; not decoded (retried on the next run: raise the limit only with more worker "
            "memory)",
        )
    try:
        image = decode_rgb(slide.content)
    except ValueError as err:
        return _reject(slide, "decode_error", f"the slide's content bytes cannot be decoded: {err}")
    except MemoryError:
        return _reject(slide, "out_of_memory", f"ran out of memory decoding a {slide.width}x{slide.height} slide")
    # Outside the per-slide guard: an unusable model (missing, hash mismatch) fails the job, it is no slide's fault.
    unet = predict() if cfg.mask_source == "unet" else None
    try:
        pixel = policy.resolve(image, slide.pixel_size_um, slide.pixel_size_source)
    except ValueError as err:
        return _reject(slide, "bad_pixel_size", f"unusable pixel size: {err}")
    w, h = working_shape(image.shape[1], image.shape[0], pixel.pixel_size_um, working_pixel_size_um)
    if w * h > cfg.max_decoded_pixels:
        return _reject(
            slide,
            "too_large_for_worker",
            f"at the working pixel size {working_pixel_size_um:g} um this {pixel.pixel_size_um:g} um/px slide would be "
            f"{w}x{h} = {w * h} pixels, above segment.max_decoded_pixels={cfg.max_decoded_pixels}",
        )
    truth = None
    if slide.truth_mask is not None:
        try:
            truth = decode_mask(slide.truth_mask)
        except ValueError:
            truth = None  # ingest checks masks; one that does not decode here means no usable truth
        if truth is not None and truth.shape != image.shape[:2]:
            truth = None  # ingest checks sizes; a mismatch here means no usable truth
    # Only running out of memory becomes a reject here; any other error fails the task (see the module doc).
    try:
        blast_xy = np.asarray(slide.blast_xy, np.float64).reshape(-1, 2) if slide.blast_xy is not None else None
        small = to_working(image, pixel.pixel_size_um, working_pixel_size_um)
        probability = unet(small) if unet is not None else None
        result = segment_slide(
            image,
            probability,
            roi_cfg,
            cfg,
            pixel.pixel_size_um,
            working_pixel_size_um,
            truth_mask=truth,
            blast_xy=blast_xy,
            working_image=small,
        )
        del image, small, probability
    except MemoryError:  # retryable: the next run tries the slide again
        return _reject(
            slide,
            "out_of_memory",
            f"ran out of memory segmenting a {slide.width}x{slide.height} slide (retried on the next run); lower "
            "segment.max_decoded_pixels or give the Python workers more memory",
        )
    if not result.cells:
        source = f"U-Net probability > {cfg.mask_threshold}" if cfg.mask_source == "unet" else "threshold ROI"
        return _reject(
            slide,
            "empty_mask",
            f"no white cell found: the {source} mask holds no region of at least "
            f"segment.min_cell_area_um2={cfg.min_cell_area_um2:g} um2 (slide at {pixel.pixel_size_um:g} um/px, "
            f"{pixel.source})",
        )
    return _result_rows(slide, result, has_xyc=blast_xy is not None, pixel_source=pixel.source)


def make_segment_fn(
    roi_cfg: RoiConfig,
    cfg: SegmentConfig,
    working_pixel_size_um: float,
    model_file: str | None = None,
    sha256: str | None = None,
    policy: PixelSizePolicy = PixelSizePolicy(),
    spec_sha256: str | None = None,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: input batches of ``INPUT_COLUMNS`` -> frames of ``SEGMENT_ROWS``.

    The model is not loaded here (this runs on the driver) but through ``make_predict_fn`` on first
    use in each Python worker, which caches it for every later batch and task of that worker.
    A ``stats`` row closes every task. ``spec_sha256`` is the recorded hash of the model's
    ``model.json``: the workers parse it from bytes that match (None: a segmenter registered before
    those hashes were kept).
    """
    if cfg.mask_source == "unet" and not (model_file and sha256):
        raise ValueError("mask_source unet needs the model file and its SHA-256")

    def predict():
        from allmtl_spark.segmentation.predict import make_predict_fn

        # freeze: PySpark's gc.collect() after every task would otherwise walk the whole model (0.2 s a task)
        return make_predict_fn(model_file, sha256, cfg.tf_threads, freeze_after_load=True, spec_sha256=spec_sha256)

    def segment_slides(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import resource

        import cv2

        from allmtl_spark.segmentation import predict as predict_module

        cv2.setNumThreads(1)  # one Spark task per core already
        start, done = time.perf_counter(), 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        for batch in batches:
            for slide in batch.itertuples(index=False):
                rows = segment_one(
                    slide,
                    predict if cfg.mask_source == "unet" else None,
                    roi_cfg,
                    cfg,
                    working_pixel_size_um,
                    policy,
                )
                done += 1
                yield pd.DataFrame(rows, columns=_COLUMNS, dtype=object)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        loads = predict_module.model_loads([(model_file, sha256)] if model_file and sha256 else [])  # this job's model
        yield pd.DataFrame(
            [
                _row(
                    "stats",
                    pid=os.getpid(),
                    model_loads=loads,
                    max_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
                    slides_done=done,
                    seconds=time.perf_counter() - start,
                    cpu_seconds=usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
                )
            ],
            columns=_COLUMNS,
            dtype=object,
        )

    return segment_slides


# ----------------------------------------------------------------------------- driver side


@dataclass(frozen=True)
class Segmenter:
    """What segments: the version string, the mask source, the working pixel size and the model (if any)."""

    version: str
    mask_source: str
    pixel_size_um: float
    record: ModelRecord | None = None


def resolve_segmenter(
    spark: SparkSession, lake: Lakehouse, cfg: SegmentConfig, roi_cfg: RoiConfig, record: ModelRecord | None = None
) -> Segmenter:
    """The segmenter of this run; a U-Net artifact is hash-checked here, on the driver, before any task starts."""
    if cfg.mask_source == "roi":
        return Segmenter(f"roi-{roi_cfg.method}", "roi", cfg.pixel_size_um or ROI_ONLY_PIXEL_SIZE_UM)
    record = record or resolve_model(spark, lake, cfg.segmenter, task="segmentation", stage="segmenter")
    verify_artifact(record)
    trained = trained_pixel_size(record.spec())
    if cfg.pixel_size_um and abs(cfg.pixel_size_um - trained) > 1e-9:
        log.warning(
            "segment.pixel_size_um=%s differs from the %s um/px that %s was trained at",
            cfg.pixel_size_um,
            trained,
            record.model_id,
        )
    return Segmenter(record.model_id, "unet", cfg.pixel_size_um or trained, record)


def trained_pixel_size(spec: dict) -> float:
    """The working pixel size a segmenter was trained at (``model.json``).

    Segmenters of earlier releases recorded a ``working_scale`` of slides of unknown pixel size; they
    count as trained on ALL-IDB1-scale slides (0.155 um/px times 1 / working_scale), with a warning.
    """
    if spec.get("pixel_size_um"):
        return float(spec["pixel_size_um"])
    scale = float(spec.get("working_scale", 0.5))
    assumed = units.ALLIDB1_PIXEL_SIZE_UM / scale
    log.warning(
        "segmenter %s records no pixel size (an earlier release): assuming %.3g um/px (working scale %s of "
        "ALL-IDB1-scale slides); retrain it with allmtl train-segmenter",
        spec.get("model_id", "?"),
        assumed,
        scale,
    )
    return assumed


def pending_keys(spark: SparkSession, lake: Lakehouse, version: str) -> list[str]:
    """Slides (content hashes) with no ``segmented_slides`` row and no permanent ``segment`` reject for ``version``.

    Retryable rejects (over the decode limit, out of memory) are pending again: every run retries them.
    """
    slides = read_table(spark, lake, tables.SLIDES).select("content_sha256")
    done = read_table(spark, lake, tables.SEGMENTED_SLIDES).where(F.col("segmenter_version") == version)
    failed = read_table(spark, lake, tables.REJECTS).where(
        (F.col("stage") == STAGE)
        & (F.col("version") == version)
        & F.col("content_sha256").isNotNull()
        & ~retryable_column(STAGE)
    )
    pending = slides.join(done.select("content_sha256"), "content_sha256", "left_anti").join(
        failed.select("content_sha256"), "content_sha256", "left_anti"
    )
    return sorted(row[0] for row in pending.collect())


def pending_slides(spark: SparkSession, lake: Lakehouse, keys: list[str], cfg: SegmentConfig) -> DataFrame:
    """The slides of ``keys`` as ``INPUT_COLUMNS``, ``slides_per_partition`` to a task (``partitioning``).

    The keys arrive as local data, not as a join with ``segmented_slides`` / ``rejects``: Delta
    re-caches every cached plan that reads a table it commits to, so a plan reading those tables
    would be recomputed, against the new rows, by this job's own writes.
    """
    slides = read_table(spark, lake, tables.SLIDES)
    pending = spread_over_tasks(spark, slides, keys, cfg.slides_per_partition, "content_sha256")
    within = F.col("width").cast("long") * F.col("height").cast("long") <= cfg.max_decoded_pixels
    points = F.transform(F.coalesce("blast_centroids", F.array()), lambda p: F.array(p["x"], p["y"]))
    return pending.select(
        "content_sha256",
        "slide_id",
        "source_path",
        "width",
        "height",
        F.when(within, F.col("content")).alias("content"),  # too-large slides are not even shipped
        "truth_mask",
        F.when(F.col("has_xyc"), F.flatten(points)).cast(ArrayType(IntegerType())).alias("blast_xy"),
        "pixel_size_um",
        "pixel_size_source",
    )


def run_segment(
    spark: SparkSession,
    cfg: SegmentConfig,
    roi_cfg: RoiConfig,
    lake: Lakehouse,
    run_id: str | None = None,
    record: ModelRecord | None = None,
    policy: PixelSizePolicy = PixelSizePolicy(),
) -> SegmentSummary:
    """Segment every pending slide and write the three tables.

    Args:
        spark: the session (driver only).
        cfg: the ``segment`` section.
        roi_cfg: the ``roi`` section.
        lake: the lakehouse.
        run_id: recorded on every row; a new one by default.
        record: the segmenter to use; None resolves ``cfg.segmenter`` in ``models``.
        policy: the pixel size of slides whose row records none (``PixelSizePolicy.from_ingest``).

    Returns:
        The :class:`SegmentSummary` of this run.

    Raises:
        ArtifactError: no such segmenter, or its artifact is missing or fails its hash check.
    """
    assert_on_driver()
    start = time.perf_counter()
    lake.check_writable()
    run_id = run_id or uuid.uuid4().hex[:12]
    seg = resolve_segmenter(spark, lake, cfg, roi_cfg, record)
    summary = SegmentSummary(
        run_id=run_id, segmenter_version=seg.version, mask_source=seg.mask_source, pixel_size_um=seg.pixel_size_um
    )
    keys = pending_keys(spark, lake, seg.version)
    summary.pending = len(keys)
    summary.planning_seconds = time.perf_counter() - start
    if not keys:
        summary.seconds = time.perf_counter() - start
        return summary
    segment_fn = make_segment_fn(
        roi_cfg,
        cfg,
        seg.pixel_size_um,
        seg.record.model_file if seg.record else None,
        seg.record.artifact_sha256 if seg.record else None,
        policy,
        spec_sha256=seg.record.spec_sha256 if seg.record else None,
    )
    rows = pending_slides(spark, lake, keys, cfg).mapInPandas(segment_fn, SEGMENT_ROWS)
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows.count()  # runs the segmentation once; the writes below read the persisted rows
        summary.segment_seconds = time.perf_counter() - start
        _write(spark, lake, rows, seg, run_id, summary)
        _summarise(rows, summary)
    finally:
        rows.unpersist()
    summary.seconds = time.perf_counter() - start
    return summary


def _write(
    spark: SparkSession, lake: Lakehouse, rows: DataFrame, seg: Segmenter, run_id: str, summary: SegmentSummary
) -> None:
    """Cells, then rejects, then slides: a ``segmented_slides`` row is the marker that a slide is complete."""
    now = F.current_timestamp()
    stamp = [F.lit(seg.version).alias("segmenter_version"), F.lit(run_id).alias("run_id"), now.alias("segmented_at")]
    cells = rows.where(F.col("row_kind") == "cell").select(
        "*", *stamp, F.col("working_pixel_size_um").alias("crop_pixel_size_um")
    )
    summary.inserted[tables.SLIDE_CELLS.name] = merge_new_rows(spark, lake, tables.SLIDE_CELLS, cells)
    rejects = reject_rows(
        rows.where(F.col("row_kind") == "reject"),
        stage=STAGE,
        run_id=run_id,
        version=seg.version,
        path_col="source_path",
        sha_col="content_sha256",
    )
    summary.inserted[tables.REJECTS.name] = merge_rejects(spark, lake, rejects, STAGE)
    slides = rows.where(F.col("row_kind") == "slide").select(
        "*",
        *stamp,
        F.lit(seg.mask_source).alias("mask_source"),
        F.lit(_roi_method(seg)).alias("roi_method"),
    )
    summary.inserted[tables.SEGMENTED_SLIDES.name] = merge_new_rows(spark, lake, tables.SEGMENTED_SLIDES, slides)
    # slides that were retryable rejects of this segmenter and are segmented now: their rejects are resolved
    resolve_retried(spark, lake, slides.select("content_sha256", F.col("segmenter_version").alias("version")), STAGE)


def _roi_method(seg: Segmenter) -> str:
    if seg.mask_source == "roi":
        return seg.version.removeprefix("roi-")
    return str(seg.record.spec().get("config", {}).get("roi", {}).get("method", "adaptive"))


def _summarise(rows: DataFrame, summary: SegmentSummary) -> None:
    """Fill the summary from the persisted rows (small columns only: no image bytes reach the driver)."""
    small = (
        rows.where(F.col("row_kind") != "cell")
        .select(
            "row_kind",
            "cell_count",
            "detect_tp",
            "detect_fp",
            "detect_fn",
            "truth_cell_count",
            "truth_cells_found",
            "dice_vs_truth",
            "roi_dice_vs_truth",
            "reason",
            "pid",
            "model_loads",
            "max_rss_bytes",
            "seconds",
            "cpu_seconds",
            "slides_done",
            "slide_id",
            "pixel_size_source",
        )
        .collect()
    )
    loads: dict[int, int] = defaultdict(int)
    for row in small:
        if row["row_kind"] == "slide":
            summary.segmented += 1
            source = row["pixel_size_source"]
            summary.pixel_sizes[source] = summary.pixel_sizes.get(source, 0) + 1
            if source == "default":
                summary.defaulted.append(row["slide_id"])
            summary.cells += row["cell_count"]
            if row["detect_tp"] is not None:
                summary.slides_with_xyc += 1
                summary.blast_tp += row["detect_tp"]
                summary.blast_fp += row["detect_fp"]
                summary.blast_fn += row["detect_fn"]
            if row["dice_vs_truth"] is not None:
                summary.truth_tp += row["truth_cells_found"]
                summary.truth_fn += row["truth_cell_count"] - row["truth_cells_found"]
                summary.truth_fp += row["cell_count"] - row["truth_cells_found"]
                summary.dice.append(row["dice_vs_truth"])
                summary.roi_dice.append(row["roi_dice_vs_truth"])
        elif row["row_kind"] == "reject":
            summary.rejects[row["reason"]] = summary.rejects.get(row["reason"], 0) + 1
        elif row["row_kind"] == "stats":
            summary.tasks += 1
            summary.task_seconds.append(row["seconds"])
            summary.task_slides.append(row["slides_done"])
            summary.worker_cpu_seconds += row["cpu_seconds"]
            loads[row["pid"]] = max(loads[row["pid"]], row["model_loads"])  # cumulative per worker process
            summary.peak_rss_bytes = max(summary.peak_rss_bytes, row["max_rss_bytes"])
    summary.loads_per_worker = dict(loads)


def write_example_figure(spark: SparkSession, lake: Lakehouse, version: str, path: str) -> str | None:
    """Draw one segmented slide (the one with most cells) of ``version``: slide, mask, isolated cells, crops.

    Returns:
        ``path``, or None when this segmenter has segmented nothing yet.
    """
    from allmtl_spark.segmentation.figures import segmentation_figure

    best = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where(F.col("segmenter_version") == version)
        .orderBy(F.col("cell_count").desc(), "slide_id")
        .limit(1)
        .collect()
    )
    if not best:
        return None
    seg = best[0]
    slide = (
        read_table(spark, lake, tables.SLIDES)
        .where(F.col("content_sha256") == seg["content_sha256"])
        .select("content")
        .first()
    )
    crops = [
        decode_rgb(bytes(r["crop"]))
        for r in read_table(spark, lake, tables.SLIDE_CELLS)
        .where((F.col("content_sha256") == seg["content_sha256"]) & (F.col("segmenter_version") == version))
        .orderBy("cell_index")
        .select("crop")
        .collect()
    ]
    image = resize_by(decode_rgb(bytes(slide["content"])), float(seg["scale"]))
    title = f"{seg['slide_id']}: {seg['cell_count']} white cells, segmenter {version}" + (
        f", Dice vs truth {seg['dice_vs_truth']:.3f}" if seg["dice_vs_truth"] is not None else ""
    )
    return segmentation_figure(
        path, image, decode_mask(bytes(seg["mask"])), decode_rgb(bytes(seg["isolated"])), crops, title=title
    )


def write_stain_figure(
    spark: SparkSession, lake: Lakehouse, version: str, path: str, methods: tuple[str, ...], candidates: int = 24
) -> str | None:
    """Draw colour normalisation before/after on three slides of ``version`` whose colours differ most.

    Among the first ``candidates`` segmented slides (by slide id), the first row is the slide whose mean
    colour is farthest from their average, each next one the farthest from those already chosen.

    Returns:
        ``path``, or None when this segmenter has segmented nothing yet.
    """
    from allmtl_spark.segmentation.figures import stain_figure

    keys = [
        r["content_sha256"]
        for r in read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where(F.col("segmenter_version") == version)
        .orderBy("slide_id")
        .limit(candidates)
        .select("content_sha256")
        .collect()
    ]
    if not keys:
        return None
    rows = (
        read_table(spark, lake, tables.SLIDES)
        .where(F.col("content_sha256").isin(keys))
        .select("slide_id", "content")
        .orderBy("slide_id")
        .collect()
    )
    images = []
    for row in rows:
        image = decode_rgb(bytes(row["content"]))
        images.append((row["slide_id"], resize_by(image, min(1.0, 480 / max(image.shape[:2])))))
    means = np.array([image.reshape(-1, 3).mean(axis=0) for _, image in images])
    chosen = [int(np.argmax(np.linalg.norm(means - means.mean(axis=0), axis=1)))]
    while len(chosen) < min(3, len(images)):
        distance = np.min([np.linalg.norm(means - means[i], axis=1) for i in chosen], axis=0)
        chosen.append(int(np.argmax(distance)))
    title = "colour normalisation: original, then each method (roi.normalize / segmenter.input_normalize)"
    return stain_figure(path, [images[i] for i in chosen], methods, title=title)
