"""The multistage transfer-learning job (``spark-submit jobs/train_mtl.py``).

Delta tables -> split (recorded) -> augmented training rows -> Petastorm -> one Horovod launch
per run whose ranks train the stages in order -> artifact + ``models`` row + MLflow run per stage.
A run is resumable: started again with the same run id, finished stages are skipped (their ``models``
rows exist) and an interrupted stage continues from its last completed epoch.
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
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.checksums import file_sha256
from allmtl_spark.config.loader import ConfigError, to_dict
from allmtl_spark.config.schema import TrainConfig
from allmtl_spark.evaluation.baselines import BASELINES, Baseline
from allmtl_spark.ids import check_run_id
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table, table_version
from allmtl_spark.registry import ModelRecord, record_from_row, register_model
from allmtl_spark.segmentation.crops import crop_pixel_size
from allmtl_spark.session import assert_on_driver
from allmtl_spark.training.datasets import (
    ExampleSet,
    cell_examples,
    materialize,
    record_split,
    slide_examples,
    slide_split,
    split_examples,
    to_numpy,
)
from allmtl_spark.training.examples import TASK_CLASSES, ViewSpec
from allmtl_spark.training.rank import (
    BEST_RECORD_FILE,
    HISTORY_FILE,
    RankJob,
    checkpoint_dir,
)
from allmtl_spark.training.split import check_stage_overlap, linked, stage2_allowed
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
    rank_process: int | None = None  # rank 0's process id: the stages of one run's launch share it


@dataclass
class TrainSummary:
    run_id: str
    results: list[StageResult]
    curves_path: str | None
    seconds: float
    # approach (colour, size) -> task -> that shape-blind baseline's metrics (evaluation/baselines.py)
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

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
        for approach, tasks in self.baselines.items():
            for task, m in tasks.items():
                lines.append(
                    f"  {approach + '-only baseline ' + task:<36} {m.get('val_accuracy', float('nan')):>8.3f} "
                    f"{m.get('val_auc', float('nan')):>8.3f} {m.get('test_accuracy', float('nan')):>9.3f} "
                    f"{m.get('test_auc', float('nan')):>9.3f}  {baseline_model_id(self.run_id, approach, task)}"
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
    score_test: bool = True,
    colour_bins: int = 16,
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
            them again (``allmtl tune``: every grid value of one split shares one stage 2). That run
            must have used the same split and seed: the overlap check is computed for this run's split.
        score_test: False never reads the test part (``allmtl tune`` judges on validation only).
        colour_bins: histogram bins of the colour-only baseline. The shape-blind baselines
            (``evaluation/baselines.py``: colour-only, size-only) are fitted beside the stage-3 models;
            their predictions go to ``predictions`` as models ``<run_id>-colour-<task>`` and
            ``<run_id>-size-<task>``.

    Returns:
        Per-stage models and validation/test metrics.
    """
    from allmtl_spark.training.timing import PhaseTimer, format_phases

    assert_on_driver()
    timer = PhaseTimer()
    started = timer.started
    run_id = check_run_id(run_id) if run_id else f"mtl-{uuid.uuid4().hex[:8]}"
    _check_slots(spark, cfg.num_proc)
    _configure_petastorm(spark, cfg, lake)
    versions = {t.name: v for t in INPUT_TABLES if (v := table_version(spark, lake, t)) is not None}
    segmenter = resolve_segmentation(spark, lake, cfg.segmenter)
    cfg = apply_tuning_record(cfg)
    plans = plan_stages(cfg)
    choices = check_tuning_record(cfg, plans)
    if choices:
        print(f"[choices] {choices}", flush=True)
    data = _DataCache(spark, lake, cfg, segmenter, fold, score_test)
    results: dict[str, StageResult] = {}
    timer.lap("tables + plan")
    try:
        data.prepare(plans)  # raises LeakageError before anything trains
        timer.lap("split + check + record")
        pending: list[_PendingStage] = []
        for plan in plans:
            owner = stage2_from_run if (stage2_from_run and plan.stage == "stage2") else run_id
            stage = _prepare_stage(spark, lake, cfg, plan, owner, data, results, pending)
            if isinstance(stage, StageResult):
                results[plan.key] = stage
            else:
                pending.append(stage)
        timer.lap("stage lookup + examples + Petastorm")
        for stage, outcome in _launch(cfg, pending):
            results[stage.plan.key] = _finish_stage(spark, lake, cfg, stage, outcome, data, versions, segmenter)
            timer.lap(stage.plan.key)
        results = {plan.key: results[plan.key] for plan in plans}  # the plan's order
        baselines: dict[str, dict[str, dict[str, float]]] = {}
        if score_test:
            for baseline in BASELINES:
                for task in dict.fromkeys(p.task for p in plans if p.stage == "stage3"):
                    baselines.setdefault(baseline.approach, {})[task] = fit_baseline(
                        spark, lake, data, task, baseline, run_id, colour_bins
                    )
        timer.lap("baselines")
        _plot_inputs(lake, run_id, data, plans)
    finally:
        data.close()
    curves = _plot_curves(lake, run_id, results)
    timer.lap("cleanup + curves")
    print(f"[{run_id}] time: {format_phases(timer.phases, timer.total())}", flush=True)
    summary = TrainSummary(run_id, list(results.values()), curves, time.time() - started, baselines)
    return summary


def model_purpose(fold: tuple[int, int] | None, score_test: bool) -> str:
    """``models.purpose`` of a run's models: ``tune`` (a grid value, never tested), ``evaluate`` (a
    cross-validation fold: trained on part of the data to measure the method) or ``train`` (deployable)."""
    if not score_test:
        return "tune"
    return "evaluate" if fold is not None else "train"


def baseline_model_id(run_id: str, approach: str, task: str) -> str:
    """``predictions`` model id of a run's shape-blind baseline ``approach`` (colour, size) for ``task``."""
    return f"{run_id}-{approach}-{task}"


def fit_baseline(
    spark, lake: Lakehouse, data: _DataCache, task: str, baseline: Baseline, run_id: str, bins: int
) -> dict:
    """Fit a shape-blind baseline on the task's training side, score validation and test, store predictions."""
    from allmtl_spark.evaluation.baselines import fit_predict

    names = data.example_set(task).class_names
    grid = data.cfg.montage_grid if data.cfg.slide_view == "montage" else 1

    def features(images):
        return baseline.features(images, bins, grid)

    train_x, train_y = [], []
    for part in ("train", "val"):
        arrays = data.numpy(task, part)
        if len(arrays.labels):
            train_x.append(features(arrays.images))
            train_y.append(arrays.labels)
    if not train_x:
        return {}
    x, y = np.concatenate(train_x), np.concatenate(train_y)
    outputs = {}
    for part in ("val", "test"):
        arrays = data.numpy(task, part)
        if len(arrays.labels):
            outputs[part] = (arrays, fit_predict(x, y, len(names), features(arrays.images)))
    return _score_parts(spark, lake, baseline_model_id(run_id, baseline.approach, task), names, outputs)


def read_tuning_record(path: str) -> dict:
    """The ``tune.json`` an ``allmtl tune`` run wrote (grid, validation scores, choices)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise ConfigError(f"train.tuning_record={path!r} cannot be read: {err}") from None


def apply_tuning_record(cfg: TrainConfig) -> TrainConfig:
    """With ``train.tuning_record`` and no ``train.stage3_learning_rates``: take the rates from the record."""
    from dataclasses import replace

    if not cfg.tuning_record or cfg.stage3_learning_rates:
        return cfg
    return replace(cfg, stage3_learning_rates=dict(read_tuning_record(cfg.tuning_record).get("choices", {})))


def check_tuning_record(cfg: TrainConfig, plans: list[StagePlan]) -> str | None:
    """With ``train.tuning_record``: check the config's stage-3 rates are that tune's choices; returns the record line.

    Raises:
        ConfigError: the file is missing, or a planned model's rate differs from the tune's choice.
    """
    if not cfg.tuning_record:
        return None
    record = read_tuning_record(cfg.tuning_record)
    wrong = []
    for plan in plans:
        if plan.stage != "stage3":
            continue
        key = rate_key(plan.task, plan.approach)
        chosen = record.get("choices", {}).get(key)
        rate, _ = stage_learning_rate(cfg, plan, pretrained=plan.init_from is not None)
        if chosen is None or not np.isclose(rate, chosen):
            wrong.append(f"{key}: config {rate}, tune {chosen}")
    if wrong:
        raise ConfigError(
            f"train.stage3_learning_rates differ from the choices in {cfg.tuning_record} ({'; '.join(wrong)}); "
            "copy the tune's printed rates or set train.tuning_record=null"
        )
    return (
        f"stage-3 learning rates from tune {record.get('tune_id')} ({cfg.tuning_record}): grid "
        f"{record.get('grid')}, chosen on {record.get('metric')} of validation slides only (test part never read)"
    )


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


def cell_tile_px(tile_um: float | None, crop_um_per_px: float | None, segmenter: str) -> int | None:
    """A cell tile's side in the crops' pixels for ``train.cell_tile_um`` (None: zoom to the largest cell).

    Raises:
        ConfigError: a tile size is set but the segmentation did not record its crops' pixel size.
    """
    if tile_um is None:
        return None
    if crop_um_per_px is None:
        raise ConfigError(
            f"train.cell_tile_um={tile_um} needs the crops' pixel size, which segmentation {segmenter!r} did not "
            "record (an earlier release): run allmtl segment again, or set train.cell_tile_um=null"
        )
    return max(2, round(tile_um / crop_um_per_px))


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


def ordered_converter(frame):
    """Petastorm's converter of ``frame`` with its files in partition order.

    Petastorm lists the files it wrote with Spark's ``inputFiles()``, a set: their order followed the
    hashes of names with a fresh UUID in every run, and the reader's seeded shuffle of that list gave
    one of two stage-2 models from one lakehouse and config (two files, two orders).
    """
    from petastorm.spark import make_spark_converter

    converter = make_spark_converter(frame)
    converter.file_urls = sorted(converter.file_urls)  # part-00000-<uuid>, part-00001-<uuid>, ...: one UUID a write
    return converter


class _DataCache:
    """Example sets and Petastorm converters, built once per task and shared by the stages.

    ``prepare`` decides every split of the run before anything trains: one split of the slides shared
    by the stage-3 tasks, then the stage-2 cells, kept off every slide and patient on the stage-3
    validation or test side. It asserts that no group crosses sides or stages and records the splits
    with that check in ``splits``.
    """

    def __init__(
        self, spark, lake, cfg: TrainConfig, segmenter: str, fold: tuple[int, int] | None = None, score_test=True
    ):
        self.spark, self.lake, self.cfg, self.segmenter, self.fold = spark, lake, cfg, segmenter, fold
        self.score_test = score_test
        self.sets: dict[str, ExampleSet] = {}
        self.parts: dict[tuple[str, str], object] = {}
        self.converters: dict[tuple[str, str], object] = {}
        self.arrays: dict[tuple[str, str], tuple] = {}
        self.check: str | None = None

    def prepare(self, plans: list[StagePlan]) -> str:
        """Split every task of ``plans``, check the splits against each other, record them; returns the check."""
        cfg, spark, lake = self.cfg, self.spark, self.lake
        slide_tasks = sorted({p.task for p in plans if p.stage == "stage3"}, key=list(TASK_CLASSES).index)
        cell_tasks = sorted({p.task for p in plans if p.stage == "stage2"})
        slides = slide_split(spark, lake, self.segmenter, cfg.split, self.fold, tuple(slide_tasks))
        crop_um_per_px = crop_pixel_size(spark, lake, self.segmenter)
        tile_px = cell_tile_px(cfg.cell_tile_um, crop_um_per_px, self.segmenter)
        spec = ViewSpec(cfg.slide_view, cfg.input_size, cfg.montage_grid, tile_px=tile_px)
        for task in slide_tasks:
            examples = slide_examples(spark, lake, task, self.segmenter, cfg.slide_view, cfg.montage_grid)
            self.sets[task] = split_examples(
                spark, examples, task, "slides", spec, cfg.split, cfg.augment, self.fold, parts=slides
            )
        cell_meta = []
        include_unlinked = cfg.stage2_unlinked_cells == "include"
        for task in cell_tasks:
            grid = cfg.montage_grid if cfg.slide_view == "montage" else 1
            self.sets[task] = split_examples(
                spark,
                cell_examples(spark, lake, task, crop_um_per_px),  # stage 3's scale
                task,
                "cells",
                ViewSpec("cell", cfg.input_size, grid, tile_px=tile_px),
                cfg.split,
                cfg.augment,
                None,  # stage 2's own train/val/test split of the cells it may use
                allowed=lambda meta: stage2_allowed(meta, slides) & (linked(meta) | include_unlinked),
            )
            cell_meta.append(self.sets[task].meta)
        cells = pd.concat(cell_meta, ignore_index=True) if cell_meta else None
        self.check = check_stage_overlap(slides, cells)
        for task, examples in self.sets.items():
            record_split(spark, lake, examples, self.check)
            log.info("task %s: split %s %s", task, examples.split_id, examples.counts)
        print(f"[splits] {self.check}", flush=True)
        return self.check

    def example_set(self, task: str) -> ExampleSet:
        if task not in self.sets:
            raise RuntimeError(f"task {task} was not prepared: call prepare() with every stage first")
        return self.sets[task]

    def part(self, task: str, part: str):
        key = (task, part)
        if key not in self.parts:
            partitions = max(2, self.cfg.num_proc * 2)
            frame = materialize(self.example_set(task), part, self.cfg.augment, partitions)
            self.parts[key] = frame.cache()
        return self.parts[key]

    def converter(self, task: str, part: str):
        key = (task, part)
        if key not in self.converters:
            # Several row groups per rank, so every Horovod shard gets data; sorted inside each, so the
            # files (and with Petastorm's seeded reader, the stream) are the same in every run.
            frame = (
                self.part(task, part)
                .repartition(max(2, self.cfg.num_proc * 2))
                .sortWithinPartitions("key", "copy")
                .select("image", "label")
            )
            self.converters[key] = ordered_converter(frame)
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


@dataclass
class _PendingStage:
    """A stage to train in this run's Horovod launch: what the driver decided before the launch."""

    plan: StagePlan
    run_id: str
    model_id: str
    output_dir: str
    job: RankJob
    timer: object  # PhaseTimer of the stage's driver phases


def _prepare_stage(
    spark,
    lake: Lakehouse,
    cfg: TrainConfig,
    plan: StagePlan,
    run_id: str,
    data: _DataCache,
    done: dict[str, StageResult],
    pending: list[_PendingStage],
) -> StageResult | _PendingStage:
    """A finished stage's result (already registered: skipped), or the job to train it in this run's launch."""
    from allmtl_spark.training.timing import PhaseTimer

    timer = PhaseTimer()
    model_id = plan.model_id(run_id)
    existing = read_table(spark, lake, tables.MODELS).where(F.col("model_id") == model_id).collect()
    if existing:
        print(f"[{plan.key}] already trained in run {run_id}: {model_id}", flush=True)
        if not cfg.keep_checkpoints:  # a run killed between registering and cleaning up
            delete_checkpoints(checkpoint_dir(lake.models, run_id, plan.key))
        return StageResult(plan, record_from_row(existing[0], lake), skipped=True)
    examples = data.example_set(plan.task)
    n_train = data.part(plan.task, "train").count()
    n_val = data.part(plan.task, "val").count()
    timer.lap("lookup + make examples")
    rate, rate_from = stage_learning_rate(cfg, plan, pretrained=bool(plan.init_from) or cfg.weights != "none")
    effective = rate * (cfg.num_proc if cfg.scale_learning_rate_by_ranks else 1)
    print(
        f"[{plan.key}] {n_train} training images (after augmentation), {n_val} validation, "
        f"{cfg.num_proc} Horovod rank(s), {plan.schedule.epochs} epoch(s); effective batch "
        f"{cfg.num_proc} x {plan.schedule.batch_size} = {cfg.num_proc * plan.schedule.batch_size}, "
        f"learning rate {effective:g} ({rate_from} = {rate:g}"
        f"{f' x {cfg.num_proc} ranks' if cfg.scale_learning_rate_by_ranks and cfg.num_proc > 1 else ''})",
        flush=True,
    )
    output_dir = os.path.join(lake.models, model_id)
    same_launch = {p.plan.key for p in pending}
    job = _rank_job(cfg, plan, run_id, lake, data, done, n_train, n_val, output_dir, examples, same_launch)
    timer.lap("Petastorm conversion")
    return _PendingStage(plan, run_id, model_id, output_dir, job, timer)


def _launch(cfg: TrainConfig, pending: list[_PendingStage]) -> list[tuple[_PendingStage, dict]]:
    """Train every pending stage in one Horovod launch; per stage, rank 0's result with its timings.

    Each rank returns one result per stage, in order. The launch (Spark tasks, Gloo rendezvous) and the
    rank's imports are paid once per run and counted in its first stage's ``horovod launch`` phase.
    """
    if not pending:
        return []
    from horovod.spark import run as horovod_run

    from allmtl_spark.training.rank import train_ranks

    started = time.time()
    jobs = [p.job for p in pending]
    per_rank = horovod_run(train_ranks, args=(jobs,), num_proc=cfg.num_proc, use_gloo=True, verbose=0)
    root = next(r for r in per_rank if r[0]["rank"] == 0)
    outcomes = []
    for index, stage in enumerate(pending):
        result = dict(root[index])
        result["digests"] = {r[index]["weights_digest"] for r in per_rank}
        result["launch_seconds"] = (result["rank_started"] - started) if index == 0 else 0.0
        outcomes.append((stage, result))
    print(
        f"[launch] {len(pending)} stage(s) in one Horovod launch of {cfg.num_proc} rank(s): "
        f"{time.time() - started:.0f}s, of which start-up {outcomes[0][1]['launch_seconds']:.0f}s",
        flush=True,
    )
    return outcomes


def _finish_stage(
    spark,
    lake: Lakehouse,
    cfg: TrainConfig,
    stage: _PendingStage,
    root: dict,
    data: _DataCache,
    versions: dict[str, int],
    segmenter: str,
) -> StageResult:
    """Check what rank 0 saved, score, calibrate, track and register one trained stage."""
    from allmtl_spark.training.timing import format_phases

    plan, timer, output_dir, model_id, run_id = stage.plan, stage.timer, stage.output_dir, stage.model_id, stage.run_id
    examples = data.example_set(plan.task)
    # the rank's phases of this stage (the launch's start-up counts in the run's first stage only)
    for name, seconds in {"horovod launch": root["launch_seconds"], **root["timings"]}.items():
        timer.add(name, seconds)
    timer.resume()
    if len(root["digests"]) != 1:
        raise RuntimeError(f"[{plan.key}] Horovod ranks ended with different weights; refusing to register")
    if root["sha256"] != file_sha256(os.path.join(output_dir, "model.h5")):
        raise RuntimeError(f"{output_dir}/model.h5 changed after rank 0 wrote it")
    timer.lap("verify artifact")
    metrics, outputs = _evaluate(spark, lake, data, plan, model_id, root["scores"])
    timer.lap("metrics + predictions table")
    from allmtl_spark.training.trust_fit import fit_trust

    purpose = model_purpose(data.fold, data.score_test)
    trust = fit_trust(spark, lake, cfg, data, plan, outputs, output_dir, segmenter, with_ood=purpose == "train")
    metrics = {**metrics, **trust.metrics}
    print(f"[{plan.key}] {trust.summary}", flush=True)
    timer.lap("calibration + out-of-distribution fit")
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
        purpose=purpose,
        temperature=trust.temperature,
        trust_sha256=trust.sha256,
    )
    record = _track(lake, record, plan, root["history"], segmenter)
    timer.lap("MLflow")
    register_model(spark, lake, record)
    timer.lap("register")
    if not cfg.keep_checkpoints:
        delete_checkpoints(stage.job.checkpoint_dir)
    timer.lap("cleanup")
    print(f"[{plan.key}] time: {format_phases(timer.phases, timer.measured())}", flush=True)
    seconds = timer.measured()
    kept = root["kept_epoch"]
    kept_text = f"epoch {kept['epoch']} (lowest {kept['monitor']})" if kept else "the last epoch"
    print(
        f"[{plan.key}] done in {seconds:.0f}s, kept {kept_text}: val accuracy {metrics['val_accuracy']:.3f}, "
        f"test accuracy {metrics.get('test_accuracy', float('nan')):.3f} -> {model_id}",
        flush=True,
    )
    return StageResult(plan, record, root["history"], seconds, root["initial_epoch"], rank_process=root["process"])


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
    same_launch: frozenset[str] | set[str] = frozenset(),
) -> RankJob:
    init_sha256 = None
    if plan.init_from and plan.init_from in same_launch:  # trained earlier in this launch: the rank fills it in
        init_weights, load_head = None, False
    elif plan.init_from:
        init_weights, load_head = done[plan.init_from].record.model_file, False
        init_sha256 = done[plan.init_from].record.artifact_sha256
    else:
        init_weights = None if cfg.weights == "none" else cfg.weights
        load_head = False
    rate, rate_from = stage_learning_rate(cfg, plan, pretrained=init_weights is not None or bool(plan.init_from))
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
        "learning_rate": rate,
        "learning_rate_from": rate_from,
        "tuning_record": cfg.tuning_record,
        "seed": cfg.seed,
        "split_check": data.check,
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
        learning_rate=rate,
        decay_rate=plan.schedule.decay_rate,
        n_train=n_train,
        n_val=n_val,
        checkpoint_dir=checkpoint_dir(lake.models, run_id, plan.key),
        output_dir=output_dir,
        train_converter=data.converter(plan.task, "train"),
        val_images=data.numpy(plan.task, "val").images,
        val_labels=data.numpy(plan.task, "val").labels,
        test_images=data.numpy(plan.task, "test").images if data.score_test else None,
        threads=cfg.threads_per_rank,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        deterministic=cfg.deterministic,
        freeze_batchnorm=plan.schedule.freeze_batchnorm,
        scale_by_ranks=cfg.scale_learning_rate_by_ranks,
        batchnorm_momentum=cfg.batchnorm_momentum,
        imagenet_base_url=cfg.imagenet_base_url,
        weights_cache_dir=cfg.weights_cache_dir,
        spec=spec,
        init_weights_sha256=init_sha256,
        init_from_stage=plan.init_from if plan.init_from in same_launch else None,
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


def rate_key(task: str, approach: str | None) -> str:
    """Key of one stage-3 model in ``train.stage3_learning_rates`` and in ``allmtl tune``'s choices."""
    return f"{task}/{approach}"


def stage_learning_rate(cfg: TrainConfig, plan: StagePlan, pretrained: bool) -> tuple[float, str]:
    """The stage's base rate and the config key it came from.

    Stage 3: ``train.stage3_learning_rates`` (``<task>/<approach>``, then ``<approach>``: the values
    ``allmtl tune`` chose on validation data); otherwise ``finetune_learning_rate`` when the stage
    starts from trained weights (if set), else ``learning_rate``.
    """
    schedule = plan.schedule
    if plan.stage == "stage3":
        for key in (rate_key(plan.task, plan.approach), str(plan.approach)):
            if key in cfg.stage3_learning_rates:
                return float(cfg.stage3_learning_rates[key]), f"train.stage3_learning_rates.{key}"
    if pretrained and schedule.finetune_learning_rate is not None:
        return schedule.finetune_learning_rate, f"train.{plan.stage}.finetune_learning_rate"
    return schedule.learning_rate, f"train.{plan.stage}.learning_rate"


def _evaluate(
    spark, lake: Lakehouse, data: _DataCache, plan: StagePlan, model_id: str, scores: dict
) -> tuple[dict[str, float], dict]:
    """Accuracy, AUC and macro F1 on the validation and held-out test parts; per-case rows to ``predictions``.

    Args:
        scores: part -> (n, k) class scores of the kept weights, as rank 0 computed them on the
            arrays of ``data.numpy(task, part)`` (the job sent them in that order).

    Returns:
        The metrics, and per part (arrays, class scores) for the calibration fit (``trust_fit``).
    """
    parts = ("val", "test") if data.score_test else ("val",)
    outputs = {}
    for part in parts:
        arrays = data.numpy(plan.task, part)
        if len(arrays.labels):
            outputs[part] = (arrays, scores[part])
    return _score_parts(spark, lake, model_id, plan.class_names, outputs), outputs


def cross_entropy(labels: np.ndarray, scores: np.ndarray, n_classes: int) -> float:
    """Mean cross-entropy of class scores (sklearn's ``log_loss``) without its "do not sum to one" warning.

    Keras' float32 softmax rows, clipped away from 0, no longer sum to 1 exactly; they are renormalised
    in float64 first (what ``log_loss`` did itself before scikit-learn 1.5).
    """
    from sklearn.metrics import log_loss

    clipped = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return float(log_loss(labels, clipped, labels=list(range(n_classes))))


def _score_parts(spark, lake: Lakehouse, model_id: str, class_names, outputs: dict) -> dict[str, float]:
    """Metrics per part and the per-case ``predictions`` rows of one model.

    Args:
        outputs: part -> (``Arrays`` of the part, (n, k) class scores).

    Returns:
        ``<part>_accuracy``, ``_macro_f1``, ``_auc``, ``_n``, ``_loss`` (cross-entropy) per part.
    """
    from allmtl_spark.metrics.classification import compute_classification_metrics

    metrics, rows = {}, []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for part, (arrays, scores) in outputs.items():
        report = compute_classification_metrics(arrays.labels, scores, list(class_names))
        metrics[f"{part}_accuracy"] = float(report.accuracy)
        metrics[f"{part}_macro_f1"] = float(report.macro.f1)
        metrics[f"{part}_auc"] = float(report.roc.macro.auc) if report.roc is not None else float("nan")
        metrics[f"{part}_n"] = float(len(arrays.labels))
        metrics[f"{part}_loss"] = cross_entropy(arrays.labels, scores, len(class_names))
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
        tracking.log_inputs(lake, record.input_tables)
        return ModelRecord(**{**asdict(record), "mlflow_run_id": run.info.run_id})


def _plot_inputs(lake: Lakehouse, run_id: str, data: _DataCache, plans: list[StagePlan]) -> str | None:
    """``<reports>/train/<run_id>/inputs.png``: what each task's classifier sees (its validation originals)."""
    from allmtl_spark.training.curves import plot_example_inputs

    sets = {}
    for task in dict.fromkeys(p.task for p in plans):
        arrays = data.numpy(task, "val")
        if len(arrays.labels):
            sets[task] = (arrays.images, np.asarray(arrays.labels), data.example_set(task).class_names)
    if not sets:
        return None
    folder = os.path.join(lake.reports, "train", run_id)
    os.makedirs(folder, exist_ok=True)
    path = plot_example_inputs(sets, os.path.join(folder, "inputs.png"))
    print(f"[{run_id}] classifier inputs (validation, per class): {path}", flush=True)
    return path


def _plot_curves(lake: Lakehouse, run_id: str, results: dict[str, StageResult]) -> str | None:
    from allmtl_spark.training.curves import plot_training_curves

    histories = {k: r.history for k, r in results.items() if r.history}
    if not histories:
        return None
    folder = os.path.join(lake.reports, "train", run_id)
    os.makedirs(folder, exist_ok=True)
    return plot_training_curves(histories, os.path.join(folder, "training_curves.png"), f"training run {run_id}")
