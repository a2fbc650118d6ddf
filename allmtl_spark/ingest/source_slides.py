"""Which slide each single-cell crop was cut from (ALL-IDB2 crops come out of ALL-IDB1's slides).

A model trained on a cell has seen the slide the cell came from, so the training job keeps stage 2
off every cell of a stage-3 validation or test slide; for that, ``cells`` records each crop's
source slide. A manifest may say it (``source_slide_id``, optionally ``crop_x``/``crop_y``); for an
ALL-IDB2 folder ingested with the ALL-IDB1 slides, :func:`link_cells` finds it by template matching.

Pure part (numpy/OpenCV): :func:`locate_crop` finds a crop in one slide, coarse to fine, and scores
the place with the normalised cross-correlation (OpenCV ``matchTemplate`` ``TM_CCOEFF_NORMED``: 1
for an identical patch). Spark part: :func:`link_cells` matches every unlinked ALL-IDB2 crop against
small grey thumbnails of all slides (broadcast once), refines the best candidates at full resolution
(one join with the slides' bytes) and MERGE-updates the five ``source_*`` columns of ``cells``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropMatch:
    """Where a crop sits in a slide: top-left pixel (slide pixels) and the match score (-1..1)."""

    x: int
    y: int
    score: float


def to_grey(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB (or HxW) -> HxW float32 grey."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return grey.astype(np.float32)


def thumbnail(image: np.ndarray, factor: int) -> np.ndarray:
    """Grey float32 image shrunk by an integer ``factor`` (area averaging)."""
    grey = to_grey(image)
    if factor <= 1:
        return grey
    height, width = grey.shape
    size = (max(1, width // factor), max(1, height // factor))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def rescale(crop: np.ndarray, scale: float) -> np.ndarray:
    """The crop at the slide's pixel size: ``scale`` = crop um/px divided by slide um/px (1: same scale)."""
    if abs(scale - 1.0) < 1e-6:
        return crop
    height, width = crop.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def pixel_ratio(crop_um: float | None, slide_um: float | None) -> float:
    """Crop um/px over slide um/px (the factor that brings the crop to the slide's scale); 1 when either is unknown."""
    if not crop_um or not slide_um or crop_um <= 0 or slide_um <= 0:
        return 1.0
    return float(crop_um) / float(slide_um)


def scales_to_try(crop_um: float | None, slide_um: float | None) -> list[float]:
    """1 (crops cut at the slide's pixel size, as ALL-IDB2's) and, when the pixel sizes differ, their ratio."""
    ratio = round(pixel_ratio(crop_um, slide_um), 3)
    return [1.0] if abs(ratio - 1.0) < 0.02 else [1.0, ratio]


def coarse_score(crop_thumb: np.ndarray, slide_thumb: np.ndarray) -> CropMatch | None:
    """Best place of a crop thumbnail in a slide thumbnail (thumbnail pixels); None if it does not fit."""
    if crop_thumb.shape[0] > slide_thumb.shape[0] or crop_thumb.shape[1] > slide_thumb.shape[1]:
        return None
    if crop_thumb.shape[0] < 4 or crop_thumb.shape[1] < 4:
        return None
    result = cv2.matchTemplate(slide_thumb, crop_thumb, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(result)
    return CropMatch(int(x), int(y), float(best))


def score_at(crop: np.ndarray, slide: np.ndarray, x: int, y: int, radius: int = 0) -> CropMatch | None:
    """The best full-resolution match of ``crop`` within ``radius`` pixels of (x, y) in ``slide``.

    Args:
        crop: HxWx3 uint8 RGB at the slide's scale.
        slide: HxWx3 uint8 RGB.
        x, y: expected top-left pixel of the crop in the slide.
        radius: search radius in pixels (0: score exactly that place).

    Returns:
        The best place and its ``TM_CCOEFF_NORMED`` score, or None when the crop does not fit there.
    """
    height, width = crop.shape[:2]
    x0, y0 = max(0, x - radius), max(0, y - radius)
    x1, y1 = min(slide.shape[1], x + radius + width), min(slide.shape[0], y + radius + height)
    window = slide[y0:y1, x0:x1]
    if window.shape[0] < height or window.shape[1] < width:
        return None
    result = cv2.matchTemplate(to_grey(window), to_grey(crop), cv2.TM_CCOEFF_NORMED)
    _, best, _, (dx, dy) = cv2.minMaxLoc(result)
    return CropMatch(x0 + int(dx), y0 + int(dy), float(best))


def locate_crop(crop: np.ndarray, slide: np.ndarray, scale: float = 1.0, factor: int = 4) -> CropMatch | None:
    """Find a crop in one slide: coarse search on ``factor``-times smaller grey images, then refine.

    Args:
        crop: HxWx3 uint8 RGB single-cell crop.
        slide: HxWx3 uint8 RGB slide.
        scale: crop um/px divided by slide um/px (1 when both share the pixel size, as ALL-IDB2 and ALL-IDB1).
        factor: shrink factor of the coarse search.

    Returns:
        Top-left pixel in the slide and the full-resolution score, or None when the crop is larger than the slide.
    """
    crop = rescale(crop, scale)
    coarse = coarse_score(thumbnail(crop, factor), thumbnail(slide, factor))
    if coarse is None:
        return score_at(crop, slide, 0, 0, radius=0) if factor > 1 and crop.shape[:2] == slide.shape[:2] else None
    return score_at(crop, slide, coarse.x * factor, coarse.y * factor, radius=2 * factor)


def rank_candidates(crop_thumb: np.ndarray, thumbs: dict[str, np.ndarray], top: int) -> list[tuple[str, CropMatch]]:
    """The ``top`` slides whose thumbnails match the crop thumbnail best, best first."""
    scored = [(key, m) for key, t in thumbs.items() if (m := coarse_score(crop_thumb, t)) is not None]
    scored.sort(key=lambda item: (-item[1].score, item[0]))
    return scored[:top]


# ----------------------------------------------------------------------------------- Spark part


def link_cells(spark, lake, min_score: float = 0.9, factor: int = 4, candidates: int = 3) -> dict[str, int]:
    """Fill ``cells``' source-slide columns where they are still unknown; returns counts by outcome.

    Manifest rows that name their ``source_slide_id`` get its content hash (the slide with that id;
    none when no such slide is ingested or the id is ambiguous) and, with ``crop_x``/``crop_y``, the
    score of the crop at that place. ALL-IDB2 crops without a source are searched in every ingested
    slide: the ``candidates`` best thumbnails are refined at full resolution; the best place is kept
    when it scores at least ``min_score`` (otherwise only the score is stored, so the cell is not
    searched again and stays unlinked).

    Returns:
        ``{"given": n, "given_scored": n, "given_mismatch": n, "matched": n, "unmatched": n}``.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.lakehouse import merge_new_rows, read_table

    cells = read_table(spark, lake, tables.CELLS)
    slides = read_table(spark, lake, tables.SLIDES)
    pending = cells.where(F.col("source_slide_sha256").isNull() & F.col("source_match_score").isNull())
    given = pending.where(F.col("source_slide_id").isNotNull())
    search = pending.where(F.col("source_slide_id").isNull() & (F.col("source_kind") == "allidb2"))
    counts = {"given": 0, "given_scored": 0, "given_mismatch": 0, "matched": 0, "unmatched": 0}
    if given.isEmpty() and search.isEmpty():
        return counts
    ids = slides.groupBy("slide_id").agg(F.count("*").alias("n"), F.first("content_sha256").alias("sha"))
    unique_ids = ids.where(F.col("n") == 1).select("slide_id", "sha")
    updates = []
    slide_cols = slides.select(
        F.col("content_sha256").alias("sha"), F.col("content").alias("slide"), F.col("pixel_size_um").alias("slide_um")
    )
    given_rows = (
        given.join(unique_ids, given["source_slide_id"] == unique_ids["slide_id"])
        .join(slide_cols, "sha")
        .select(
            "content_sha256", "content", "source_crop_x", "source_crop_y", "sha", "slide", "pixel_size_um", "slide_um"
        )
    )
    for row in given_rows.toLocalIterator():
        match = None
        if row["source_crop_x"] is not None and row["source_crop_y"] is not None:
            crop, slide = _decode(row["content"]), _decode(row["slide"])
            tried = [
                score_at(rescale(crop, scale), slide, row["source_crop_x"], row["source_crop_y"], 0)
                for scale in scales_to_try(row["pixel_size_um"], row["slide_um"])
            ]
            match = max((m for m in tried if m is not None), key=lambda m: m.score, default=None)
            counts["given_scored"] += 1
            if match is None or match.score < min_score:
                counts["given_mismatch"] += 1
        counts["given"] += 1
        updates.append((row["content_sha256"], row["sha"], None, match.score if match else None, None, None))
    if not search.isEmpty():
        # On the driver: ALL-IDB1's 108 slides are ~100 MB of JPEG bytes, their thumbnails a few MB.
        stored = {
            r["content_sha256"]: (r["slide_id"], bytes(r["content"]), r["pixel_size_um"])
            for r in slides.toLocalIterator()
        }
        thumbs = {key: thumbnail(_decode(data), factor) for key, (_, data, _) in stored.items()}
        for row in search.select("content_sha256", "content", "pixel_size_um").toLocalIterator():
            crop = _decode(row["content"])
            best = None
            # The crop as it is and at each slide's pixel size (estimates can be off: both are tried).
            by_scale: dict[float, dict[str, np.ndarray]] = {}
            for key, (_, _, slide_um) in stored.items():
                for scale in scales_to_try(row["pixel_size_um"], slide_um):
                    by_scale.setdefault(scale, {})[key] = thumbs[key]
            ranked = []
            for scale, group in by_scale.items():
                ranked += [
                    (key, m, scale)
                    for key, m in rank_candidates(thumbnail(rescale(crop, scale), factor), group, candidates)
                ]
            ranked.sort(key=lambda item: (-item[1].score, item[0]))
            for key, _, scale in ranked[:candidates]:
                match = locate_crop(crop, _decode(stored[key][1]), scale, factor)
                if match is not None and (best is None or match.score > best[2].score):
                    best = (key, stored[key][0], match)
            if best is not None and best[2].score >= min_score:
                counts["matched"] += 1
                updates.append((row["content_sha256"], best[0], best[1], best[2].score, best[2].x, best[2].y))
            else:
                counts["unmatched"] += 1
                score = best[2].score if best else -1.0
                updates.append((row["content_sha256"], None, None, score, None, None))
    if updates:
        frame = pd.DataFrame(updates, columns=["key", "sha", "slide_id", "score", "x", "y"]).astype(object)
        _update_cells(spark, lake, frame.where(frame.notna(), None), merge_new_rows)
    if counts["given_mismatch"]:
        log.warning(
            "%d manifest crop(s) do not match their source slide at crop_x/crop_y (score < %.2f)",
            counts["given_mismatch"],
            min_score,
        )
    return counts


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("image bytes cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _update_cells(spark, lake, frame, merge_new_rows) -> None:
    """MERGE-update the source columns of the listed cells (matched by content hash; no inserts)."""
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.lakehouse import read_table

    schema = "key string, sha string, slide_id string, score double, x int, y int"
    found = spark.createDataFrame(frame, schema)
    rows = (
        read_table(spark, lake, tables.CELLS)
        .join(found, F.col("content_sha256") == F.col("key"))
        .withColumn("source_slide_sha256", F.col("sha"))
        .withColumn("source_slide_id", F.coalesce("source_slide_id", "slide_id"))
        .withColumn("source_match_score", F.col("score"))
        .withColumn("source_crop_x", F.coalesce("source_crop_x", "x"))
        .withColumn("source_crop_y", F.coalesce("source_crop_y", "y"))
    )
    condition = "t.source_slide_sha256 IS NULL AND t.source_match_score IS NULL"
    columns = ("source_slide_id", "source_slide_sha256", "source_match_score", "source_crop_x", "source_crop_y")
    merge_new_rows(spark, lake, tables.CELLS, rows, condition, {c: f"s.{c}" for c in columns})
