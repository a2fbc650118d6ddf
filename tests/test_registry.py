"""Model lookup in the `models` table on real Spark + Delta: `latest` never picks a cross-validation fold model."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from allmtl_spark import tables
from allmtl_spark.errors import ArtifactError
from allmtl_spark.evaluation.job import fold_run_id
from allmtl_spark.lakehouse import merge_new_rows, read_table, table_exists, table_version
from allmtl_spark.registry import ModelRecord, choose_model, register_model, resolve_model
from allmtl_spark.training.job import model_purpose

pytestmark = pytest.mark.spark

START = datetime(2026, 1, 1)


def _register(
    spark, lake, run_id: str, stage: str, task: str, minutes: int, purpose: str | None = None, split_id=None
) -> ModelRecord:
    record = ModelRecord(
        model_id=f"{run_id}-{stage}-{task}",
        run_id=run_id,
        kind="classifier",
        stage=stage,
        task=task,
        class_names=["normal", "ALL"],
        artifact_path=f"/nowhere/{run_id}",
        artifact_sha256="0" * 64,
        config_json="{}",
        approach="mtl" if stage == "stage3" else None,
        created_at=START + timedelta(minutes=minutes),
        purpose=purpose,
        split_id=split_id,
    )
    register_model(spark, lake, record)
    return record


def _fold_row(eval_id: str, model_id: str) -> dict:
    return {
        "eval_id": eval_id,
        "trial": 0,
        "fold": 0,
        "backbone": "InceptionV3",
        "task": "binary",
        "approach": "mtl",
        "n_folds": 2,
        "model_id": model_id,
        "train_run_id": fold_run_id(eval_id, 0, 0),
        "split_id": "s",
        "n_train": 1,
        "n_val": 1,
        "n_test": 1,
        "split_seed": 0,
        "augment_seed": 0,
        "seconds": 1.0,
        "finished_at": START,
    }


def test_model_purpose_of_a_run():
    assert model_purpose(None, score_test=True) == "train"
    assert model_purpose((5, 2), score_test=True) == "evaluate"
    assert model_purpose(None, score_test=False) == "tune"
    assert model_purpose((5, 2), score_test=False) == "tune"  # tuning nested in a fold


def test_latest_never_picks_fold_or_tuning_models_without_evaluation_runs(spark, lake):
    trained = _register(spark, lake, "nightly-7", "stage3", "binary", minutes=0, purpose="train")
    cell = _register(spark, lake, "nightly-7", "stage2", "cell_binary", minutes=0, purpose="train")
    # newer, and with run ids that look like any other: only `purpose` tells them apart
    fold = _register(spark, lake, "ev9", "stage3", "binary", minutes=10, purpose="evaluate")
    _register(spark, lake, "ev9-cells", "stage2", "cell_binary", minutes=10, purpose="evaluate")
    _register(spark, lake, "grid-r1", "stage3", "binary", minutes=20, purpose="tune")
    assert not table_exists(spark, lake, tables.EVALUATION_RUNS)

    choice = choose_model(spark, lake, "latest", task="binary", stage="stage3", approach="mtl")
    assert choice.record.model_id == trained.model_id
    assert "registered by a training run" in choice.reason and "2 model(s) of evaluation folds" in choice.reason
    assert resolve_model(spark, lake, "latest", stage="stage2").model_id == cell.model_id
    # still reachable by id (pinned), and the reason says so
    pinned = choose_model(spark, lake, fold.model_id)
    assert pinned.record.model_id == fold.model_id and pinned.reason == "pinned by its model id"


def test_latest_refuses_when_only_fold_models_exist_and_says_why(spark, lake):
    _register(spark, lake, "ev9", "stage3", "binary", minutes=10, purpose="evaluate")
    with pytest.raises(ArtifactError, match="never `latest`: name one by its id"):
        resolve_model(spark, lake, "latest", task="binary", stage="stage3")


@pytest.mark.slow  # 17 s: lakehouses from before the purpose column
def test_models_registered_before_purpose_existed_are_told_apart_by_the_lakehouse(spark, lake):
    trained = _register(spark, lake, "nightly-7", "stage3", "binary", minutes=0)
    # a fold run id, no evaluation_runs table (copied without it): excluded by its run id
    _register(spark, lake, fold_run_id("ev", 0, 0), "stage3", "binary", minutes=10)
    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == trained.model_id
    # a k-fold split in `splits`: excluded whatever its run id
    split_row = {
        "split_id": "kfold-1",
        "source_table": "slides",
        "content_sha256": "a" * 64,
        "item_id": "s1",
        "group_key": "g",
        "label": "1",
        "part": "fold",
        "fold": 1,
        "created_at": START,
    }
    merge_new_rows(spark, lake, tables.SPLITS, spark.createDataFrame([split_row], tables.SPLITS.schema))
    _register(spark, lake, "oddly-named", "stage3", "binary", minutes=20, split_id="kfold-1")
    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == trained.model_id
    # recorded in evaluation_runs: excluded whatever its run id
    other = _register(spark, lake, "another", "stage3", "binary", minutes=30)
    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == other.model_id
    merge_new_rows(
        spark,
        lake,
        tables.EVALUATION_RUNS,
        spark.createDataFrame(
            [{**_fold_row("x", other.model_id), "train_run_id": "another"}], tables.EVALUATION_RUNS.schema
        ),
    )
    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == trained.model_id
    assert resolve_model(spark, lake, fold_run_id("ev", 0, 0)).run_id == fold_run_id("ev", 0, 0)  # by run id


def test_artifact_folders_inside_the_lakehouse_are_stored_relative_and_follow_a_copy(spark, lake, tmp_path):
    import shutil

    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    folder = f"{lake.models}/m1"
    record = ModelRecord("m1", "r", "classifier", "stage3", "binary", ["normal", "ALL"], folder, "0" * 64, "{}")
    register_model(spark, lake, record)
    outside = ModelRecord("m2", "r", "classifier", "stage3", "fab4", ["normal", "ALL"], "/elsewhere/m2", "0" * 64, "{}")
    register_model(spark, lake, outside)
    stored = {r["model_id"]: r["artifact_path"] for r in read_table(spark, lake, tables.MODELS).collect()}
    assert stored == {"m1": "_models/m1", "m2": "/elsewhere/m2"}
    assert resolve_model(spark, lake, "m1").artifact_path == folder

    shutil.copytree(lake.root, tmp_path / "copy")
    copy = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path / "copy")))
    assert resolve_model(spark, copy, "m1").model_file == f"{tmp_path}/copy/_models/m1/model.h5"
    assert resolve_model(spark, copy, "m2").artifact_path == "/elsewhere/m2"


def test_ambiguous_run_and_missing_model_name_the_candidates(spark, lake):
    _register(spark, lake, "r1", "stage3", "binary", minutes=0)
    _register(spark, lake, "r1", "stage3", "fab4", minutes=0)
    with pytest.raises(ArtifactError, match=r"run 'r1' holds 2 models .*r1-stage3-binary.*narrow by task"):
        resolve_model(spark, lake, "r1")
    with pytest.raises(ArtifactError, match=r"no model matches 'latest' \(task=cell_binary\).*train one first"):
        resolve_model(spark, lake, "latest", task="cell_binary")


def test_scoring_without_any_stage2_model_uses_no_cell_model(spark, lake, tmp_path):
    """A lakehouse trained without stage 2 (classical only) still scores: the cell model is absent, not an error."""
    from allmtl_spark.config import load_config
    from allmtl_spark.registry import file_sha256
    from allmtl_spark.scoring.job import resolve_classifiers

    folder = tmp_path / "classical-only"
    folder.mkdir()
    (folder / "model.h5").write_bytes(b"weights")
    (folder / "model.json").write_text("{}")
    slide = ModelRecord(
        model_id="classical-only-stage3-binary",
        run_id="classical-only",
        kind="classifier",
        stage="stage3",
        task="binary",
        class_names=["normal", "ALL"],
        artifact_path=str(folder),
        artifact_sha256=file_sha256(str(folder / "model.h5")),
        config_json="{}",
        approach="classical",
        created_at=START,
        purpose="train",
    )
    register_model(spark, lake, slide)
    cfg = load_config(
        "conf/demo.yaml",
        ["score.task=binary", "score.approach=classical", "score.cell_model=latest", "score.model=latest"],
    )
    classifier, cell = resolve_classifiers(spark, lake, cfg)
    assert classifier.model_id == slide.model_id and cell is None


def test_model_json_is_hashed_at_registration_and_checked_when_read(spark, lake, tmp_path):
    import hashlib
    import json

    folder = tmp_path / "m1"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"view": {"kind": "montage", "size": 96}}))
    record = ModelRecord("m1", "r", "classifier", "stage3", "fab4", ["normal"], str(folder), "0" * 64, "{}")
    register_model(spark, lake, record)
    stored = resolve_model(spark, lake, "m1")
    assert stored.spec_sha256 == hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    assert stored.spec()["view"]["size"] == 96
    (folder / "model.json").write_text(json.dumps({"view": {"kind": "montage", "size": 64}}))  # edited since
    with pytest.raises(ArtifactError, match=r"model m1: model\.json artifact .* corrupted or was replaced"):
        stored.spec()


def test_the_conversion_hash_is_recorded_and_replaced_not_duplicated(spark, lake):
    from allmtl_spark.registry import record_conversions

    record = _register(spark, lake, "r9", "stage3", "fab4", minutes=0)
    cells = _register(spark, lake, "r9", "stage2", "cell_binary", minutes=1)
    before = table_version(spark, lake, tables.MODELS)
    record_conversions(spark, lake, [(record, "a" * 64), (cells, "c" * 64)])
    assert table_version(spark, lake, tables.MODELS) == before + 1  # both in one commit
    assert resolve_model(spark, lake, record.model_id).tflite_sha256 == "a" * 64
    assert resolve_model(spark, lake, cells.model_id).tflite_sha256 == "c" * 64
    record_conversions(spark, lake, [(record, "b" * 64)])  # converted again (another TensorFlow)
    rows = spark.read.format("delta").load(lake.path(tables.MODELS)).where(f"model_id = '{record.model_id}'")
    assert [r["tflite_sha256"] for r in rows.collect()] == ["b" * 64]
