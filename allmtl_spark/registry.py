"""Model artifacts and the ``models`` table: save with a hash, register, resolve, verify, load.

An artifact is a folder ``<lakehouse models>/<model_id>/`` with ``model.h5`` (the full Keras
HDF5 model, loadable without this package) and ``model.json`` (how it was built: builder
keywords, class names, config, metrics). ``models.artifact_sha256`` is the SHA-256 of
``model.h5``; every load recomputes it and refuses a mismatch.

Artifact folders must be visible to the Spark workers that load them (local disk in local
mode; NFS, ``/dbfs`` or ``/Volumes`` on clusters).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from allmtl_spark import tables
from allmtl_spark.checksums import file_sha256, verify_sha256
from allmtl_spark.errors import ArtifactError

MODEL_FILE = "model.h5"
SPEC_FILE = "model.json"


@dataclass(frozen=True)
class ModelRecord:
    """One row of ``tables.MODELS``."""

    model_id: str
    run_id: str
    kind: str
    stage: str
    task: str
    class_names: list[str]
    artifact_path: str
    artifact_sha256: str
    config_json: str
    approach: str | None = None
    backbone: str | None = None
    input_size: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    input_tables: dict[str, int] = field(default_factory=dict)
    split_id: str | None = None
    mlflow_run_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))
    mlflow_model_uri: str | None = None  # runs:/<run>/model: the pyfunc logged for it (mlflow_models)
    registered_model_uri: str | None = None  # models:/<name>/<version> in the MLflow registry

    @property
    def model_file(self) -> str:
        return os.path.join(self.artifact_path, MODEL_FILE)

    def spec(self) -> dict:
        """The ``model.json`` written beside the model."""
        with open(os.path.join(self.artifact_path, SPEC_FILE)) as handle:
            return json.load(handle)


def save_artifact(model, folder: str, spec: dict) -> str:
    """Save a Keras model as ``folder/model.h5`` plus ``folder/model.json``; return the model's SHA-256.

    Writes to temporary names and renames, so a crash never leaves a half-written model under
    the final name.
    """
    os.makedirs(folder, exist_ok=True)
    tmp_model = os.path.join(folder, f".{MODEL_FILE}.tmp.h5")
    model.save(tmp_model, include_optimizer=False, save_format="h5")
    os.replace(tmp_model, os.path.join(folder, MODEL_FILE))
    tmp_spec = os.path.join(folder, f".{SPEC_FILE}.tmp")
    with open(tmp_spec, "w") as handle:
        json.dump(spec, handle, indent=2, sort_keys=True, default=str)
    os.replace(tmp_spec, os.path.join(folder, SPEC_FILE))
    return file_sha256(os.path.join(folder, MODEL_FILE))


def verify_artifact(record: ModelRecord) -> str:
    """Return the model file path after checking it exists and its SHA-256 matches the table.

    Raises:
        ArtifactError: missing file, or a hash mismatch (corrupted or replaced artifact).
    """
    verify_sha256(record.model_file, record.artifact_sha256, f"model {record.model_id}:")
    return record.model_file


def load_verified_model(record: ModelRecord):
    """Load the Keras model of ``record`` after verifying its hash (compile=False: inference only)."""
    import tensorflow as tf

    path = verify_artifact(record)
    from allmtl_spark.networks import losses  # noqa: F401 - registers the custom loss names

    return tf.keras.models.load_model(path, compile=False)


def register_model(spark, lake, record: ModelRecord) -> None:
    """Insert ``record`` into ``tables.MODELS`` (idempotent on ``model_id``)."""
    from allmtl_spark.lakehouse import merge_new_rows

    row = asdict(record)
    frame = spark.createDataFrame([row], tables.MODELS.schema)
    merge_new_rows(spark, lake, tables.MODELS, frame)


def evaluation_run_ids(spark, lake) -> list[str]:
    """Run ids whose models the evaluation job trained on cross-validation folds (and their stage 2)."""
    from allmtl_spark.evaluation.job import trial_run_id
    from allmtl_spark.lakehouse import read_table, table_exists

    if not table_exists(spark, lake, tables.EVALUATION_RUNS):
        return []
    runs = read_table(spark, lake, tables.EVALUATION_RUNS).select("eval_id", "trial", "train_run_id").distinct()
    ids = set()
    for row in runs.collect():
        ids.update((row["train_run_id"], trial_run_id(row["eval_id"], row["trial"])))
    return sorted(ids)


def resolve_model(
    spark, lake, ref: str, task: str | None = None, stage: str | None = None, approach: str | None = None
) -> ModelRecord:
    """Find a model by ``model_id``, by ``run_id`` (with task/stage/approach), ``latest``, or an MLflow model URI.

    Args:
        ref: a model id, a run id, ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` (the
            registry version's ``allmtl.model_id`` tag names the row), or ``latest`` (newest ``created_at``
            matching the filters, among models of training runs: a cross-validation fold's model is only
            reachable by its id).
        task, stage, approach: filters; needed with ``latest`` or a run id holding several models.

    Raises:
        ArtifactError: nothing matches, or a run id is ambiguous (the message lists the candidates).
    """
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table

    if ref.startswith("models:/"):  # an MLflow registry version or alias: its tag names the model id
        from allmtl_spark.mlflow_models import model_id_of

        ref = model_id_of(ref)
    models = read_table(spark, lake, tables.MODELS)
    for column, value in (("task", task), ("stage", stage), ("approach", approach)):
        if value is not None:
            models = models.where(F.col(column) == value)
    if ref != "latest":
        models = models.where((F.col("model_id") == ref) | (F.col("run_id") == ref))
    else:
        # fold models are trained on part of the data to measure the method, not to be deployed
        models = models.where(~F.col("run_id").isin(evaluation_run_ids(spark, lake)))
    rows = models.orderBy(F.col("created_at").desc(), F.col("model_id")).collect()
    filters = ", ".join(f"{k}={v}" for k, v in (("task", task), ("stage", stage), ("approach", approach)) if v)
    if not rows:
        where = f" ({filters})" if filters else ""
        raise ArtifactError(
            f"no model matches {ref!r}{where} in {lake.path(tables.MODELS)}; "
            "train one first (allmtl train / allmtl train-segmenter)"
        )
    exact = [r for r in rows if r["model_id"] == ref]
    if ref != "latest" and not exact and len(rows) > 1:
        raise ArtifactError(
            f"run {ref!r} holds {len(rows)} models ({', '.join(r['model_id'] for r in rows)}); "
            "pass a model id or narrow by task/stage/approach"
        )
    return record_from_row((exact or rows)[0])


def record_from_row(row) -> ModelRecord:
    data = row.asDict(recursive=True)
    data["metrics"] = dict(data.get("metrics") or {})
    data["input_tables"] = dict(data.get("input_tables") or {})
    data["class_names"] = list(data["class_names"])
    return ModelRecord(**data)
