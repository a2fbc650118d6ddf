"""``allmtl eval-detection`` on real local Spark + Delta: synthetic slides, segmented, against the generator's boxes.

The generator's ``boxes.csv`` holds one box per white cell, the extent of its truth mask.
"""

from __future__ import annotations

import csv

import cv2
import pytest

from allmtl_spark import tables
from allmtl_spark.config import load_config
from allmtl_spark.errors import LakehouseError, SourceError
from allmtl_spark.lakehouse import read_table
from allmtl_spark.segmentation.detection import read_boxes
from allmtl_spark.segmentation.detection_job import run_eval_detection

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def segmented(spark, tmp_path_factory):
    """(config overrides, lake, boxes.csv) with 4 synthetic 320x240 slides ingested and ROI-segmented."""
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.segmentation.job import run_segment
    from allmtl_spark.synth.dataset import write_dataset

    root = tmp_path_factory.mktemp("detect")
    overrides = [
        f"lakehouse.path={root}/lakehouse",
        f"synth.output={root}/data",
        "synth.n_slides=4",
        "synth.n_cells=0",
        "synth.slide_width=320",
        "synth.slide_height=240",
        "synth.workers=1",
        "segment.mask_source=roi",
        f"ingest.sources=[{{kind: manifest, path: {root}/data/manifest.csv, site: detect}}]",
    ]
    cfg = load_config("conf/demo.yaml", overrides)
    write_dataset(cfg.synth, progress=None)
    lake = Lakehouse.from_config(cfg.lakehouse)
    run_ingest(spark, cfg.ingest, cfg.privacy, lake)
    run_segment(spark, cfg.segment, cfg.roi, lake, run_id="seg1")
    return overrides, lake, root / "data" / "boxes.csv"


def test_scores_count_every_box_and_every_detection_of_the_segmented_slides(spark, segmented, tmp_path):
    _, lake, boxes_csv = segmented
    boxes = read_boxes(str(boxes_csv))
    cells = read_table(spark, lake, tables.SLIDE_CELLS).collect()
    assert boxes and cells

    report = run_eval_detection(spark, lake, str(boxes_csv), figure_path=str(tmp_path / "f.png"))

    scores = report.scores
    assert report.segmenter_version == "roi-adaptive" and scores.slides == 4
    assert scores.boxes == len(boxes) and scores.detections == len(cells)
    assert scores.found + len([i for m in scores.matches for i in m.missed]) == len(boxes)
    assert scores.found + scores.duplicates + scores.outside == scores.detections
    assert sum(s.boxes for s in scores.per_label.values()) == len(boxes)
    assert scores.found > 0.5 * len(boxes)  # the threshold ROI finds most cells of clean small slides
    assert cv2.imread(report.figure) is not None
    assert "one-per-cell precision" in report.format() and report.figure in report.format()


def test_a_box_without_a_cell_is_a_miss_and_unknown_or_unread_slides_are_left_out(spark, segmented, tmp_path):
    _, lake, boxes_csv = segmented
    baseline = run_eval_detection(spark, lake, str(boxes_csv)).scores
    with open(boxes_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    slide = rows[0]["slide_id"]
    centroids = [
        (r["centroid_x"], r["centroid_y"])
        for r in read_table(spark, lake, tables.SLIDE_CELLS).where(f"slide_id = '{slide}'").collect()
    ]
    corner = next(  # a 4x4 box no detection lies in
        (x, y)
        for x, y in ((0, 0), (316, 0), (0, 236), (316, 236))
        if not any(x - 1 <= cx <= x + 5 and y - 1 <= cy <= y + 5 for cx, cy in centroids)
    )
    extra = [
        {
            "slide_id": slide,
            "xmin": corner[0],
            "ymin": corner[1],
            "xmax": corner[0] + 3,
            "ymax": corner[1] + 3,
            "label": "ghost",
        },
        {"slide_id": "NotIngested_1", "xmin": 0, "ymin": 0, "xmax": 9, "ymax": 9, "label": "ghost"},
    ]
    path = tmp_path / "boxes.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + extra)

    report = run_eval_detection(spark, lake, str(path), segment_run="seg1")

    assert report.scores.boxes == baseline.boxes + 1 and report.scores.found == baseline.found
    assert report.scores.per_label["ghost"].found == 0 and report.scores.per_label["ghost"].boxes == 1
    assert report.unusable == {"not_ingested": 1} and "not_ingested 1" in report.format()


def test_site_picks_the_slides_when_ids_repeat(spark, segmented, tmp_path):
    _, lake, boxes_csv = segmented
    assert (
        run_eval_detection(spark, lake, str(boxes_csv), site="synthetic").scores.slides == 4
    )  # the generator's manifest site
    with pytest.raises(LakehouseError, match="slide ids match"):
        run_eval_detection(spark, lake, str(boxes_csv), site="elsewhere")


def test_bad_inputs_say_what_to_fix(spark, segmented, tmp_path):
    _, lake, boxes_csv = segmented
    with pytest.raises(LakehouseError, match="slide ids match"):
        other = tmp_path / "other.csv"
        other.write_text("slide_id,xmin,ymin,xmax,ymax,label\nSomeoneElse_1,0,0,9,9,cell\n")
        run_eval_detection(spark, lake, str(other))
    with pytest.raises(LakehouseError, match="no slide segmented"):
        run_eval_detection(spark, lake, str(boxes_csv), segment_run="never-ran")
    with pytest.raises(SourceError, match="holds no boxes"):
        empty = tmp_path / "empty.csv"
        empty.write_text("slide_id,xmin,ymin,xmax,ymax,label\n")
        run_eval_detection(spark, lake, str(empty))


def test_cli_prints_the_scores_and_exits_3_on_a_missing_box_file(segmented, tmp_path, capsys):
    from allmtl_spark.cli import main

    overrides, _, boxes_csv = segmented
    sets = [a for o in overrides for a in ("--set", o)]
    figure = tmp_path / "cli.png"
    assert main(["eval-detection", *sets, "--boxes", str(boxes_csv), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "recall" in out and "one-per-cell precision" in out and figure.exists()
    assert main(["eval-detection", *sets, "--boxes", str(tmp_path / "missing.csv")]) == 3
    assert "not found" in capsys.readouterr().err


def test_stain_figure_of_a_segment_run_shows_three_slides_before_and_after(spark, segmented, tmp_path):
    from allmtl_spark.segmentation.job import write_stain_figure

    _, lake, _ = segmented
    path = write_stain_figure(spark, lake, "roi-adaptive", str(tmp_path / "stain.png"), ("reinhard", "macenko"))
    picture = cv2.imread(path)
    assert picture is not None and picture.shape[0] > 600  # three rows of 320x240 slides
    assert write_stain_figure(spark, lake, "no-such-segmenter", str(tmp_path / "none.png"), ("reinhard",)) is None
