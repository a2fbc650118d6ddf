"""The multistage transfer-learning job (``spark-submit jobs/train_mtl.py``).

Delta tables -> split (recorded) -> augmented training rows -> Petastorm -> Horovod ranks per
stage -> artifact + ``models`` row + MLflow run per stage. A run is resumable: started again
with the same run id, finished stages are skipped (their ``models`` rows exist) and an
interrupted stage continues from its last completed epoch.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.checksums import file_sha256
from allmtl_spark.config.loader import ConfigError, to_dict
from allmtl_spark.config.schema import TrainConfig
from allmtl_spark.ids import check_run_id
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table, table_version
from allmtl_spark.registry import ModelRecord, load_verified_model, record_from_row, register_model
from allmtl_spark.session import assert_on_driver
from allmtl_spark.training.datasets import (
    ExampleSet,
    cell_examples,
    materialize,
    slide_examples,
    split_examples,
    to_numpy,
)
from allmtl_spark.training.examples import ViewSpec
from allmtl_spark.training.rank import BEST_RECORD_FILE, HISTORY_FILE, RankJob, checkpoint_dir, train_rank
from allmtl_spark.training.stages import StagePlan, plan_stages

log = logging.getLogger(__name__)
INPUT_TABLES = (tables.SLIDES, tables.CELLS, tables.SEGMENTED_SLIDES, tables.SLIDE_CELLS)


@dataclass
class StageResult:
    plan: StagePlan
    record: ModelRecord
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    skipped: bool = False


@dataclass
class TrainSummary:
    run_id: str
    results: list[StageResult]
    curves_path: str | None
    seconds: float

    def format(self) -> str:
        lines = [f"training run {self.run_id} ({self.seconds / 60:.1f} min)"]
        lines.append(f"  {'stage':<36} {'val acc':>8} {'val auc':>8} {'test acc':>9} {'test auc':>9}  model")
        for r in self.results:
            m = r.record.metrics
            note = " (already done)" if r.skipped else ""
            lines.append(
                f"  {r.plan.key:<36} {m.get('val_accuracy', float('nan')):>8.3f} "
                f"{m.get('val_auc', float('nan')):>8.3f} {m.get('test_accuracy', float('nan')):>9.3f} "
                f"{m.get('test_auc', float('nan')):>9.3f}  {r.record.model_id}{note}"
            )
        if self.curves_path:
            lines.append(f"  training curves: {self.curves_path}")
        return "\n".join(lines)


def run_train(
    spark: SparkSession,
    cfg: TrainConfig,
    lake: Lakehouse,
    run_id: str | None = None,
    fold: tuple[int, int] | None = None,
    stage2_from_run: str | None = None,
) -> TrainSummary:
    """Train every planned stage (see ``stages.plan_stages``) and register the models.

    Args:
        spark: the session (driver only).
        cfg: the ``train`` section.
        lake: the lakehouse.
        run_id: reuse an id to resume an interrupted run; a new id by default.
        fold: ``(n_folds, index)``: slides are split into grouped stratified folds and fold
            ``index`` is the test part (cross-validation); None: ``cfg.split``'s train/val/test.
        stage2_from_run: reuse the stage-2 (single-cell) models of that run instead of training
            them again; cross-validation folds of one trial share them, since the folds split
            slides and stage 2 never sees a slide.

    Returns:
        Per-stage models and validation/test metrics.
    """
    assert_on_driver()
    started = time.time()
    run_id = check_run_id(run_id) if run_id else f"mtl-{uuid.uuid4().hex[:8]}"
    _check_slots(spark, cfg.num_proc)
    _configure_petastorm(spark, cfg, lake)
    versions = {t.name: v for t in INPUT_TABLES if (v := table_version(spark, lake, t)) is not None}
    segmenter = resolve_segmentation(spark, lake, cfg.segmenter)
    plans = plan_stages(cfg)
    data = _DataCache(spark, lake, cfg, segmenter, fold)
    results: dict[str, StageResult] = {}
    try:
        for plan in plans:
            owner = stage2_from_run if (stage2_from_run and plan.stage == "stage2") else run_id
            results[plan.key] = _run_stage(spark, lake, cfg, plan, owner, data, results, versions, segmenter)
    finally:
        data.close()
    curves = _plot_curves(lake, run_id, results)
    summary = TrainSummary(run_id, list(results.values()), curves, time.time() - started)
    return summary


def resolve_segmentation(spark: SparkSession, lake: Lakehouse, ref: str) -> str:
    """The segmenter version to train on: as given, or the most recently written one for ``latest``."""
    segmented = read_table(spark, lake, tables.SEGMENTED_SLIDES)
    if ref != "latest":
        if segmented.where(F.col("segmenter_version") == ref).limit(1).count() == 0:
            raise ConfigError(f"train.segmenter={ref!r}: no slides segmented with that version; run allmtl segment")
        return ref
    row = (
        segmented.groupBy("segmenter_version")
        .agg(F.max("segmented_at").alias("at"))
        .orderBy(F.col("at").desc())
        .first()
    )
    if row is None:
        raise ConfigError("train.segmenter=latest but segmented_slides is empty; run allmtl segment first")
    return row["segmenter_version"]


def _check_slots(spark: SparkSession, num_proc: int) -> None:
    slots = spark.sparkContext.defaultParallelism
    if num_proc > slots:
        raise ConfigError(
            f"train.num_proc={num_proc} but Spark has {slots} task slot(s); "
            "lower train.num_proc or give Spark more cores/executors"
        )


def _configure_petastorm(spark: SparkSession, cfg: TrainConfig, lake: Lakehouse) -> None:
    from petastorm.spark import SparkDatasetConverter

    url = cfg.petastorm_cache_dir or f"file://{lake.root}/_petastorm"
    if url.startswith("/"):
        url = f"file://{url}"
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, url)


class _DataCache:
    """Example sets and Petastorm converters, built once per task and shared by the stages."""

    def __init__(self, spark, lake, cfg: TrainConfig, segmenter: str, fold: tuple[int, int] | None = None):
        self.spark, self.lake, self.cfg, self.segmenter, self.fold = spark, lake, cfg, segmenter, fold
        self.sets: dict[str, ExampleSet] = {}
        self.parts: dict[tuple[str, str], object] = {}
        self.converters: dict[tuple[str, str], object] = {}
        self.arrays: dict[tuple[str, str], tuple] = {}

    def example_set(self, task: str) -> ExampleSet:
        if task not in self.sets:
            cfg = self.cfg
            if task.startswith("cell_"):
                examples, source = cell_examples(self.spark, self.lake, task), "cells"
                spec = ViewSpec("cell", cfg.input_size, cfg.montage_grid if cfg.slide_view == "montage" else 1)
            else:
                examples = slide_examples(self.spark, self.lake, task, self.segmenter, cfg.slide_view, cfg.montage_grid)
                spec, source = ViewSpec(cfg.slide_view, cfg.input_size, cfg.montage_grid), "slides"
            fold = None if task.startswith("cell_") else self.fold  # folds split slides, not the cell set
            self.sets[task] = split_examples(
                self.spark, self.lake, examples, task, source, spec, cfg.split, cfg.augment, fold
            )
            log.info("task %s: split %s %s", task, self.sets[task].split_id, self.sets[task].counts)
        return self.sets[task]

    def part(self, task: str, part: str):
        key = (task, part)
        if key not in self.parts:
            partitions = max(2, self.cfg.num_proc * 2)
            frame = materialize(self.example_set(task), part, self.cfg.augment, partitions)
            self.parts[key] = frame.cache()
        return self.parts[key]

    def converter(self, task: str, part: str):
        from petastorm.spark import make_spark_converter

        key = (task, part)
        if key not in self.converters:
            # Several row groups per rank, so every Horovod shard gets data.
            frame = self.part(task, part).select("image", "label").repartition(max(2, self.cfg.num_proc * 2))
            self.converters[key] = make_spark_converter(frame)
        return self.converters[key]

    def numpy(self, task: str, part: str):
        key = (task, part)
        if key not in self.arrays:
            self.arrays[key] = to_numpy(self.part(task, part), self.cfg.input_size)
        return self.arrays[key]

    def close(self) -> None:
        for converter in self.converters.values():
            try:
                converter.delete()
            except Exception as err:  # a leftover cache folder is harmless; say so and go on
                log.warning("could not delete a Petastorm cache: %s", err)
        for frame in self.parts.values():
            frame.unpersist()


def _run_stage(
    spark,
    lake: Lakehouse,
    cfg: TrainConfig,
    plan: StagePlan,
    run_id: str,
    data: _DataCache,
    done: dict[str, StageResult],
    versions: dict[str, int],
    segmenter: str,
) -> StageResult:
    model_id = plan.model_id(run_id)
    existing = read_table(spark, lake, tables.MODELS).where(F.col("model_id") == model_id).collect()
    if existing:
        print(f"[{plan.key}] already trained in run {run_id}: {model_id}", flush=True)
        if not cfg.keep_checkpoints:  # a run killed between registering and cleaning up
            delete_checkpoints(checkpoint_dir(lake.models, run_id, plan.key))
        return StageResult(plan, record_from_row(existing[0]), skipped=True)
    examples = data.example_set(plan.task)
    n_train = data.part(plan.task, "train").count()
    n_val = data.part(plan.task, "val").count()
    print(
        f"[{plan.key}] {n_train} training images (after augmentation), {n_val} validation, "
        f"{cfg.num_proc} Horovod rank(s), {plan.schedule.epochs} epoch(s)",
        flush=True,
    )
    output_dir = os.path.join(lake.models, model_id)
    job = _rank_job(cfg, plan, run_id, lake, data, done, n_train, n_val, output_dir, examples)
    started = time.time()
    from horovod.spark import run as horovod_run

    results = horovod_run(train_rank, args=(job,), num_proc=cfg.num_proc, use_gloo=True, verbose=0)
    root = next(r for r in results if r["rank"] == 0)
    if len({r["weights_digest"] for r in results}) != 1:
        raise RuntimeError(f"[{plan.key}] Horovod ranks ended with different weights; refusing to register")
    if root["sha256"] != file_sha256(os.path.join(output_dir, "model.h5")):
        raise RuntimeError(f"{output_dir}/model.h5 changed after rank 0 wrote it")
    metrics = _evaluate(spark, lake, data, plan, output_dir, root["sha256"], model_id)
    record = ModelRecord(
        model_id=model_id,
        run_id=run_id,
        kind="classifier",
        stage=plan.stage,
        task=plan.task,
        class_names=list(plan.class_names),
        artifact_path=output_dir,
        artifact_sha256=root["sha256"],
        config_json=json.dumps(to_dict(cfg), sort_keys=True),
        approach=plan.approach,
        backbone=plan.backbone,
        input_size=cfg.input_size,
        metrics=metrics,
        input_tables=versions,
        split_id=examples.split_id,
    )
    record = _track(lake, record, plan, root["history"], segmenter)
    register_model(spark, lake, record)
    if not cfg.keep_checkpoints:
        delete_checkpoints(job.checkpoint_dir)
    seconds = time.time() - started
    kept = root["kept_epoch"]
    kept_text = f"epoch {kept['epoch']} (lowest {kept['monitor']})" if kept else "the last epoch"
    print(
        f"[{plan.key}] done in {seconds:.0f}s, kept {kept_text}: val accuracy {metrics['val_accuracy']:.3f}, "
        f"test accuracy {metrics['test_accuracy']:.3f} -> {model_id}",
        flush=True,
    )
    return StageResult(plan, record, root["history"], seconds, root["initial_epoch"])


def _rank_job(
    cfg: TrainConfig,
    plan: StagePlan,
    run_id: str,
    lake: Lakehouse,
    data: _DataCache,
    done: dict[str, StageResult],
    n_train: int,
    n_val: int,
    output_dir: str,
    examples: ExampleSet,
) -> RankJob:
    if plan.init_from:
        init_weights, load_head = done[plan.init_from].record.model_file, False
    else:
        init_weights = None if cfg.weights == "none" else cfg.weights
        load_head = False
    spec = {
        "builder": "build_classifier",
        "backbone": plan.backbone,
        "input_size": cfg.input_size,
        "class_names": list(plan.class_names),
        "head": plan.head,
        "dense_units": list(cfg.head_dense_units),
        "dropout": cfg.head_dropout,
        "stage": plan.stage,
        "task": plan.task,
        "approach": plan.approach,
        "init_from": plan.init_from or cfg.weights,
        "view": asdict(examples.spec),
        "run_id": run_id,
        "schedule": asdict(plan.schedule),
    }
    return RankJob(
        stage_key=plan.key,
        backbone=plan.backbone,
        input_size=cfg.input_size,
        class_names=plan.class_names,
        head=plan.head,
        dense_units=tuple(cfg.head_dense_units),
        dropout=cfg.head_dropout if plan.head == "dense" else 0.0,
        init_weights=init_weights,
        load_head=load_head,
        trainable=plan.schedule.trainable,
        warmup_epochs=plan.schedule.warmup_epochs,
        epochs=plan.schedule.epochs,
        keep_weights=plan.schedule.keep_weights,
        batch_size=plan.schedule.batch_size,
        learning_rate=stage_learning_rate(plan.schedule, pretrained=init_weights is not None),
        decay_rate=plan.schedule.decay_rate,
        n_train=n_train,
        n_val=n_val,
        checkpoint_dir=checkpoint_dir(lake.models, run_id, plan.key),
        output_dir=output_dir,
        train_converter=data.converter(plan.task, "train"),
        val_converter=data.converter(plan.task, "val"),
        threads=cfg.threads_per_rank,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.augment.seed,
        batchnorm_momentum=cfg.batchnorm_momentum,
        imagenet_base_url=cfg.imagenet_base_url,
        weights_cache_dir=cfg.weights_cache_dir,
        spec=spec,
    )


def delete_checkpoints(folder: str) -> None:
    """Free a registered stage's checkpoint files; a rerun of the run id skips the stage via ``models``.

    ``history.json`` and ``best.json`` stay (a few kB): the evaluation report reads every fold's
    curves from them after all folds have trained.
    """
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name in (HISTORY_FILE, BEST_RECORD_FILE):
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError as err:  # disk space is the only loss; the model is registered already
            log.warning("could not delete %s in %s: %s", name, folder, err)


def stage_learning_rate(schedule, pretrained: bool) -> float:
    """The stage's base rate: ``finetune_learning_rate`` when it starts from trained weights (if set)."""
    if pretrained and schedule.finetune_learning_rate is not None:
        return schedule.finetune_learning_rate
    return schedule.learning_rate


def _evaluate(
    spark, lake: Lakehouse, data: _DataCache, plan: StagePlan, output_dir: str, sha: str, model_id: str
) -> dict[str, float]:
    """Accuracy, AUC and macro F1 on the validation and held-out test parts; per-case rows to ``predictions``."""
    from allmtl_spark.metrics.classification import compute_classification_metrics

    probe = ModelRecord(
        model_id=model_id,
        run_id="",
        kind="classifier",
        stage=plan.stage,
        task=plan.task,
        class_names=list(plan.class_names),
        artifact_path=output_dir,
        artifact_sha256=sha,
        config_json="{}",
    )
    model = load_verified_model(probe)
    metrics, rows = {}, []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for part in ("val", "test"):
        arrays = data.numpy(plan.task, part)
        if len(arrays.labels) == 0:
            continue
        scores = predict_scores(model, arrays.images)
        report = compute_classification_metrics(arrays.labels, scores, list(plan.class_names))
        metrics[f"{part}_accuracy"] = float(report.accuracy)
        metrics[f"{part}_macro_f1"] = float(report.macro.f1)
        metrics[f"{part}_auc"] = float(report.roc.macro.auc) if report.roc is not None else float("nan")
        metrics[f"{part}_n"] = float(len(arrays.labels))
        rows += [
            {
                "model_id": model_id,
                "content_sha256": key,
                "part": part,
                "item_id": item,
                "label": int(label),
                "predicted": int(np.argmax(score)),
                "scores": [float(v) for v in score],
                "created_at": now,
            }
            for key, item, label, score in zip(arrays.keys, arrays.item_ids, arrays.labels, scores, strict=True)
        ]
    if rows:
        merge_new_rows(spark, lake, tables.PREDICTIONS, spark.createDataFrame(rows, tables.PREDICTIONS.schema))
    return metrics


def predict_scores(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (n, k) from a sigmoid (n, 1) or softmax (n, k) classifier."""
    out = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out


def _track(lake: Lakehouse, record: ModelRecord, plan: StagePlan, history: dict, segmenter: str) -> ModelRecord:
    from allmtl_spark import tracking

    params = {
        "stage": plan.stage,
        "task": plan.task,
        "approach": plan.approach,
        "backbone": plan.backbone,
        "init_from": plan.init_from,
        "segmenter": segmenter,
        "split_id": record.split_id,
        **{f"schedule.{k}": v for k, v in asdict(plan.schedule).items()},
    }
    with tracking.mlflow_run(lake.mlflow_uri, record.model_id, params, tags={"run_id": record.run_id}) as run:
        if run is None:
            return record
        tracking.log_history(history)
        tracking.log_metrics(record.metrics)
        tracking.log_artifact(os.path.join(record.artifact_path, "model.json"))
        return ModelRecord(**{**asdict(record), "mlflow_run_id": run.info.run_id})


def _plot_curves(lake: Lakehouse, run_id: str, results: dict[str, StageResult]) -> str | None:
    from allmtl_spark.training.curves import plot_training_curves

    histories = {k: r.history for k, r in results.items() if r.history}
    if not histories:
        return None
    folder = os.path.join(lake.reports, "train", run_id)
    os.makedirs(folder, exist_ok=True)
    return plot_training_curves(histories, os.path.join(folder, "training_curves.png"), f"training run {run_id}")
