"""Every job in name-based table mode: managed tables of a schema in Spark's session catalog.

The mode Unity Catalog needs (``lakehouse.catalog`` / ``lakehouse.schema``): ingest, segment,
a training run's model registration and scoring, each writing and reading tables by name only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config import load_config
from allmtl_spark.lakehouse import read_table, table_version
from tests.scoring.conftest import overrides, register_tiny_models

pytestmark = pytest.mark.spark

SLIDES = 4


@pytest.mark.slow  # 80-104 s; tests/test_lakehouse.py creates, reads, merges and time-travels managed tables by name
def test_ingest_segment_register_and_score_by_table_name(spark, managed_lake, tmp_path):
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.registry import resolve_model
    from allmtl_spark.scoring.job import run_score
    from allmtl_spark.segmentation.job import run_segment
    from allmtl_spark.synth.dataset import write_dataset

    lake = managed_lake
    cfg = load_config(
        "conf/demo.yaml",
        overrides(tmp_path)
        + [
            f"synth.output={tmp_path}/data",
            f"synth.n_slides={SLIDES}",
            "synth.n_cells=0",
            "synth.slide_width=320",
            "synth.slide_height=240",
            "synth.workers=1",
            f"ingest.sources=[{{kind: allidb1, path: {tmp_path}/data/ALL_IDB1}}]",
            f"lakehouse.catalog={lake.catalog}",
            f"lakehouse.schema={lake.schema}",
            "score.runtime=keras",
        ],
    )
    write_dataset(cfg.synth, progress=None)

    ingested = run_ingest(spark, cfg.ingest, cfg.privacy, lake)
    segmented = run_segment(spark, cfg.segment, cfg.roi, lake)
    models = register_tiny_models(spark, lake, "managed")  # what a training run's registration writes
    scored = run_score(spark, replace(cfg, score=replace(cfg.score, model=models["stage3"].model_id)), lake)

    assert ingested is not None and segmented.pending == SLIDES and scored.pending == SLIDES
    names = {r["tableName"] for r in spark.sql(f"SHOW TABLES IN spark_catalog.{lake.schema}").collect()}
    written = {"slides", "rejects", "segmented_slides", "slide_cells", "models", "slide_scores", "score_aggregates"}
    assert written <= names
    for table in tables.ALL_TABLES:
        if table.name in names:
            assert table_version(spark, lake, table) is not None
            kind = spark.sql(f"DESCRIBE TABLE EXTENDED {lake.path(table)}").where("col_name = 'Type'").first()
            assert kind["data_type"] == "MANAGED", table.name
    assert read_table(spark, lake, tables.SLIDES).count() == SLIDES
    assert resolve_model(spark, lake, "latest", task="fab4", stage="stage3").model_id == models["stage3"].model_id
    assert read_table(spark, lake, tables.SLIDE_SCORES).count() + sum(scored.rejects.values()) == SLIDES
    assert not [p.name for p in Path(lake.root).iterdir() if p.name in names], "no table folder under lakehouse.path"


@pytest.mark.slow
def test_every_job_runs_by_table_name_through_the_cli(spark, managed_lake, tmp_path, capsys):
    """synth -> ingest -> train-segmenter -> segment -> train -> tune -> evaluate -> score -> mlflow, tables by name.

    In this process (the session catalog lives in the session): ``main`` as ``allmtl <command>``, tiny
    sizes, tracking required (a failed log call fails the job), models registered and scored by alias.
    """
    import mlflow

    from allmtl_spark.cli import main
    from tests.training.conftest import TINY_TRAIN

    lake = managed_lake
    data = tmp_path / "data"
    sets = [
        f"lakehouse.path={lake.root}",
        f"lakehouse.catalog={lake.catalog}",
        f"lakehouse.schema={lake.schema}",
        "spark.master=local[2]",
        "tracking.experiment=managed-jobs",
        "tracking.required=true",
        "registry.name=allmtl",
        f"synth.output={data}",
        "synth.n_slides=24",
        "synth.slides_per_patient=1",  # enough patients for stage 2's own split after stage 3's
        "synth.n_cells=36",
        # Crops of their own patients: cut from these 24 slides, a 2-fold evaluation's training side keeps the
        # crops of about 3 patients, too few for stage 2's own 4-fold test cut (tests/training test the leak guard).
        "synth.crops_from_slides=false",
        "synth.slide_width=320",
        "synth.slide_height=240",
        "synth.workers=1",
        f"ingest.sources=[{{kind: manifest, path: {data}/manifest.csv}}]",
        "segmenter.epochs=1",
        "segmenter.tile_size=64",
        "segmenter.tiles_per_slide=2",
        "segmenter.depth=2",
        "segmenter.base_filters=4",
        "segment.mask_source=roi",  # a one-epoch U-Net may find no cell; the ROI keeps the training data
        *TINY_TRAIN,
        "train.num_proc=1",
        "train.approaches=[mtl]",
        "tune.learning_rates=[0.001]",
        "evaluate.bootstrap_resamples=50",
        "score.task=binary",
        "score.source=null",
        "score.model=models:/allmtl_binary_mtl@champion",
        "score.report_sample=1",
        "score.gradcam_slides=1",
    ]
    flags = [arg for item in sets for arg in ("--set", item)]
    commands = [
        ["synth"],
        ["ingest"],
        ["train-segmenter", "--run-id", "seg"],
        ["segment"],
        ["train", "--run-id", "tr"],
        ["tune", "--run-id", "tu"],
        ["evaluate", "--eval-id", "ev"],
        ["score", "--run-id", "sc"],
        ["mlflow"],
    ]
    for command in commands:
        assert main([command[0], "--config", "conf/demo.yaml", *flags, *command[1:]]) == 0, command
    out = capsys.readouterr().out

    names = {r["tableName"] for r in spark.sql(f"SHOW TABLES IN spark_catalog.{lake.schema}").collect()}
    for table in tables.ALL_TABLES:
        if table.name in names:
            kind = spark.sql(f"DESCRIBE TABLE EXTENDED {lake.path(table)}").where("col_name = 'Type'").first()
            assert kind["data_type"] == "MANAGED", table.name
    written = {"slides", "cells", "segmented_slides", "models", "splits", "predictions", "evaluation_runs"}
    assert written | {"slide_scores", "score_aggregates"} <= names
    assert not [p.name for p in Path(lake.root).iterdir() if p.name in names], "no table folder under lakehouse.path"
    purposes = {r["purpose"] for r in read_table(spark, lake, tables.MODELS).select("purpose").collect()}
    assert {"train", "tune", "evaluate"} <= purposes
    scores = read_table(spark, lake, tables.SLIDE_SCORES).where("scoring_run_id = 'sc'").count()
    assert scores > 0
    client = mlflow.MlflowClient(lake.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("managed-jobs").experiment_id])
    assert {"train tr", "tune tu", "evaluate ev", "score sc"} <= {r.info.run_name for r in runs}
    assert "models:/allmtl_binary_mtl" in out and "@champion" in out  # allmtl mlflow lists the registered scorer
