"""``allmtl eval-detection``: a segment run's white cells against ground-truth boxes.

The driver reads the (small) ``slide_cells`` centroids of one segmenter version (optionally one
segment run), the box file, and scores them with :func:`detection.compute_detection_scores`. Slides
the segmenter found nothing on (``empty_mask`` rejects) count with no detections; slides it could not
read, and boxed slides it never segmented, are left out and counted. A figure shows the slides with
the most errors: boxes found (green) and missed (red), detections paired (blue), extra in a found
box (orange) and outside every box (magenta).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.errors import LakehouseError, SourceError
from allmtl_spark.lakehouse import Lakehouse, read_table
from allmtl_spark.segmentation.detection import Box, DetectionScores, compute_detection_scores, read_boxes
from allmtl_spark.session import assert_on_driver


@dataclass
class DetectionReport:
    """What ``eval-detection`` scored; ``format()`` is the printed report."""

    segmenter_version: str
    segment_run: str | None
    boxes_path: str
    scores: DetectionScores
    empty_slides: int = 0  # segmented, nothing found (each of their boxes a miss)
    unusable: dict[str, int] = field(default_factory=dict)  # boxed slides left out, by reason
    figure: str | None = None

    def format(self) -> str:
        run = f", segment run {self.segment_run}" if self.segment_run else ""
        lines = [f"eval-detection: segmenter {self.segmenter_version}{run}, boxes {self.boxes_path}"]
        lines.append(self.scores.format())
        if self.empty_slides:
            lines.append(f"  {self.empty_slides} slide(s) where the segmenter found nothing count with no detections")
        if self.unusable:
            left = ", ".join(f"{reason} {n}" for reason, n in sorted(self.unusable.items()))
            lines.append(f"  boxed slides left out: {left}")
        if self.figure:
            lines.append(f"  figure of misses and false detections: {self.figure}")
        return "\n".join(lines)


def latest_segmenter(spark: SparkSession, lake: Lakehouse) -> str:
    """The segmenter version whose segmentation was written last."""
    row = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .groupBy("segmenter_version")
        .agg(F.max("segmented_at").alias("at"))
        .orderBy(F.col("at").desc())
        .first()
    )
    if row is None:
        raise LakehouseError("segmented_slides is empty: run allmtl segment first")
    return row["segmenter_version"]


def run_eval_detection(
    spark: SparkSession,
    lake: Lakehouse,
    boxes_path: str,
    segmenter: str = "latest",
    segment_run: str | None = None,
    figure_path: str | None = None,
    figure_slides: int = 4,
    site: str | None = None,
) -> DetectionReport:
    """Score one segmenter version's detections against the boxes; draw the figure when ``figure_path`` is set.

    Boxes name their slide by ``slide_id`` (the manifest's, or the image file's stem); ``site`` limits the
    slides to one ingest source's (``ingest.sources[].site``) when slide ids repeat across sources.

    Raises:
        SourceError: the box file cannot be read or holds no boxes.
        LakehouseError: nothing was segmented (by this version / run), no boxed slide was, or a boxed
            slide id names two different images (give ``site``).
    """
    assert_on_driver()
    boxes = read_boxes(boxes_path)
    if not boxes:
        raise SourceError(f"{boxes_path} holds no boxes: nothing to score against")
    version = latest_segmenter(spark, lake) if segmenter == "latest" else segmenter
    boxed = sorted({b.slide_id for b in boxes})
    slides = read_table(spark, lake, tables.SLIDES).where(F.col("slide_id").isin(boxed))
    if site is not None:
        slides = slides.where(F.col("site") == site)
    key_of: dict[str, str] = {}
    for row in slides.select("slide_id", "content_sha256").collect():
        if key_of.setdefault(row["slide_id"], row["content_sha256"]) != row["content_sha256"]:
            raise LakehouseError(
                f"slide id {row['slide_id']} names two different images in the lakehouse (ingested from two "
                "sources): give the source's site (--site) to say which the boxes belong to"
            )
    segmented = read_table(spark, lake, tables.SEGMENTED_SLIDES).where(F.col("segmenter_version") == version)
    cells = read_table(spark, lake, tables.SLIDE_CELLS).where(F.col("segmenter_version") == version)
    rejects = read_table(spark, lake, tables.REJECTS).where(
        (F.col("stage") == "segment") & (F.col("version") == version)
    )
    if segment_run:
        segmented, cells, rejects = (t.where(F.col("run_id") == segment_run) for t in (segmented, cells, rejects))
    if segmented.limit(1).count() == 0:
        raise LakehouseError(f"no slide segmented by {version}" + (f" in run {segment_run}" if segment_run else ""))
    keys = sorted(set(key_of.values()))
    done = {
        r["content_sha256"]
        for r in segmented.where(F.col("content_sha256").isin(keys)).select("content_sha256").collect()
    }
    failed = {
        r["content_sha256"]: r["reason"]
        for r in rejects.where(F.col("content_sha256").isin(keys)).select("content_sha256", "reason").collect()
    }
    detections: dict[str, list[tuple[float, float]]] = {}
    slide_of = {key: slide_id for slide_id, key in key_of.items()}
    for row in (
        cells.where(F.col("content_sha256").isin(keys)).select("content_sha256", "centroid_x", "centroid_y").collect()
    ):
        detections.setdefault(slide_of[row["content_sha256"]], []).append((row["centroid_x"], row["centroid_y"]))
    scored, unusable, empty = [], {}, 0
    for slide_id in boxed:
        key = key_of.get(slide_id)
        if key in done:
            scored.append(slide_id)
        elif failed.get(key) == "empty_mask":
            scored.append(slide_id)
            empty += 1
        else:
            reason = "not_ingested" if key is None else failed.get(key, "not_segmented")
            unusable[reason] = unusable.get(reason, 0) + 1
    if not scored:
        raise LakehouseError(
            f"none of the {len(boxed)} boxed slides of {boxes_path} was segmented by {version}: do the box file's "
            "slide ids match the slides' (file stems or the manifest's slide_id)?"
        )
    scores = compute_detection_scores(boxes, detections, scored)
    report = DetectionReport(version, segment_run, boxes_path, scores, empty, unusable)
    if figure_path:
        content_keys = {slide_id: key_of[slide_id] for slide_id in scored}
        report.figure = _figure(spark, lake, scores, boxes, detections, content_keys, figure_path, figure_slides)
    return report


def _figure(
    spark: SparkSession,
    lake: Lakehouse,
    scores: DetectionScores,
    boxes: list[Box],
    detections: dict[str, list[tuple[float, float]]],
    content_keys: dict[str, str],
    path: str,
    count: int,
) -> str | None:
    from allmtl_spark.segmentation.figures import detection_figure
    from allmtl_spark.segmentation.pipeline import decode_rgb

    worst = sorted(scores.matches, key=lambda m: -(len(m.missed) + len(m.duplicates) + len(m.outside)))
    worst = [m for m in worst if m.missed or m.duplicates or m.outside][:count] or list(scores.matches[:1])
    if not worst:
        return None
    slide_of = {content_keys[m.slide_id]: m.slide_id for m in worst}
    content = {
        slide_of[r["content_sha256"]]: bytes(r["content"])
        for r in read_table(spark, lake, tables.SLIDES)
        .where(F.col("content_sha256").isin(sorted(slide_of)))
        .select("content_sha256", "content")
        .collect()
    }
    by_slide: dict[str, list[Box]] = {}
    for box in boxes:
        by_slide.setdefault(box.slide_id, []).append(box)
    panels = [
        (decode_rgb(content[m.slide_id]), m, by_slide.get(m.slide_id, []), detections.get(m.slide_id, []))
        for m in worst
        if m.slide_id in content
    ]
    return detection_figure(path, panels, title=scores.format().splitlines()[1].strip())
