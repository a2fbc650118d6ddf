"""Model artifacts and the ``models`` table: save with a hash, register, resolve, verify, load.

An artifact is a folder ``<lakehouse models>/<model_id>/`` with ``model.h5`` (the full Keras
HDF5 model, loadable without this package) and ``model.json`` (how it was built: builder
keywords, class names, config, metrics). ``models.artifact_sha256`` is the SHA-256 of
``model.h5``; every load recomputes it and refuses a mismatch.

Artifact folders must be visible to the Spark workers that load them (local disk in local
mode; NFS, ``/dbfs`` or ``/Volumes`` on clusters). A folder inside the lakehouse is recorded
relative to the lakehouse root (``_models/<model_id>``), so a copied lakehouse is whole: its
``models`` rows name its own artifacts, never the original's.

Which model ``latest`` means: the newest model registered by a training run (``purpose = train``:
``allmtl train`` or ``allmtl train-segmenter``) matching the task, stage and approach asked for.
Models that cross-validation folds (``purpose = evaluate``) or ``allmtl tune``'s grid (``tune``)
trained are never chosen by ``latest``; they are reachable by their id only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from urllib.parse import urlparse

from allmtl_spark import tables
from allmtl_spark.checksums import file_sha256, load_keras, read_verified, verify_sha256
from allmtl_spark.errors import ArtifactError

MODEL_FILE = "model.h5"
SPEC_FILE = "model.json"
PURPOSES = ("train", "evaluate", "tune")  # why a model was trained; only `train` models are deployable
# run ids of cross-validation folds (evaluation.job.fold_run_id): how rows registered before
# `purpose` existed are told apart when the evaluation_runs table is not there to say so
_FOLD_RUN = re.compile(r".*-t\d+-f\d+(-tune-r\d+)?$")


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
    purpose: str | None = None  # train | evaluate | tune (PURPOSES); null: registered before the column existed
    temperature: float | None = None  # temperature scaling fitted on validation (trust.json); null: none fitted
    trust_sha256: str | None = None  # SHA-256 of trust.json (temperature, out-of-distribution check); null: none
    spec_sha256: str | None = None  # of model.json; register_model fills it
    tflite_sha256: str | None = None  # of the TFLite conversion, once scoring made one

    @property
    def model_file(self) -> str:
        return os.path.join(self.artifact_path, MODEL_FILE)

    @property
    def spec_file(self) -> str:
        return os.path.join(self.artifact_path, SPEC_FILE)

    def spec(self) -> dict:
        """The ``model.json`` written beside the model, checked against ``spec_sha256`` when one is recorded.

        Raises:
            ArtifactError: the file is missing or not what was registered.
        """
        if self.spec_sha256:
            return json.loads(read_verified(self.spec_file, self.spec_sha256, f"model {self.model_id}: model.json"))
        with open(self.spec_file) as handle:  # registered before model.json hashes were recorded
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
    """Load the Keras model of ``record`` from the bytes its hash was checked on (compile=False: inference only)."""
    return load_keras(read_verified(record.model_file, record.artifact_sha256, f"model {record.model_id}:"))


def register_model(spark, lake, record: ModelRecord) -> None:
    """Insert ``record`` into ``tables.MODELS`` (idempotent on ``model_id``), with model.json's hash.

    An artifact folder inside the lakehouse is stored relative to its root (``stored_path``).
    """
    from allmtl_spark.lakehouse import merge_new_rows

    if record.spec_sha256 is None and os.path.isfile(record.spec_file):
        record = replace(record, spec_sha256=file_sha256(record.spec_file))
    row = asdict(replace(record, artifact_path=stored_path(record.artifact_path, lake.root)))
    frame = spark.createDataFrame([row], tables.MODELS.schema)
    merge_new_rows(spark, lake, tables.MODELS, frame)


def record_conversions(spark, lake, conversions: list[tuple[ModelRecord, str]]) -> None:
    """Record (or replace) the hashes of TensorFlow Lite conversions in ``tables.MODELS``, in one commit.

    Args:
        conversions: (the model's record, its conversion's SHA-256) pairs.
    """
    from allmtl_spark.lakehouse import merge_new_rows

    if not conversions:
        return
    rows = [
        asdict(replace(record, artifact_path=stored_path(record.artifact_path, lake.root), tflite_sha256=sha256))
        for record, sha256 in conversions
    ]
    merge_new_rows(
        spark,
        lake,
        tables.MODELS,
        spark.createDataFrame(rows, tables.MODELS.schema),
        update_condition="t.tflite_sha256 IS NULL OR t.tflite_sha256 <> s.tflite_sha256",
        update_set={"tflite_sha256": "s.tflite_sha256"},
    )


def stored_path(path: str, root: str) -> str:
    """How ``models.artifact_path`` records ``path``: relative to the lakehouse ``root`` when inside it."""
    base = root.rstrip("/") + "/"
    return path[len(base) :].strip("/") if path.startswith(base) else path


def artifact_folder(stored: str, root: str) -> str:
    """The artifact folder of a ``models.artifact_path`` value: a relative one is under the lakehouse ``root``."""
    if not stored or os.path.isabs(stored) or len(urlparse(stored).scheme) > 1:
        return stored
    return f"{root.rstrip('/')}/{stored}"


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


@dataclass(frozen=True)
class ModelChoice:
    """A model and why it was chosen (printed by the jobs that use it)."""

    record: ModelRecord
    reason: str

    def describe(self, role: str = "model") -> str:
        created = self.record.created_at.strftime("%Y-%m-%d %H:%M") if self.record.created_at else "?"
        return f"{role} {self.record.model_id} (run {self.record.run_id}, registered {created} UTC): {self.reason}"


def resolve_model(
    spark, lake, ref: str, task: str | None = None, stage: str | None = None, approach: str | None = None
) -> ModelRecord:
    """The model ``choose_model`` picks (see there)."""
    return choose_model(spark, lake, ref, task, stage, approach).record


def choose_model(
    spark, lake, ref: str, task: str | None = None, stage: str | None = None, approach: str | None = None
) -> ModelChoice:
    """Find a model by ``model_id``, by ``run_id`` (with task/stage/approach), ``latest``, or an MLflow model URI.

    Args:
        ref: a model id, a run id, ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` (the
            registry version's ``allmtl.model_id`` tag names the row), or ``latest``: the newest
            ``created_at`` matching the filters among models registered by training runs
            (``deployable``); models of cross-validation folds and tuning grids are reachable by id only.
        task, stage, approach: filters; needed with ``latest`` or a run id holding several models.

    Returns:
        The model and the rule that chose it.

    Raises:
        ArtifactError: nothing matches, or a run id is ambiguous (the message lists the candidates).
    """
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table

    uri = None
    if ref.startswith("models:/"):  # an MLflow registry version or alias: its tag names the model id
        from allmtl_spark.mlflow_models import model_id_of

        uri, ref = ref, model_id_of(ref)
    models = read_table(spark, lake, tables.MODELS)
    for column, value in (("task", task), ("stage", stage), ("approach", approach)):
        if value is not None:
            models = models.where(F.col(column) == value)
    filters = ", ".join(f"{k}={v}" for k, v in (("task", task), ("stage", stage), ("approach", approach)) if v)
    if ref == "latest":
        candidates = models.collect()
        rows = deployable(spark, lake, candidates)
        skipped = len(candidates) - len(rows)
    else:
        rows = models.where((F.col("model_id") == ref) | (F.col("run_id") == ref)).collect()
    rows = sorted(rows, key=lambda r: (-(r["created_at"].timestamp() if r["created_at"] else 0), r["model_id"]))
    if not rows:
        where = f" ({filters})" if filters else ""
        hint = (
            " (models of cross-validation folds and tuning grids are never `latest`: name one by its id)"
            if ref == "latest" and skipped
            else ""
        )
        raise ArtifactError(
            f"no model matches {ref!r}{where} in {lake.path(tables.MODELS)}{hint}; "
            "train one first (allmtl train / allmtl train-segmenter)"
        )
    exact = [r for r in rows if r["model_id"] == ref]
    if ref != "latest" and not exact and len(rows) > 1:
        raise ArtifactError(
            f"run {ref!r} holds {len(rows)} models ({', '.join(r['model_id'] for r in rows)}); "
            "pass a model id or narrow by task/stage/approach"
        )
    record = record_from_row((exact or rows)[0], lake)
    if uri:
        reason = f"pinned: {uri} carries the tag allmtl.model_id={record.model_id}"
    elif exact:
        reason = "pinned by its model id"
    elif ref != "latest":
        reason = f"the only model of run {ref}" + (f" with {filters}" if filters else "")
    else:
        reason = (
            f"latest: the newest of {len(rows)} model(s) with {filters or 'any task'} registered by a training run"
            + (f"; {skipped} model(s) of evaluation folds or tuning grids not eligible" if skipped else "")
        )
    return ModelChoice(record, reason)


def deployable(spark, lake, rows: list) -> list:
    """The ``models`` rows registered by training runs: what ``latest`` chooses from.

    ``purpose`` says it for rows registered by this release (``train``; never ``evaluate`` or
    ``tune``). Rows registered before the column existed (null) count unless the lakehouse shows
    they are cross-validation models: their run is in ``evaluation_runs``, their split is a k-fold
    split in ``splits``, or their run id is a fold's (``<eval_id>-t<trial>-f<fold>``).
    """
    legacy = [r for r in rows if r["purpose"] is None]
    fold_runs, fold_splits = set(), set()
    if legacy:
        fold_runs = set(evaluation_run_ids(spark, lake))
        fold_splits = kfold_split_ids(spark, lake, {r["split_id"] for r in legacy if r["split_id"]})
    keep = []
    for row in rows:
        if row["purpose"] is not None:
            if row["purpose"] == "train":
                keep.append(row)
        elif not (row["run_id"] in fold_runs or row["split_id"] in fold_splits or _FOLD_RUN.match(row["run_id"])):
            keep.append(row)
    return keep


def kfold_split_ids(spark, lake, split_ids: set[str]) -> set[str]:
    """Those of ``split_ids`` that are k-fold splits (their ``splits`` rows carry a fold number)."""
    from pyspark.sql import functions as F

    from allmtl_spark.lakehouse import read_table, table_exists

    if not split_ids or not table_exists(spark, lake, tables.SPLITS):
        return set()
    rows = (
        read_table(spark, lake, tables.SPLITS)
        .where(F.col("split_id").isin(sorted(split_ids)) & F.col("fold").isNotNull())
        .select("split_id")
        .distinct()
        .collect()
    )
    return {r[0] for r in rows}


def record_from_row(row, lake) -> ModelRecord:
    """A ``models`` row as a record; a relative ``artifact_path`` is resolved under ``lake``'s root."""
    data = row.asDict(recursive=True)
    data["metrics"] = dict(data.get("metrics") or {})
    data["input_tables"] = dict(data.get("input_tables") or {})
    data["class_names"] = list(data["class_names"])
    data["artifact_path"] = artifact_folder(data["artifact_path"], lake.root)
    return ModelRecord(**{k: v for k, v in data.items() if k in ModelRecord.__dataclass_fields__})
