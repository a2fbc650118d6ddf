"""A registered slide scorer loads through mlflow.pyfunc.spark_udf and matches `allmtl score`.

Real MLflow (a file store and its model registry under the test lakehouse), real local Spark, the
tiny untrained models of ``conftest.register_tiny_models`` and the ROI segmentation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from allmtl_spark import tables, tracking, units
from allmtl_spark.config import load_config
from allmtl_spark.config.schema import TrackingConfig
from allmtl_spark.lakehouse import read_table

from .conftest import overrides

pytestmark = pytest.mark.spark

TOLERANCE = 1e-6  # same code, same Keras model, same inputs: float32 noise only
NAME = "allmtl_test"


@pytest.fixture(scope="module")
def published(spark, scoring_lake, tmp_path_factory):
    """The tiny stage-3 model logged in an MLflow run, registered as allmtl_test_fab4_mtl@champion."""
    import mlflow

    from allmtl_spark.mlflow_models import publish_models

    cfg, lake, models = scoring_lake
    cfg = load_config(
        "conf/demo.yaml",
        overrides(lake.root.rsplit("/", 1)[0])
        + [f"registry.name={NAME}", "score.runtime=keras", "tracking.required=true", "tracking.log_input_example=true"],
    )
    tracking.configure(tracking.settings(lake.mlflow_uri, TrackingConfig(required=True), cfg.registry))
    with tracking.mlflow_run(lake.mlflow_uri, models["stage3"].model_id) as run:
        pass
    record = replace(models["stage3"], mlflow_run_id=run.info.run_id)
    (stored,) = publish_models(spark, cfg, lake, [record])
    yield cfg, lake, stored
    mlflow.set_registry_uri(None)
    tracking.configure(tracking.settings(lake.mlflow_uri))


def test_the_registered_model_has_a_signature_example_tags_and_a_models_row(spark, published):
    import mlflow

    cfg, lake, stored = published
    version = mlflow.MlflowClient().get_model_version_by_alias(f"{NAME}_fab4_mtl", "champion")
    info = mlflow.models.get_model_info(f"models:/{NAME}_fab4_mtl@champion")

    assert stored.registered_model_uri == f"models:/{NAME}_fab4_mtl/{version.version}"
    assert version.tags["allmtl.model_id"] == stored.model_id
    assert version.tags["allmtl.cell_model_id"] == "tiny-stage2-cell_binary"
    assert version.tags["allmtl.segmenter_version"] == "roi-adaptive"
    assert [c.name for c in info.signature.inputs.inputs] == ["image", "path"]
    outputs = [c.name for c in info.signature.outputs.inputs]
    assert outputs[:2] == ["probabilities", "predicted_class"] and "blast_fraction" in outputs
    assert info.saved_input_example_info is not None
    row = read_table(spark, lake, tables.MODELS).where(f"model_id = '{stored.model_id}'").first()
    assert row["registered_model_uri"] == stored.registered_model_uri
    assert row["mlflow_model_uri"] == stored.mlflow_model_uri and row["artifact_sha256"] == stored.artifact_sha256


@pytest.mark.slow  # 45-57 s; the default tier predicts through the same registered pyfunc (file path and bytes, below)
def test_spark_udf_gives_the_probabilities_allmtl_score_stores(spark, published):
    import mlflow
    from pyspark.sql import functions as F

    from allmtl_spark.scoring.job import run_score

    cfg, lake, stored = published
    uri = f"models:/{NAME}_fab4_mtl@champion"
    summary = run_score(spark, replace(cfg, score=replace(cfg.score, model=uri)), lake, report=False)
    assert summary.model_version == stored.model_id and summary.scored > 0
    scores = {
        r["content_sha256"]: r
        for r in read_table(spark, lake, tables.SLIDE_SCORES).where(F.col("model_version") == stored.model_id).collect()
    }

    udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")
    slides = read_table(spark, lake, tables.SLIDES).select("content_sha256", F.col("content").alias("image"))
    out = {r["content_sha256"]: r["out"] for r in slides.withColumn("out", udf(F.struct("image"))).collect()}

    compared = 0
    for key, row in scores.items():
        got = out[key]
        assert got["error"] is None, got["error"]
        assert np.max(np.abs(np.asarray(got["probabilities"]) - np.asarray(row["probabilities"]))) <= TOLERANCE
        assert got["predicted_class"] == row["predicted_class"]
        assert got["white_cell_count"] == row["white_cell_count"]
        assert got["blast_cell_count"] == row["blast_cell_count"]
        compared += 1
    assert compared == summary.scored
    assert all(out[k]["error"] for k in out if k not in scores)  # the slides the job rejected say why


def test_the_model_reads_a_file_path_as_it_reads_bytes(spark, published):
    import mlflow
    import pandas as pd

    cfg, lake, stored = published
    model = mlflow.pyfunc.load_model(f"models:/{NAME}_fab4_mtl@champion")
    slide = read_table(spark, lake, tables.SLIDES).select("source_path", "content").first()

    by_path = model.predict(pd.DataFrame({"path": [slide["source_path"].removeprefix("file:")]}))
    by_bytes = model.predict(pd.DataFrame({"image": [bytes(slide["content"])]}))
    missing = model.predict(pd.DataFrame({"path": ["/no/such/slide.jpg"]}))

    assert by_path.drop(columns="probabilities").equals(by_bytes.drop(columns="probabilities"))
    assert by_path["probabilities"][0] == by_bytes["probabilities"][0]
    assert missing["error"][0].startswith("FileNotFoundError") and missing["probabilities"][0] is None


@pytest.mark.slow  # 22 s; the slide classifier's logging and registration run in the default tier
def test_cell_models_and_segmenters_are_logged_and_registered_too(spark, published, tmp_path):
    import mlflow
    import pandas as pd

    from allmtl_spark.mlflow_models import example_image, publish_models
    from allmtl_spark.networks.resunet import build_residual_unet
    from allmtl_spark.registry import ModelRecord, register_model, save_artifact
    from allmtl_spark.scoring.pipeline import segment_image
    from allmtl_spark.segmentation.pipeline import decode_rgb
    from allmtl_spark.segmentation.predict import make_predict_fn
    from allmtl_spark.transforms.scale import PixelSizePolicy

    cfg, lake, _ = published
    builder = {"input_size": 32, "channels": 3, "depth": 2, "base_filters": 2}
    folder = str(tmp_path / "seg-tiny")
    spec = {"builder": builder, "working_scale": 0.5, "input_normalize": "grey_world"}
    segmenter = ModelRecord(
        model_id="seg-tiny",
        run_id="tiny",
        kind="segmenter",
        stage="segmenter",
        task="segmentation",
        class_names=["background", "white_cell"],
        artifact_path=folder,
        artifact_sha256=save_artifact(build_residual_unet(**builder), folder, spec),
        config_json="{}",
    )
    register_model(spark, lake, segmenter)
    records = []
    for record in (segmenter, read_models(spark, lake)["tiny-stage2-cell_binary"]):
        with tracking.mlflow_run(lake.mlflow_uri, record.model_id) as run:
            pass
        records.append(replace(record, mlflow_run_id=run.info.run_id))

    seg_stored, cell_stored = publish_models(spark, cfg, lake, records)

    assert seg_stored.registered_model_uri == f"models:/{NAME}_segmenter/1"
    assert cell_stored.registered_model_uri == f"models:/{NAME}_cell_binary/1"
    slide = example_image("slide_scorer")
    out = mlflow.pyfunc.load_model(seg_stored.registered_model_uri).predict(pd.DataFrame({"image": [slide]}))
    rgb = decode_rgb(slide)
    unet = make_predict_fn(segmenter.model_file, segmenter.artifact_sha256, spec_sha256=segmenter.spec_sha256)
    pixel = PixelSizePolicy.from_ingest(cfg.ingest).resolve(rgb, None)  # an image alone: estimated or the default
    working = units.ALLIDB1_PIXEL_SIZE_UM / 0.5  # a segmenter of an earlier release: working_scale of ALL-IDB1's
    direct = segment_image(rgb, unet, cfg.roi, replace(cfg.segment, mask_source="unet"), pixel.pixel_size_um, working)
    assert out["error"][0] is None and out["white_cell_count"][0] == len(direct.cells)
    cell = mlflow.pyfunc.load_model(cell_stored.registered_model_uri).predict(
        pd.DataFrame({"image": [example_image("cell_classifier")]})
    )
    assert len(cell["probabilities"][0]) == 2 and abs(sum(cell["probabilities"][0]) - 1) < 1e-6
    assert cell["predicted_class"][0] in ("normal", "blast")


def read_models(spark, lake) -> dict:
    from allmtl_spark.registry import record_from_row

    return {r["model_id"]: record_from_row(r, lake) for r in read_table(spark, lake, tables.MODELS).collect()}


def test_without_an_input_example_the_model_is_logged_with_its_signature_only(spark, scoring_lake, published):
    """tracking.log_input_example=false (conf/demo.yaml): no example, so MLflow's load-and-score check is skipped."""
    import warnings

    import mlflow

    from allmtl_spark.mlflow_models import publish_models

    from .conftest import copy_model

    _, _, models = scoring_lake
    cfg, lake, _ = published
    no_example = replace(cfg.tracking, log_input_example=False)
    cfg = replace(cfg, tracking=no_example, registry=replace(cfg.registry, name=None))
    # a run of its own: in the session's shared lake it must not become the classifier's cell model
    cell = copy_model(spark, lake, models["stage2"], "no-example-stage2-cell_binary", run_id="no-example")
    with tracking.mlflow_run(lake.mlflow_uri, cell.model_id) as run:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (stored,) = publish_models(spark, cfg, lake, [replace(cell, mlflow_run_id=run.info.run_id)])
    assert not [w for w in caught if "input example" in str(w.message)]  # the config chose it: no warning

    info = mlflow.models.get_model_info(stored.mlflow_model_uri)
    assert info.saved_input_example_info is None
    assert [c.name for c in info.signature.inputs.inputs] == ["image", "path"]
