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
