"""The segmentation job on real local Spark + Delta, with a few small synthetic slides."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

import cv2
import numpy as np
import pytest

from allmtl_spark import tables
from allmtl_spark.config.schema import LakehouseConfig, RoiConfig, SegmentConfig
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table, table_version
from allmtl_spark.segmentation.job import pending_keys, run_segment
from allmtl_spark.segmentation.pipeline import decode_mask, decode_rgb, encode_png

pytestmark = pytest.mark.spark

WIDTH, HEIGHT = 320, 240
GOOD = ("Im001_1", "Im002_0", "Im003_1", "Im004_1", "Im005_0")


def _slide_row(slide_id, content, width, height, truth=None, blasts=None, pixel_size_um=0.155):
    return {
        "slide_id": slide_id,
        "content_sha256": hashlib.sha256(content).hexdigest(),
        "source_path": f"/data/ALL_IDB1/im/{slide_id}.jpg",
        "duplicate_paths": [],
        "source_kind": "allidb1",
        "site": "test",
        "format": "JPEG",
        "width": width,
        "height": height,
        "channels": 3,
        "bit_depth": 8,
        "content": bytearray(content),
        "label_binary": int(slide_id[-1]),
        "label_fab": None,
        "truth_mask": bytearray(truth) if truth is not None else None,
        "patient_hash": None,
        "ingest_run_id": "test",
        "ingested_at": datetime(2026, 1, 1),
        "blast_centroids": [{"x": x, "y": y} for x, y in blasts] if blasts is not None else None,
        "has_xyc": blasts is not None,
        "pixel_size_um": pixel_size_um,
        "pixel_size_source": "given" if pixel_size_um else None,
        "pixel_size_confidence": None,
    }


@pytest.fixture(scope="module")
def slide_lake(spark, tmp_path_factory):
    """Five rendered 320x240 smears (with truth masks and .xyc blasts), a garbage slide and two "huge" ones.

    The huge ones declare 5000x4000 pixels (over the default decode limit): Im007_0 holds a real 320x240
    smear, Im008_0 garbage, so letting them through (a higher limit) segments one and fails to decode the other.
    """
    from allmtl_spark.synth.smear import SmearParams, render_slide

    lake = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path_factory.mktemp("seglake") / "lakehouse")))
    rows = []
    for i, slide_id in enumerate(GOOD):
        drawn = render_slide(
            np.random.default_rng(100 + i),
            WIDTH,
            HEIGHT,
            "L1" if slide_id.endswith("1") else "normal",
            # Clean slides at ALL-IDB1's scale: lymphoid cells only, as the ROI method's pixel sizes expect.
            SmearParams(white_cells_per_slide=(2, 3), other_white_cells_per_slide=(0, 0), pixel_size_um=(0.155, 0.155)),
        )
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        blasts = [(round(c.cx), round(c.cy)) for c in drawn.blasts]
        # Im005_0 has no pixel size, as a row ingested by an earlier release: the job estimates it.
        pixel = None if slide_id == "Im005_0" else 0.155
        rows.append(_slide_row(slide_id, jpeg.tobytes(), WIDTH, HEIGHT, encode_png(drawn.mask), blasts, pixel))
    rows.append(_slide_row("Im006_1", b"\xff\xd8\xff garbage, not a JPEG", WIDTH, HEIGHT, blasts=[(10, 10)]))
    drawn = render_slide(np.random.default_rng(107), WIDTH, HEIGHT, "normal", SmearParams(pixel_size_um=(0.155, 0.155)))
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    rows.append(_slide_row("Im007_0", jpeg.tobytes(), 5000, 4000))  # declares 20 M pixels
    rows.append(_slide_row("Im008_0", b"\xff\xd8\xff too large to decode", 5000, 4000))
    merge_new_rows(spark, lake, tables.SLIDES, spark.createDataFrame(rows, tables.SLIDES.schema))
    return lake


def _versions(spark, lake):
    return [table_version(spark, lake, t) for t in (tables.SEGMENTED_SLIDES, tables.SLIDE_CELLS, tables.REJECTS)]


def test_segment_writes_slides_cells_and_rejects_and_a_rerun_adds_nothing(spark, slide_lake):
    cfg = SegmentConfig(mask_source="roi", crop_size_um=20.15, slides_per_partition=2)

    summary = run_segment(spark, cfg, RoiConfig(), slide_lake, run_id="r1")

    segmented = {r["slide_id"]: r for r in read_table(spark, slide_lake, tables.SEGMENTED_SLIDES).collect()}
    assert set(segmented) == set(GOOD) and {r["segmenter_version"] for r in segmented.values()} == {"roi-adaptive"}
    first = segmented["Im001_1"]
    assert (first["width"], first["height"], first["scale"]) == (WIDTH // 2, HEIGHT // 2, 0.5)
    assert (first["pixel_size_um"], first["pixel_size_source"], first["working_pixel_size_um"]) == (
        0.155,
        "given",
        0.31,
    )
    assert segmented["Im005_0"]["pixel_size_source"] in ("estimated", "default")  # no stored pixel size
    assert summary.pixel_sizes["given"] == 4 and "pixel size" in summary.format()
    assert decode_mask(bytes(first["mask"])).shape == (HEIGHT // 2, WIDTH // 2)
    assert decode_rgb(bytes(first["isolated"])).shape == (HEIGHT // 2, WIDTH // 2, 3)
    assert all(r["dice_vs_truth"] > 0.8 and r["truth_cells_found"] == r["truth_cell_count"] for r in segmented.values())

    cells = read_table(spark, slide_lake, tables.SLIDE_CELLS).collect()
    assert len(cells) == sum(r["cell_count"] for r in segmented.values()) == summary.cells > 0
    for cell in cells:
        assert decode_rgb(bytes(cell["crop"])).shape == (65, 65, 3) and cell["crop_pixel_size_um"] == 0.31
        assert 0 <= cell["centroid_x"] < WIDTH and 0 <= cell["centroid_y"] < HEIGHT  # original pixels
        assert cell["bbox_x"] + cell["bbox_w"] <= WIDTH and cell["area_um2"] >= cfg.min_cell_area_um2
        if cell["pixel_size_source"] == "given":
            assert cell["area_px"] == pytest.approx(cell["area_um2"] / 0.155**2, rel=0.01)
    assert summary.blast_recall == 1.0  # every .xyc blast found (the tests' slides are clean)

    rejects = {r["source_path"].rsplit("/", 1)[1]: r for r in read_table(spark, slide_lake, tables.REJECTS).collect()}
    assert {k: (r["reason"], r["retryable"]) for k, r in rejects.items()} == {
        "Im006_1.jpg": ("decode_error", False),  # a property of the slide: permanent
        "Im007_0.jpg": ("too_large_for_worker", True),  # a limit of the config: retried by every run
        "Im008_0.jpg": ("too_large_for_worker", True),
    }
    assert all(r["stage"] == "segment" and r["version"] == "roi-adaptive" for r in rejects.values())
    assert "max_decoded_pixels" in rejects["Im007_0.jpg"]["detail"]
    assert summary.segmented == 5 and summary.rejects == {"decode_error": 1, "too_large_for_worker": 2}

    versions = _versions(spark, slide_lake)
    again = run_segment(spark, cfg, RoiConfig(), slide_lake, run_id="r2")
    # only the retryable rejects are tried again; rejected for the same reason, they change nothing
    assert again.pending == 2 and again.rejects == {"too_large_for_worker": 2}
    assert _versions(spark, slide_lake) == versions  # no new Delta commit at all

    # the limit raised: Im007_0 is segmented and its reject deleted; Im008_0 cannot be decoded, and that
    # permanent reason takes over its row, so it is not retried again
    raised = run_segment(spark, replace(cfg, max_decoded_pixels=25_000_000), RoiConfig(), slide_lake, run_id="r3")
    assert raised.pending == 2 and raised.segmented == 1 and raised.rejects == {"decode_error": 1}
    segmented = {r["slide_id"] for r in read_table(spark, slide_lake, tables.SEGMENTED_SLIDES).collect()}
    assert segmented == {*GOOD, "Im007_0"}
    rejects = {r["source_path"].rsplit("/", 1)[1]: r for r in read_table(spark, slide_lake, tables.REJECTS).collect()}
    assert {k: (r["reason"], r["retryable"], r["run_id"]) for k, r in rejects.items()} == {
        "Im006_1.jpg": ("decode_error", False, "r1"),
        "Im008_0.jpg": ("decode_error", False, "r3"),
    }
    assert pending_keys(spark, slide_lake, "roi-adaptive") == []


def test_a_bug_while_segmenting_fails_the_slide_instead_of_rejecting_it_for_good():
    """Only too large / out of memory / undecodable / bad pixel size / no cells are rejects; a bug propagates."""
    from types import SimpleNamespace

    from allmtl_spark.segmentation.job import segment_one

    image = np.full((HEIGHT, WIDTH, 3), 190, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    slide = SimpleNamespace(**_slide_row("Im201_1", jpeg.tobytes(), WIDTH, HEIGHT), blast_xy=None)
    cfg = SegmentConfig(mask_source="unet", crop_size_um=20.15)

    def unet(error):
        def predict(small):
            raise error

        return lambda: predict

    with pytest.raises(RuntimeError, match="bug"):  # was stored as a permanent segment_error reject
        segment_one(slide, unet(RuntimeError("bug")), RoiConfig(), cfg, 0.31)
    rows = segment_one(slide, unet(MemoryError()), RoiConfig(), cfg, 0.31)
    assert [(r["row_kind"], r["reason"]) for r in rows] == [("reject", "out_of_memory")]


def test_unet_is_loaded_once_per_python_worker_not_per_batch_or_task(spark, slide_lake, tmp_path):
    from allmtl_spark.networks.resunet import build_residual_unet
    from allmtl_spark.registry import ModelRecord, register_model, save_artifact

    builder = {"input_size": 32, "channels": 3, "depth": 2, "base_filters": 2}
    folder = str(tmp_path / "seg-tiny")
    sha = save_artifact(
        build_residual_unet(**builder),
        folder,
        {"builder": builder, "working_scale": 0.5, "input_normalize": "grey_world"},
    )
    register_model(
        spark,
        slide_lake,
        ModelRecord(
            model_id="seg-tiny",
            run_id="tiny",
            kind="segmenter",
            stage="segmenter",
            task="segmentation",
            class_names=["background", "white_cell"],
            artifact_path=folder,
            artifact_sha256=sha,
            config_json="{}",
        ),
    )
    cfg = SegmentConfig(segmenter="seg-tiny", mask_source="unet", crop_size_um=20.15, slides_per_partition=2)
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key)
    spark.conf.set(key, "1")  # one slide per Arrow batch: each task sees two batches
    try:
        summary = run_segment(spark, cfg, RoiConfig(), slide_lake, run_id="u1")
    finally:
        spark.conf.set(key, previous)

    assert summary.pending == 8 and summary.segmented + sum(summary.rejects.values()) == 8
    assert summary.tasks == 4  # 8 slides, 2 per partition
    assert sorted(summary.task_slides) == [2, 2, 2, 2]  # spread evenly: no task empty, none with 3
    # Every task runs two Arrow batches: a worker that loaded per batch (or per task it was reused for) shows 2+.
    # Whether Spark reuses a worker across tasks depends on timing (a loaded machine starts fresh ones), so
    # reuse itself is not asserted here; the count per worker is.
    assert summary.loads_per_worker and max(summary.loads_per_worker.values()) == 1
    assert sum(summary.loads_per_worker.values()) <= summary.tasks
    assert 0 < summary.peak_rss_bytes < 2.5 * 2**30
