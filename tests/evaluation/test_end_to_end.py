"""``allmtl evaluate`` end to end: synthetic smears -> ingest -> segment -> 2 folds x 1 trial of real
Horovod training -> evaluation tables -> the report folder. Several minutes on 2 cores: slow tier."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.config import load_config
from allmtl_spark.evaluation.job import run_evaluate
from allmtl_spark.lakehouse import Lakehouse, read_table
from allmtl_spark.registry import record_from_row
from allmtl_spark.trust import read_trust

pytestmark = [pytest.mark.slow, pytest.mark.spark]

TINY = [
    "synth.n_slides=24",
    "synth.n_cells=36",
    "synth.slide_width=320",
    "synth.slide_height=240",
    "synth.workers=1",
    "synth.slides_per_patient=1",  # stage 2 keeps cells of the training side's patients: enough patients to split
    "privacy.allow_demo_key=true",
    "segment.mask_source=roi",
    "segment.crop_size_um=30",
    "train.backbones=[InceptionV3]",
    "train.tasks=[binary]",
    "train.input_size=75",
    "train.num_proc=1",
    "train.stage2.epochs=1",
    "train.stage3.epochs=1",
    "train.stage2.batch_size=8",
    "train.stage3.batch_size=8",
    "train.augment.copies_per_image=1",
    "train.split.val_fraction=0.25",  # 3 validation folds: a fold's stage-2 cells come from few patients
    "train.head_dense_units=[16]",
    "evaluate.folds=2",
    "evaluate.trials=1",
    "evaluate.bootstrap_resamples=100",
]


@pytest.fixture(scope="module")
def segmented(spark, tmp_path_factory):
    """A lakehouse with 24 ingested and segmented synthetic slides (and 36 cells cut out of them)."""
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.segmentation.job import run_segment
    from allmtl_spark.synth.dataset import write_dataset

    root = tmp_path_factory.mktemp("e2e")
    cfg = load_config(
        None,
        [
            *TINY,
            f"synth.output={root / 'synth'}",
            f"lakehouse.path={root / 'lakehouse'}",
            f"ingest.sources=[{{kind: manifest, path: {root / 'synth' / 'manifest.csv'}}}]",
        ],
    )
    write_dataset(cfg.synth, progress=None)
    lake = Lakehouse.from_config(cfg.lakehouse)
    run_ingest(spark, cfg.ingest, cfg.privacy, lake, run_id="ingest")
    assert run_segment(spark, cfg.segment, cfg.roi, lake, run_id="segment").segmented == 24
    return cfg, lake


def test_two_folds_one_trial_produce_every_table_figure_and_the_page(spark, segmented):
    cfg, lake = segmented

    summary = run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id="e2e")

    runs = read_table(spark, lake, tables.EVALUATION_RUNS).toPandas()
    approaches = ["classical", "colour", "mtl", "size"]  # both networks and the two shape-blind baselines
    assert sorted(runs[["fold", "approach"]].itertuples(index=False, name=None)) == [
        (fold, approach) for fold in (0, 1) for approach in approaches
    ]
    assert (runs["n_test"] > 0).all() and runs["n_test"].groupby(runs["approach"]).sum().eq(24).all()
    # fold models say so: `latest` never picks one, whether or not evaluation_runs is there
    fold_models = read_table(spark, lake, tables.MODELS).where(F.col("run_id").startswith("e2e-t"))
    assert {r[0] for r in fold_models.select("purpose").collect()} == {"evaluate"}
    # calibrated (the report's ECE), but no out-of-distribution check: no job scores with a fold model
    for row in fold_models.collect():
        record = record_from_row(row, lake)  # the table holds paths relative to the lakehouse
        trust = read_trust(record.artifact_path, record.trust_sha256, record.model_id)
        assert trust["temperature"] > 0 and "ood" not in trust and "ood_fused" not in trust
    predictions = read_table(spark, lake, tables.PREDICTIONS).where("part = 'test'").toPandas()
    assert predictions["model_id"].isin(runs["model_id"]).sum() == runs["n_test"].sum()
    metrics = read_table(spark, lake, tables.EVALUATION_METRICS).toPandas()
    assert set(metrics["fold"]) == {-1, 0, 1} and {"accuracy", "macro_auc", "confusion"} <= set(metrics["metric"])

    folder = Path(summary.report_path).parent
    page = Path(summary.report_path).read_text(encoding="utf-8")
    pngs = sorted((folder / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {
        "roc_binary_inceptionv3_mtl.png",
        "confusion_binary_inceptionv3_classical.png",
        "training_curves_trial-0-fold-0.png",
        "training_curves_trial-0-fold-1.png",
        "folds_accuracy.png",
    } <= names
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode("ascii") in page, png.name
    assert {p.stem for p in (folder / "tables").glob("*.csv")} >= {
        "summary",
        "detection_binary",
        "tests_t",
        "tests_mcnemar",
        "tests_auc",
        "runs",
    }

    again = run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id="e2e")
    assert again.trained == 0 and again.skipped == 2
