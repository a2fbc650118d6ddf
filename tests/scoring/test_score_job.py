"""The scoring job on real local Spark + Delta with real (untrained) Keras models."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.errors import ArtifactError
from allmtl_spark.lakehouse import read_table, table_version
from allmtl_spark.scoring.job import run_score
from allmtl_spark.scoring.pipeline import slide_cell_disagreement
from allmtl_spark.scoring.tflite import cached_conversion, conversion_folder
from tests.scoring.conftest import SLIDES, copy_model

pytestmark = pytest.mark.spark


def _with_model(cfg, model_id: str, **score):
    return replace(cfg, score=replace(cfg.score, model=model_id, **score))


def _rows_per_slide(spark, lake, model_id: str) -> list[int]:
    scores = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{model_id}'")
    return [r["count"] for r in scores.groupBy("content_sha256").count().collect()]


def test_every_slide_scored_once_models_loaded_once_per_worker_rerun_writes_nothing(spark, scoring_lake):
    cfg, lake, models = scoring_lake
    # a model version of its own: the session's other scoring tests (test_mlflow_model) score the fixture's model
    model_id = copy_model(spark, lake, models["stage3"], "tiny-once-stage3-fab4").model_id
    # thresholds that flag every leukemia call and every normal call with a blast: the column is filled as the
    # pure rule says, whatever the untrained models answer
    strict = {"disagreement_min_blasts": 10**6, "disagreement_max_blast_pct": 0.0}
    first = run_score(spark, _with_model(cfg, model_id, **strict), lake, report=True)

    assert first.scored == SLIDES and first.pending == SLIDES
    assert _rows_per_slide(spark, lake, model_id) == [1] * SLIDES
    row = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{model_id}'").first()
    assert len(row["probabilities"]) == 4 and abs(sum(row["probabilities"]) - 1) < 1e-5
    assert row["predicted_class"] in ("normal", "L1", "L2", "L3") and row["white_cell_count"] >= 1
    assert row["cell_model_version"] == models["stage2"].model_id and row["blast_cell_count"] is not None
    scored = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{model_id}'").collect()
    expected = [
        slide_cell_disagreement(r["predicted_leukemia"], r["white_cell_count"], r["blast_cell_count"], 10**6, 0.0)
        for r in scored
    ]
    assert [r["slide_cell_disagreement"] for r in scored] == expected
    assert sum(first.disagreements.values()) == sum(e is not None for e in expected)
    assert any(r["predicted_leukemia"] for r in scored) <= ("leukemia_without_blasts" in expected)
    # 6 one-slide tasks over 2 workers: each worker loaded the slide and the cell model exactly once
    assert sorted(first.loads_per_worker.values()) == [2] * len(first.loads_per_worker)
    assert sum(1 for _ in first.loads_per_worker) <= 2
    html = Path(first.report_path).read_text()
    assert "data:image/png;base64" in html and "Grad-CAM" in html
    # every slide of the run is listed (sortable, paged), a sample has thumbnails linked from its row
    listed = json.loads(re.search(r'id="slides-data">(.*?)</script>', html, re.S).group(1))
    assert sorted(row[0] for row in listed["rows"]) == sorted(r["slide_id"] for r in scored)
    thumbs = min(SLIDES, cfg.score.report_thumbnails)
    assert html.count('<figure id="thumb-') == thumbs and sum(row[-1] is not None for row in listed["rows"]) == thumbs
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where(f"scoring_run_id = '{first.run_id}'")
    counts = {r["class_name"]: r["value"] for r in aggregates.where("scope = 'run' AND metric = 'count'").collect()}
    review = aggregates.where("scope = 'run' AND metric = 'needs_review'").first()
    # slides flagged for review (here: the disagreements) are counted apart from the stage-wise counts
    assert review["value"] == sum(e is not None for e in expected) and review["n"] == SLIDES
    assert sum(counts.values()) == SLIDES - review["value"]

    versions = [table_version(spark, lake, t) for t in (tables.SLIDE_SCORES, tables.SCORE_AGGREGATES, tables.REJECTS)]
    second = run_score(spark, _with_model(cfg, model_id), lake, report=True)
    assert second.pending == 0 and "nothing new" in second.format()
    assert [
        table_version(spark, lake, t) for t in (tables.SLIDE_SCORES, tables.SCORE_AGGREGATES, tables.REJECTS)
    ] == versions


@pytest.mark.slow  # 31 s; test_reliability's two spark-submit processes check real overlap in the default tier
def test_two_concurrent_runs_write_one_row_per_slide(spark, scoring_lake):
    cfg, lake, models = scoring_lake
    # without a cached conversion: both drivers convert at once, into the same folder
    record = copy_model(spark, lake, models["stage3"], "tiny-v2-stage3-fab4", keep_conversions=False)
    errors = []

    def score():
        try:
            run_score(spark, _with_model(cfg, record.model_id), lake, report=False)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=score) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _rows_per_slide(spark, lake, record.model_id) == [1] * SLIDES


def test_corrupted_artifact_is_refused_before_scoring(spark, scoring_lake):
    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-corrupt-stage3-fab4")
    with open(record.model_file, "r+b") as handle:
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match="SHA-256.*corrupted or was replaced"):
        run_score(spark, _with_model(cfg, record.model_id), lake, report=False)
    assert _rows_per_slide(spark, lake, record.model_id) == []


def test_undecodable_slide_becomes_a_reject_and_the_rest_are_scored(spark, scoring_lake):
    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-v3-stage3-fab4")
    good = read_table(spark, lake, tables.SLIDES).first().asDict()
    broken = {
        **good,
        "content_sha256": "0" * 64,
        "slide_id": "broken",
        "content": bytearray(b"not a jpeg"),
        "source_path": good["source_path"] + ".broken",
    }
    from allmtl_spark.lakehouse import merge_new_rows

    merge_new_rows(spark, lake, tables.SLIDES, spark.createDataFrame([broken], tables.SLIDES.schema))
    summary = run_score(spark, _with_model(cfg, record.model_id), lake, report=False)
    assert summary.scored == SLIDES and summary.rejects == {"decode_error": 1}
    rejects = read_table(spark, lake, tables.REJECTS).where(f"stage = 'score' AND version = '{record.model_id}'")
    assert [r["content_sha256"] for r in rejects.collect()] == ["0" * 64]
    again = run_score(spark, _with_model(cfg, record.model_id), lake, report=False)
    assert again.pending == 0  # the reject is not retried for the same version


@pytest.mark.slow  # 158 s; tests/scoring/test_tflite.py checks the conversion's outputs against Keras on arrays
def test_keras_and_tflite_runtimes_give_the_same_scores(spark, scoring_lake, tmp_path):
    cfg, shared_lake, models = scoring_lake
    by_runtime = {}
    for runtime in ("tflite", "keras"):
        # a configured cache per runtime (lakehouse.cache_path): conversions are keyed by the artifact's hash,
        # so the copies of one artifact share one in the lakehouse's own cache
        lake = replace(shared_lake, cache_root=str(tmp_path / runtime))
        record = copy_model(spark, lake, models["stage3"], f"tiny-{runtime}-stage3-fab4", keep_conversions=False)
        summary = run_score(spark, _with_model(cfg, record.model_id, runtime=runtime), lake, report=False)
        assert summary.scored == SLIDES
        # the tflite run converted this version into the cache, the keras run converted nothing; either way
        # each worker has loaded the two files the plan names (counted by path and hash: a worker that
        # loaded the other runtime's files would count 0 or 1 here)
        assert (
            cached_conversion(conversion_folder(lake.cache, record.artifact_sha256), record.artifact_sha256) is not None
        ) == (runtime == "tflite")
        assert sorted(os.listdir(record.artifact_path)) == ["model.h5", "model.json"]  # nothing beside the artifact
        stored = read_table(spark, lake, tables.MODELS).where(f"model_id = '{record.model_id}'").first()
        converted = cached_conversion(conversion_folder(lake.cache, record.artifact_sha256), record.artifact_sha256)
        assert stored["tflite_sha256"] == (converted[1] if runtime == "tflite" else None)  # recorded in `models`
        assert set(summary.loads_per_worker.values()) == {2}
        rows = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{record.model_id}'").collect()
        by_runtime[runtime] = {r["content_sha256"]: r for r in rows}
        # every row names the runtime and the exact files the workers ran
        cell = models["stage2"]
        ran = {
            "tflite": (
                cached_conversion(conversion_folder(lake.cache, record.artifact_sha256), record.artifact_sha256),
                cached_conversion(conversion_folder(lake.cache, cell.artifact_sha256), cell.artifact_sha256),
            ),
            "keras": ((None, record.artifact_sha256), (None, cell.artifact_sha256)),
        }[runtime]
        assert {(r["runtime"], r["model_file_sha256"], r["cell_model_file_sha256"]) for r in rows} == {
            (runtime, ran[0][1], ran[1][1])
        }
    lite, keras = by_runtime["tflite"], by_runtime["keras"]
    assert lite.keys() == keras.keys() and len(lite) == SLIDES
    for key, row in lite.items():
        assert row["probabilities"] == pytest.approx(keras[key]["probabilities"], abs=1e-3)
        assert row["white_cell_count"] == keras[key]["white_cell_count"]


# ------------------------------------------------------------------ rejects: permanent, retryable, or a failed task


def _keras(cfg, model_id: str):
    return _with_model(cfg, model_id, runtime="keras")  # no TFLite conversion: the tflite tests cover it


def _rejects(spark, lake, version: str) -> dict[str, str]:
    rows = read_table(spark, lake, tables.REJECTS).where(f"stage = 'score' AND version = '{version}'").collect()
    return {r["content_sha256"]: r["reason"] for r in rows}


def test_only_no_white_cells_becomes_a_permanent_reject_other_errors_fail_the_task(spark, scoring_lake):
    import io

    import numpy as np
    from PIL import Image

    from allmtl_spark.scoring.job import ScorePlan, resolve_classifiers, score_one
    from allmtl_spark.segmentation.job import resolve_segmenter

    cfg, lake, models = scoring_lake
    cfg = _keras(cfg, models["stage3"].model_id)
    classifier, cell = resolve_classifiers(spark, lake, cfg)
    plan = ScorePlan.build(classifier, cell, resolve_segmenter(spark, lake, cfg.segment, cfg.roi), cfg, lake.cache)
    slide = read_table(spark, lake, tables.SLIDES).where("slide_id LIKE 'Im%'").first()  # a generated slide

    def failing(error):
        def classify(images):
            raise error

        return lambda: (None, classify, None)

    assert score_one(slide, plan, failing(MemoryError()))["reason"] == "out_of_memory"
    for bug in (ValueError("shapes (1, 64) and (75,) not aligned"), RuntimeError("bug"), KeyError("x")):
        with pytest.raises(type(bug)):  # was stored as a permanent no_white_cells reject for a ValueError
            score_one(slide, plan, failing(bug))
    grey = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 200, np.uint8)).save(grey, format="JPEG")
    blank = slide.asDict() | {"content": grey.getvalue()}
    from types import SimpleNamespace

    row = score_one(SimpleNamespace(**blank), plan, failing(AssertionError("never called")))
    assert (row["row_kind"], row["reason"]) == ("reject", "no_white_cells")


def test_a_bug_in_a_task_fails_the_job_instead_of_rejecting_its_slides(spark, scoring_lake):
    import json
    import shutil

    from allmtl_spark.registry import register_model

    cfg, lake, models = scoring_lake
    record = models["stage3"]
    folder = Path(lake.models) / "tiny-bug-stage3-fab4"
    shutil.copytree(record.artifact_path, folder)
    spec = json.loads((folder / "model.json").read_text())
    # a view this release does not know (a newer release's model): every slide raises a ValueError, which
    # was stored as a permanent no_white_cells reject for every slide, and the job exited 0
    spec["view"]["kind"] = "tiles"
    (folder / "model.json").write_text(json.dumps(spec))
    bug = replace(record, model_id="tiny-bug-stage3-fab4", artifact_path=str(folder), spec_sha256=None)
    register_model(spark, lake, bug)
    with pytest.raises(Exception, match="ValueError: unknown view kind 'tiles'"):
        run_score(spark, _keras(cfg, bug.model_id), lake, report=False)
    assert _rows_per_slide(spark, lake, bug.model_id) == [] and _rejects(spark, lake, bug.model_id) == {}


def test_retryable_rejects_are_scored_by_the_next_run_and_cleared_permanent_ones_stay(spark, scoring_lake):
    from allmtl_spark.lakehouse import merge_new_rows
    from allmtl_spark.rejects import reject_rows

    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-retry-stage3-fab4")
    slides = read_table(spark, lake, tables.SLIDES)
    first, second = slides.where("slide_id LIKE 'Im%'").orderBy("content_sha256").limit(2).collect()
    earlier = spark.createDataFrame(
        [
            (first["source_path"], first["content_sha256"], "out_of_memory", "a busy worker"),
            (second["source_path"], second["content_sha256"], "no_white_cells", "no white cell found"),
        ],
        "source_path string, content_sha256 string, reason string, detail string",
    )
    rows = reject_rows(earlier, "score", "an-earlier-run", record.model_id, "source_path", "content_sha256")
    merge_new_rows(spark, lake, tables.REJECTS, rows)

    summary = run_score(spark, _keras(cfg, record.model_id), lake, report=False)

    assert summary.pending == slides.count() - 1  # every slide but the permanent reject: the out-of-memory one again
    scored = {
        r["content_sha256"]
        for r in read_table(spark, lake, tables.SLIDE_SCORES).collect()
        if r["model_version"] == record.model_id
    }
    assert first["content_sha256"] in scored and second["content_sha256"] not in scored
    rejects = _rejects(spark, lake, record.model_id)  # (another test's undecodable slide may be among them)
    assert rejects[second["content_sha256"]] == "no_white_cells" and first["content_sha256"] not in rejects


# ------------------------------------------------------------------ a run that died between commits


@pytest.mark.slow  # 49 s; test_reliability's killed spark-submit driver checks the same repair in the default tier
def test_the_next_run_finishes_a_run_that_died_before_its_aggregates(spark, scoring_lake):
    from delta.tables import DeltaTable

    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-finish-stage3-fab4")
    first = run_score(spark, _keras(cfg, record.model_id), lake, report=False)
    # what a driver that died right after the slide_scores commit leaves: no aggregates, no report
    DeltaTable.forPath(spark, lake.path(tables.SCORE_AGGREGATES)).delete(f"scoring_run_id = '{first.run_id}'")

    second = run_score(spark, _keras(cfg, record.model_id), lake, report=True)

    assert second.pending == 0 and second.completed == [first.run_id]
    assert f"finished earlier run(s) that had no aggregates: {first.run_id}" in second.format()
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where(f"scoring_run_id = '{first.run_id}'")
    counts = aggregates.where("scope = 'run' AND metric IN ('count', 'needs_review')").collect()
    assert sum(r["value"] for r in counts) == SLIDES  # each slide counted by its class or as needing review
    assert (Path(lake.reports) / "score" / first.run_id / "index.html").is_file()
    versions = [table_version(spark, lake, t) for t in (tables.SLIDE_SCORES, tables.SCORE_AGGREGATES, tables.REJECTS)]
    third = run_score(spark, _keras(cfg, record.model_id), lake, report=True)
    assert third.completed == [] and "nothing written" in third.format()
    assert [
        table_version(spark, lake, t) for t in (tables.SLIDE_SCORES, tables.SCORE_AGGREGATES, tables.REJECTS)
    ] == versions
