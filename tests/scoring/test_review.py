"""When not to trust a score: calibrated probabilities, the OOD check and the review queue in the scoring job."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from allmtl_spark.metrics.calibration import apply_temperature
from allmtl_spark.registry import register_model
from allmtl_spark.scoring.aggregates import count_rows, selective_rows, stage_counts
from allmtl_spark.scoring.job import run_score
from allmtl_spark.scoring.review import format_queue, register_review_queue, review_queue
from allmtl_spark.trust import OOD_FEATURES, FeatureOodModel, OodModel, write_trust
from tests.scoring.conftest import SLIDES, copy_model


@pytest.mark.spark
def test_flagged_slides_stay_out_of_the_headline_counts(spark):
    frame = pd.DataFrame(
        {
            "scoring_run_id": ["r"] * 5,
            "scored_at": pd.to_datetime(["2026-01-01"] * 5),
            "site": ["a", "a", "a", "b", "b"],
            "predicted_class": ["L1", "L1", "normal", "L3", "normal"],
            "predicted_leukemia": [True, True, False, True, False],
            "needs_review": [True, False, False, True, None],
            "review_reasons": [["out_of_distribution:sharpness"], [], [], ["out_of_distribution:pixel_size"], None],
        }
    )
    schema = (
        "scoring_run_id string, scored_at timestamp, site string, predicted_class string, "
        "predicted_leukemia boolean, needs_review boolean, review_reasons array<string>"
    )
    scores = spark.createDataFrame(frame.astype(object).where(frame.notna(), None), schema)
    rows = pd.DataFrame(count_rows(stage_counts(scores, "r"), ["normal", "L1", "L2", "L3"]))

    def value(scope, key, metric, name=""):
        hit = rows[
            (rows.scope == scope) & (rows.scope_value == key) & (rows.metric == metric) & (rows.class_name == name)
        ]
        return hit.iloc[0]["value"], hit.iloc[0]["n"]

    assert value("run", "r", "count", "L1") == (1, 3)  # one L1 call needs review: out of the count
    assert value("run", "r", "count", "L3") == (0, 3)
    assert value("run", "r", "leukemia_count") == (1, 3)
    assert value("run", "r", "needs_review") == (2, 5)
    assert value("site", "a", "needs_review") == (1, 3) and value("site", "b", "needs_review") == (1, 2)
    assert value("run", "r", "review_reason", "out_of_distribution:pixel_size") == (1, 5)


@pytest.mark.unit
def test_accuracy_on_the_slides_not_flagged_and_risk_coverage():
    names = ["normal", "L1", "L2", "L3"]
    frame = pd.DataFrame(
        {
            "label_fab": ["normal", "L1", "L2", "L3"],
            "label_binary": [0, 1, 1, 1],
            # raw: all called L1; calibrated rows are what is reported where present
            "probabilities": [np.array([0.1, 0.7, 0.1, 0.1])] * 4,
            "calibrated_probabilities": [
                np.array([0.9, 0.05, 0.03, 0.02]),  # right, confident
                np.array([0.1, 0.6, 0.2, 0.1]),  # right
                np.array([0.2, 0.5, 0.2, 0.1]),  # wrong (L1 for L2), flagged
                None,  # raw: L1 for L3, wrong, least confident of the raw ones? 0.7 > 0.6
            ],
            "needs_review": [False, False, True, False],
        }
    )
    rows = pd.DataFrame(selective_rows(frame, names))

    def value(metric, name=""):
        hit = rows[(rows.metric == metric) & (rows.class_name == name)]
        return hit.iloc[0]["value"], hit.iloc[0]["n"]

    assert value("stage_coverage_not_flagged") == (0.75, 4)
    assert value("stage_accuracy_not_flagged") == (pytest.approx(2 / 3), 3)
    # confidence order 0.9 (right), 0.7 (wrong), 0.6 (right), 0.5 (wrong): accuracy 1, 1/2, 2/3, 1/2
    assert value("stage_accuracy_at_coverage", "1.0") == (0.5, 4)
    assert value("stage_accuracy_at_coverage", "0.5") == (0.5, 2)
    # normal vs leukemia: all right (normal 0.9 vs leukemia for the others)
    assert value("binary_accuracy_not_flagged") == (1.0, 3)


def _features_of_counts(counts: list[int]) -> tuple[OodModel, int]:
    """An OOD check that looks at the white-cell count only and passes exactly the slides with the first count."""
    k = len(OOD_FEATURES)
    precision = np.zeros((k, k))
    index = OOD_FEATURES.index("white_cell_count")
    precision[index, index] = 1.0
    mean = [0.0] * k
    mean[index] = math.log1p(counts[0])
    model = OodModel(OOD_FEATURES, tuple(mean), (1.0,) * k, tuple(map(tuple, precision)), 1e-6, 0.95, 10, 5)
    return model, counts[0]


@pytest.mark.spark
def test_scores_are_calibrated_flagged_and_queued(spark, scoring_lake):
    cfg, lake, models = scoring_lake
    base = copy_model(spark, lake, models["stage3"], "trust-v1-stage3-fab4")
    first = run_score(spark, replace(cfg, score=replace(cfg.score, model=base.model_id)), lake, report=False)
    assert first.scored == SLIDES
    rows = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{base.model_id}'").collect()
    # a model without trust.json: raw probabilities only, nothing flagged but disagreements
    assert all(r["calibrated_probabilities"] is None and r["ood_score"] is None for r in rows)
    counts = sorted(r["white_cell_count"] for r in rows)

    ood, passing = _features_of_counts(counts)
    folder = os.path.join(lake.models, "trust-v2-stage3-fab4")
    shutil.copytree(models["stage3"].artifact_path, folder)
    sha = write_trust(folder, {"temperature": 2.0, "ood": ood.to_dict()})
    record = replace(
        models["stage3"], model_id="trust-v2-stage3-fab4", artifact_path=folder, temperature=2.0, trust_sha256=sha
    )
    register_model(spark, lake, record)
    strict = {"disagreement_min_blasts": 0, "disagreement_max_blast_pct": 100.0}  # no disagreement flags
    summary = run_score(
        spark,
        replace(cfg, score=replace(cfg.score, model=record.model_id, report_sample=1, gradcam_slides=0, **strict)),
        lake,
        report=True,
    )
    scored = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{record.model_id}'").collect()
    assert len(scored) == SLIDES
    flagged = {r["slide_id"] for r in scored if r["white_cell_count"] != passing}
    assert flagged, "the fixture's slides should differ in white-cell count"
    for row in scored:
        expected = apply_temperature(np.array(row["probabilities"]), 2.0)
        assert np.allclose(row["calibrated_probabilities"], expected) and row["temperature"] == 2.0
        assert row["needs_review"] == (row["slide_id"] in flagged)
        assert row["review_reasons"] == (["out_of_distribution:white_cell_count"] if row["slide_id"] in flagged else [])
        assert row["ood_score"] == pytest.approx(abs(math.log1p(row["white_cell_count"]) - math.log1p(passing)))
    # the run summary counts them, and calls out the site when most of its slides are flagged
    text = summary.format()
    assert (
        f"need review (out of the headline counts; allmtl review --run {summary.run_id}): {len(flagged)} of {SLIDES}"
        in text
    )
    assert ("need review: its slides look unlike the model's training slides" in text) == (len(flagged) > SLIDES / 2)
    assert sum(summary.counts.values()) == SLIDES - len(flagged)
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where(f"scoring_run_id = '{summary.run_id}'")
    run_counts = aggregates.where("scope = 'run' AND metric = 'count'").collect()
    assert sum(r["value"] for r in run_counts) == SLIDES - len(flagged)
    assert aggregates.where("scope = 'run' AND metric = 'needs_review'").first()["value"] == len(flagged)
    # the review queue: exactly the flagged slides, calibrated probabilities and the run's report
    queue = review_queue(spark, lake, run_id=summary.run_id).collect()
    assert {r["slide_id"] for r in queue} == flagged
    for row in queue:
        assert row["calibrated"] and row["report"].endswith(f"/score/{summary.run_id}/index.html")
    register_review_queue(spark, lake)
    assert spark.sql(f"SELECT count(*) FROM review_queue WHERE scoring_run_id = '{summary.run_id}'").first()[0] == len(
        flagged
    )
    # the run's report has the section, with the flagged slides as examples
    html = Path(summary.report_path).read_text()
    assert "Slides that need review" in html
    # the last mention is the section's heading (the first is the page's table of contents)
    section = html.rsplit("Slides that need review", 1)[1].split("Metrics on labelled slides", 1)[0]
    assert all(slide in section for slide in flagged) and "out_of_distribution:white_cell_count" in section
    listing = format_queue(review_queue(spark, lake, run_id=summary.run_id))
    assert (f"{len(flagged)} slide(s) need review" in listing) if flagged else ("no slide needs review" in listing)


@pytest.mark.spark
@pytest.mark.slow  # 40-150 s; the calibration and review-queue test above runs the scoring job's trust checks
def test_the_pooled_feature_check_runs_in_the_scoring_job(spark, scoring_lake):
    """trust.json with a feature check: the workers' TFLite classifier gives the pooled features, fused with the
    input statistics; a feature distribution far from every slide flags all of them, a wide one none."""
    cfg, lake, models = scoring_lake
    k = len(OOD_FEATURES)
    passes_all = OodModel(OOD_FEATURES, (0.0,) * k, (1.0,) * k, tuple(map(tuple, np.zeros((k, k)))), 1.0, 0.95, 10, 5)
    width = 2048  # InceptionV3's pooled features

    def feature_check(offset: float) -> FeatureOodModel:
        direction = np.zeros(width)
        direction[0] = 1.0
        return FeatureOodModel(
            (offset,) + (0.0,) * (width - 1), (tuple(direction),), ((0.0,),), ((1.0,),), 1.0, 0.95, 10, 5
        )

    flagged_by = {}
    for name, offset in (("near", 0.0), ("far", -1e6)):
        folder = os.path.join(lake.models, f"features-{name}-stage3-fab4")
        shutil.copytree(models["stage3"].artifact_path, folder)
        check = feature_check(offset)
        # fused threshold: far above any pooled activation of the untrained network for "near"
        sha = write_trust(
            folder,
            {
                "ood": passes_all.to_dict(),
                "feature_ood": check.to_dict(),
                "ood_fused": {"threshold": 1e3, "pass_fraction": 0.95, "n_val": 5},
            },
        )
        record = replace(
            models["stage3"], model_id=f"features-{name}-stage3-fab4", artifact_path=folder, trust_sha256=sha
        )
        register_model(spark, lake, record)
        strict = {"disagreement_min_blasts": 0, "disagreement_max_blast_pct": 100.0}
        run_score(spark, replace(cfg, score=replace(cfg.score, model=record.model_id, **strict)), lake, report=False)
        rows = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{record.model_id}'").collect()
        assert len(rows) == SLIDES and all(r["runtime"] == "tflite" for r in rows)
        flagged_by[name] = [r["review_reasons"] for r in rows if r["needs_review"]]
        if name == "far":
            assert all(r["ood_score"] == pytest.approx(1e6, rel=1e-3) for r in rows)
    assert flagged_by["near"] == []
    assert flagged_by["far"] == [["out_of_distribution:features"]] * SLIDES
