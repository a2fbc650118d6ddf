"""Model lookup in the `models` table on real Spark + Delta: `latest` never picks a cross-validation fold model."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from allmtl_spark import tables
from allmtl_spark.errors import ArtifactError
from allmtl_spark.evaluation.job import fold_run_id, trial_run_id
from allmtl_spark.lakehouse import merge_new_rows
from allmtl_spark.registry import ModelRecord, register_model, resolve_model

pytestmark = pytest.mark.spark

START = datetime(2026, 1, 1)


def _register(spark, lake, run_id: str, stage: str, task: str, minutes: int) -> ModelRecord:
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
    )
    register_model(spark, lake, record)
    return record


def _evaluation_finished_fold(spark, lake, eval_id: str, model_id: str) -> None:
    row = {
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
    merge_new_rows(spark, lake, tables.EVALUATION_RUNS, spark.createDataFrame([row], tables.EVALUATION_RUNS.schema))


def test_latest_skips_models_an_evaluation_trained_on_folds(spark, lake):
    trained = _register(spark, lake, "nightly-7", "stage3", "binary", minutes=0)
    cell = _register(spark, lake, "nightly-7", "stage2", "cell_binary", minutes=0)
    fold = _register(spark, lake, fold_run_id("ev", 0, 0), "stage3", "binary", minutes=10)
    fold_cells = _register(spark, lake, trial_run_id("ev", 0), "stage2", "cell_binary", minutes=10)

    # before the evaluation has recorded a fold, its models are indistinguishable from training runs
    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == fold.model_id
    _evaluation_finished_fold(spark, lake, "ev", fold.model_id)

    assert resolve_model(spark, lake, "latest", task="binary", stage="stage3").model_id == trained.model_id
    assert resolve_model(spark, lake, "latest", stage="stage2").model_id == cell.model_id
    # still reachable by id, and by run id
    assert resolve_model(spark, lake, fold.model_id).model_id == fold.model_id
    assert resolve_model(spark, lake, trial_run_id("ev", 0)).model_id == fold_cells.model_id


def test_ambiguous_run_and_missing_model_name_the_candidates(spark, lake):
    _register(spark, lake, "r1", "stage3", "binary", minutes=0)
    _register(spark, lake, "r1", "stage3", "fab4", minutes=0)
    with pytest.raises(ArtifactError, match=r"run 'r1' holds 2 models .*r1-stage3-binary.*narrow by task"):
        resolve_model(spark, lake, "r1")
    with pytest.raises(ArtifactError, match=r"no model matches 'latest' \(task=cell_binary\).*train one first"):
        resolve_model(spark, lake, "latest", task="cell_binary")
