"""The cross-validation evaluation job (``allmtl evaluate``, ``spark-submit jobs/evaluate_mtl.py``).

For every trial t and fold f the ``train`` section's stages are trained by ``run_train`` (the code
path of ``allmtl train``) as run ``<eval_id>-t<t>-f<f>``, fold f of k being the test part; the
folds of a trial share the stage-2 models of run ``<eval_id>-t<t>``. Each finished fold is
recorded in ``evaluation_runs``. Then the test-part ``predictions`` of those models are gathered to
the driver, every metric is written to ``evaluation_metrics``, the approaches are compared, and the
report folder is written. Every fold trains its own stage 2 on the cells of its training side only
(``run_train`` checks and records that no slide or patient crosses stages or sides).

Resumable: started again with the same ``eval_id``, a (trial, fold) whose ``evaluation_runs`` rows
are complete is skipped, and inside an interrupted fold ``run_train`` skips the stages whose
``models`` rows exist.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import EvaluateConfig, TrainConfig, TuneConfig
from allmtl_spark.evaluation.aggregate import EvaluationResults, evaluate_predictions
from allmtl_spark.evaluation.baselines import BASELINE_APPROACHES, BASELINES, LEGACY_BACKBONES, legacy_baseline_rows
from allmtl_spark.evaluation.report import headline_accuracy, write_report
from allmtl_spark.ids import check_run_id
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table
from allmtl_spark.session import assert_on_driver
from allmtl_spark.training.job import baseline_model_id
from allmtl_spark.training.rank import checkpoint_dir, load_history
from allmtl_spark.training.stages import plan_stages

log = logging.getLogger(__name__)
ModelKey = tuple[str, str, str]  # backbone, task, approach


@dataclass
class EvaluationSummary:
    """What ``run_evaluate`` did and where the report is."""

    eval_id: str
    folds: int
    trials: int
    trained: int  # (trial, fold) pairs trained in this call
    skipped: int  # (trial, fold) pairs already complete
    results: EvaluationResults
    report_path: str
    seconds: float

    def format(self) -> str:
        lines = [
            f"evaluation {self.eval_id}: {self.trials} trial(s) x {self.folds} folds; trained {self.trained} "
            f"fold(s), {self.skipped} already done ({self.seconds / 60:.1f} min)"
        ]
        lines.append("  accuracy over trials x folds (mean ± sd per fold; J = number of folds):")
        for row in headline_accuracy(self.results.summary).itertuples(index=False):
            sd = f" ± {row.accuracy_sd:.3f}" if math.isfinite(row.accuracy_sd) else ""
            lines.append(
                f"    {row.task:<7} {row.approach:<10} {row.backbone:<18} {row.accuracy:.3f}{sd}  "
                f"(J = {row.folds_x_trials})"
            )
        for row in self.results.headline.itertuples(index=False):
            if not math.isfinite(row.ci_low):
                lines.append(
                    f"  {row.task} {row.backbone}: multistage - classical accuracy {row.mean_difference:+.3f}, "
                    f"J = {row.n_pairs}: {row.verdict}"
                )
                continue
            lines.append(
                f"  {row.task} {row.backbone}: multistage - classical accuracy {row.mean_difference:+.3f} "
                f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}], Nadeau-Bengio p = {row.p_value:.3g}, J = {row.n_pairs}; "
                f"detectable with 80% power: {_or_na(row.detectable_difference)}; {row.verdict}"
            )
        if self.results.headline.empty:
            lines.append("  multistage vs classical: not tested (needs both approaches and >= 2 folds)")
        lines.append(f"  HTML report: {self.report_path}")
        return "\n".join(lines)


def _or_na(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def trial_run_id(eval_id: str, trial: int) -> str:
    """Run id owning a trial's stage-2 models (shared by its folds)."""
    return f"{eval_id}-t{trial}"


def fold_run_id(eval_id: str, trial: int, fold: int) -> str:
    """Run id of one fold's training."""
    return f"{eval_id}-t{trial}-f{fold}"


def trial_train_config(train: TrainConfig, seed: int, trial: int = 0) -> TrainConfig:
    """The ``train`` section with the trial's split and augmentation seed, and weights seed ``train.seed + trial``."""
    return replace(
        train,
        split=replace(train.split, seed=seed),
        augment=replace(train.augment, seed=seed),
        seed=train.seed + trial,
    )


def expected_models(train: TrainConfig) -> set[ModelKey]:
    """The stage-3 models every fold produces: (backbone, task, approach)."""
    return {(p.backbone, p.task, p.approach) for p in plan_stages(train) if p.stage == "stage3"}


def run_evaluate(
    spark: SparkSession,
    cfg: EvaluateConfig,
    train: TrainConfig,
    lake: Lakehouse,
    eval_id: str | None = None,
    train_fn: Callable | None = None,
    tune: TuneConfig | None = None,
) -> EvaluationSummary:
    """Repeated k-fold cross-validation of the ``train`` section, the metric tables and the report.

    Args:
        spark: the session (driver only).
        cfg: the ``evaluate`` section.
        train: the ``train`` section (backbones, tasks, approaches, schedules).
        lake: the lakehouse.
        eval_id: resume this evaluation; a new id by default.
        train_fn: ``run_train`` (the default) or a stand-in with its signature, for tests.
        tune: the ``tune`` section, used with ``evaluate.nested_tuning`` (every fold searches its
            stage-3 rates on its own training side first); None: the defaults.

    Returns:
        The summary, with the computed results and the path of ``index.html``.
    """
    assert_on_driver()
    started = time.time()
    eval_id = check_run_id(eval_id, "--eval-id") if eval_id else f"eval-{uuid.uuid4().hex[:8]}"
    if train_fn is None:
        from allmtl_spark.training.job import run_train as train_fn
    done = finished_folds(spark, lake, eval_id, cfg.folds, expected_models(train))
    trained = 0
    for trial in range(cfg.trials):
        trial_cfg = trial_train_config(train, cfg.seed + trial, trial)
        for fold in range(cfg.folds):
            if (trial, fold) in done:
                print(f"[{eval_id}] trial {trial} fold {fold}: already evaluated, skipped", flush=True)
                continue
            print(f"[{eval_id}] trial {trial} fold {fold} of {cfg.folds}: training", flush=True)
            fold_cfg, stage2_from = trial_cfg, None
            if cfg.nested_tuning:
                from allmtl_spark.training.tune import run_tune

                tune_id = f"{fold_run_id(eval_id, trial, fold)}-tune"
                tuned = run_tune(spark, trial_cfg, tune or TuneConfig(), lake, tune_id, (cfg.folds, fold), train_fn)
                print(tuned.format(), flush=True)
                fold_cfg = replace(trial_cfg, stage3_learning_rates=tuned.choices, tuning_record=tuned.path)
                stage2_from = f"{tune_id}-r0"  # same split and seed: the tune's stage 2 is this fold's
            summary = train_fn(
                spark,
                fold_cfg,
                lake,
                run_id=fold_run_id(eval_id, trial, fold),
                fold=(cfg.folds, fold),
                stage2_from_run=stage2_from,
                colour_bins=cfg.colour_bins,
            )
            record_fold(spark, lake, eval_id, trial, fold, cfg.folds, trial_cfg, summary)
            trained += 1
    results, runs = evaluate_run(spark, cfg, lake, eval_id, expected_models(train))
    folder = cfg.report_dir or os.path.join(lake.reports, "evaluation", eval_id)
    histories = load_histories(lake, runs, train, eval_id, cfg.curve_trials)
    path = write_report(results, folder, f"Evaluation {eval_id}", report_settings(eval_id, cfg, train), histories)
    return EvaluationSummary(
        eval_id, cfg.folds, cfg.trials, trained, cfg.trials * cfg.folds - trained, results, path, time.time() - started
    )


def finished_folds(
    spark: SparkSession, lake: Lakehouse, eval_id: str, n_folds: int, expected: set[ModelKey]
) -> set[tuple[int, int]]:
    """(trial, fold) pairs whose ``evaluation_runs`` rows cover every expected model.

    Raises:
        ConfigError: the evaluation was started with another fold count (its folds would not match).
    """
    rows = (
        read_table(spark, lake, tables.EVALUATION_RUNS)
        .where(F.col("eval_id") == eval_id)
        .select("trial", "fold", "n_folds", "backbone", "task", "approach")
        .collect()
    )
    other = sorted({r["n_folds"] for r in rows} - {n_folds})
    if other:
        raise ConfigError(
            f"evaluate.folds={n_folds} but evaluation {eval_id} was run with {other[0]} folds; "
            f"set evaluate.folds={other[0]} to resume it, or start a new evaluation"
        )
    found: dict[tuple[int, int], set[ModelKey]] = {}
    for r in rows:
        found.setdefault((r["trial"], r["fold"]), set()).add((r["backbone"], r["task"], r["approach"]))
    return {key for key, models in found.items() if expected <= models}


def record_fold(
    spark: SparkSession,
    lake: Lakehouse,
    eval_id: str,
    trial: int,
    fold: int,
    n_folds: int,
    trial_cfg: TrainConfig,
    summary,
) -> int:
    """Write the ``evaluation_runs`` rows of one trained fold (one per stage-3 model).

    Args:
        summary: the fold's ``TrainSummary`` (stage results with their ``models`` records).

    Returns:
        Rows inserted.
    """
    stage3 = [r for r in summary.results if r.plan.stage == "stage3"]
    sizes = split_sizes(spark, lake, [r.record.split_id for r in stage3])
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    split_of_task = {r.plan.task: r.record.split_id for r in stage3}
    backbones = {b.approach: b.backbone for b in BASELINES}
    for approach, tasks in (getattr(summary, "baselines", {}) or {}).items():
        for task in tasks:
            counts = sizes.get(split_of_task.get(task), {})
            rows.append(
                {
                    "eval_id": eval_id,
                    "trial": trial,
                    "fold": fold,
                    "backbone": backbones[approach],
                    "task": task,
                    "approach": approach,
                    "n_folds": n_folds,
                    "model_id": baseline_model_id(summary.run_id, approach, task),
                    "train_run_id": summary.run_id,
                    "split_id": split_of_task.get(task, ""),
                    "n_train": counts.get("train", 0),
                    "n_val": counts.get("val", 0),
                    "n_test": counts.get("test", 0),
                    "split_seed": trial_cfg.split.seed,
                    "augment_seed": trial_cfg.augment.seed,
                    "seconds": None,
                    "finished_at": now,
                }
            )
    for result in stage3:
        record, counts = result.record, sizes.get(result.record.split_id, {})
        rows.append(
            {
                "eval_id": eval_id,
                "trial": trial,
                "fold": fold,
                "backbone": record.backbone,
                "task": record.task,
                "approach": record.approach,
                "n_folds": n_folds,
                "model_id": record.model_id,
                "train_run_id": summary.run_id,
                "split_id": record.split_id,
                "n_train": counts.get("train", 0),
                "n_val": counts.get("val", 0),
                "n_test": counts.get("test", 0),
                "split_seed": trial_cfg.split.seed,
                "augment_seed": trial_cfg.augment.seed,
                "seconds": None if result.skipped else float(result.seconds),
                "finished_at": now,
            }
        )
    frame = spark.createDataFrame(rows, tables.EVALUATION_RUNS.schema)
    return merge_new_rows(spark, lake, tables.EVALUATION_RUNS, frame)


def split_sizes(spark: SparkSession, lake: Lakehouse, split_ids: list[str]) -> dict[str, dict[str, int]]:
    """Slides per part (train / val / test) of each split in ``splits``."""
    rows = (
        read_table(spark, lake, tables.SPLITS)
        .where(F.col("split_id").isin(split_ids) & (F.col("source_table") == "slides"))
        .groupBy("split_id", "part")
        .count()
    )
    sizes: dict[str, dict[str, int]] = {}
    for r in rows.collect():
        sizes.setdefault(r["split_id"], {})[r["part"]] = int(r["count"])
    return sizes


def evaluate_run(
    spark: SparkSession, cfg: EvaluateConfig, lake: Lakehouse, eval_id: str, models: set[ModelKey] | None = None
) -> tuple[EvaluationResults, pd.DataFrame]:
    """Gather an evaluation's test predictions, compute every metric and test, write ``evaluation_metrics``.

    Args:
        models: the (backbone, task, approach) models to include (and the shape-blind baselines of their
            folds); None: all recorded ones. Only the
            trials and folds within ``cfg.trials`` and ``cfg.folds`` are used.

    Returns:
        The results and the ``evaluation_runs`` rows (pandas).
    """
    runs = (
        read_table(spark, lake, tables.EVALUATION_RUNS)
        .where((F.col("eval_id") == eval_id) & (F.col("trial") < cfg.trials) & (F.col("fold") < cfg.folds))
        .toPandas()
    )
    if models is not None:
        keep = [
            (b, t, a) in models or a in BASELINE_APPROACHES
            for b, t, a in runs[["backbone", "task", "approach"]].itertuples(index=False)
        ]
        runs = runs[pd.Series(keep, index=runs.index, dtype=bool)].reset_index(drop=True)
    legacy = legacy_baseline_rows(runs["approach"].tolist(), runs["backbone"].tolist())
    if legacy.any():
        retired = ", ".join(f"{b} ({LEGACY_BACKBONES[b]})" for b in sorted(set(runs["backbone"][legacy])))
        print(
            f"[{eval_id}] left out {int(legacy.sum())} baseline row(s) of a retired baseline: {retired}; "
            "start a new --eval-id to have the current baselines on every fold",
            flush=True,
        )
        runs = runs[~legacy].reset_index(drop=True)
    if runs.empty:
        raise ConfigError(f"evaluation {eval_id} has no finished folds in {lake.path(tables.EVALUATION_RUNS)}")
    predictions, class_names = gather_predictions(spark, lake, runs)
    results = evaluate_predictions(
        predictions,
        runs,
        class_names,
        compare_metrics=cfg.compare_metrics,
        n_resamples=cfg.bootstrap_resamples,
        confidence=cfg.confidence,
        seed=cfg.seed,
        test_train_ratio=cfg.test_train_ratio,
    )
    write_metrics(spark, lake, eval_id, results.metrics)
    return results, runs


def gather_predictions(
    spark: SparkSession, lake: Lakehouse, runs: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """The test-part ``predictions`` of the runs' models, with their trial/fold/model keys, and the class names.

    Returns:
        ``(predictions, task -> class names)``; see ``aggregate`` for the frame's columns.

    Raises:
        RuntimeError: a model has no test predictions, or one task's models disagree on the classes.
    """
    ids = sorted(runs["model_id"].unique())
    table = read_table(spark, lake, tables.MODELS)
    temperature = F.col("temperature") if "temperature" in table.columns else F.lit(None).cast("double")
    models = (
        table.where(F.col("model_id").isin(ids))
        .select("model_id", "task", "class_names", temperature.alias("temperature"))
        .collect()
    )
    class_names: dict[str, tuple[str, ...]] = {}
    for m in models:
        names = tuple(m["class_names"])
        if class_names.setdefault(m["task"], names) != names:
            raise RuntimeError(
                f"task {m['task']}: models disagree on the classes: {names} and {class_names[m['task']]}"
            )
    cases = (
        read_table(spark, lake, tables.PREDICTIONS)
        .where(F.col("model_id").isin(ids) & (F.col("part") == "test"))
        .select("model_id", "content_sha256", "item_id", "label", "predicted", "scores")
        .toPandas()
    )
    missing = sorted(set(ids) - set(cases["model_id"]))
    if missing:
        raise RuntimeError(f"no test predictions for model(s) {', '.join(missing)} in {lake.path(tables.PREDICTIONS)}")
    keys = runs[["model_id", "trial", "fold", "backbone", "task", "approach"]]
    predictions = cases.merge(keys, on="model_id", validate="many_to_one")
    temperatures = {m["model_id"]: m["temperature"] for m in models}
    predictions["temperature"] = predictions["model_id"].map(temperatures).astype(float)  # NaN: none fitted
    predictions["scores"] = [list(map(float, s)) for s in predictions["scores"]]
    order = ["trial", "fold", "backbone", "task", "approach", "content_sha256"]
    return predictions.sort_values(order).reset_index(drop=True), class_names


def write_metrics(spark: SparkSession, lake: Lakehouse, eval_id: str, metrics: pd.DataFrame) -> int:
    """Insert the long metrics into ``evaluation_metrics`` (NaN as null); returns rows inserted."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    records = metrics.to_dict("records")
    for record in records:
        record["eval_id"], record["computed_at"] = eval_id, now
        record["value"] = record["value"] if math.isfinite(record["value"]) else None
    rows = spark.createDataFrame(records, tables.EVALUATION_METRICS.schema)
    return merge_new_rows(spark, lake, tables.EVALUATION_METRICS, rows)


def load_histories(
    lake: Lakehouse, runs: pd.DataFrame, train: TrainConfig, eval_id: str, n_trials: int
) -> dict[str, dict[str, dict]]:
    """Keras histories of the first ``n_trials`` trials, one figure per (trial, fold).

    Read from ``<lake.models>/_checkpoints/<run_id>/<stage_key>/history.json`` (the rank trainer
    writes it every epoch); each fold has its own stage 2. Missing files are skipped.

    Returns:
        figure label (``trial t fold f``) -> {panel label: history}.
    """
    figures: dict[str, dict[str, dict]] = {}
    plans = plan_stages(train)
    pairs = runs[runs["trial"] < n_trials][["trial", "fold"]].drop_duplicates().sort_values(["trial", "fold"])
    for trial, fold in pairs.itertuples(index=False):
        panels = {}
        for plan in plans:
            history = load_history(checkpoint_dir(lake.models, fold_run_id(eval_id, trial, fold), plan.key))
            if history:
                panels[plan.key] = history
        if panels:
            figures[f"trial {trial} fold {fold}"] = panels
    return figures


def report_settings(eval_id: str, cfg: EvaluateConfig, train: TrainConfig) -> dict[str, object]:
    """The settings listed at the top of the report."""
    return {
        "evaluation id": eval_id,
        "folds (k)": cfg.folds,
        "trials (R)": cfg.trials,
        "seeds": f"trial t splits and augments with seed {cfg.seed} + t",
        "backbones": ", ".join(train.backbones),
        "tasks": ", ".join(train.tasks),
        "approaches": ", ".join(train.approaches),
        "input size": train.input_size,
        "stage 2 / stage 3 epochs": f"{train.stage2.epochs} / {train.stage3.epochs}",
        "validation fraction": train.split.val_fraction,
        "augmented copies per image": train.augment.copies_per_image,
        "bootstrap resamples": cfg.bootstrap_resamples,
        "confidence": cfg.confidence,
        "Nadeau-Bengio n_test/n_train": cfg.test_train_ratio if cfg.test_train_ratio else "from the fold sizes",
        "stage 2": "trained per fold on the cells of the fold's training-side slides and patients only",
        "stage-3 learning rates": tuning_statement(cfg, train),
        "shape-blind baselines": (
            f"colour-only ({cfg.colour_bins} bins per channel of the cells' inner pixels) and size-only ("
            + size_statement(train)
            + "), logistic regression, same folds"
        ),
    }


def size_statement(train: TrainConfig) -> str:
    """What the size-only baseline's features mean under the train section's view, in words."""
    if train.slide_view != "montage":
        return "the share of the slide image its isolated cells cover"
    if train.cell_tile_um:
        return f"each tile's cell area: tiles {train.cell_tile_um:g} um wide"
    return "each tile's cell area relative to the slide's largest cell, which fills its tile (cell_tile_um null)"


def tuning_statement(cfg: EvaluateConfig, train: TrainConfig) -> str:
    """Where the stage-3 learning rates of the evaluated models came from, in words."""
    if cfg.nested_tuning:
        return "chosen in every fold by allmtl tune on that fold's training side (validation slice; nested)"
    rates = ", ".join(f"{k} {v:g}" for k, v in sorted(train.stage3_learning_rates.items()))
    if train.tuning_record:
        return (
            f"from allmtl tune ({train.tuning_record}) on the validation part of split seed {train.split.seed}; "
            "not nested: those validation slides are test slides in some folds (the same for both approaches)"
            + (f"; {rates}" if rates else "")
        )
    base = f"stage3 learning_rate {train.stage3.learning_rate:g} for both approaches" + (f"; {rates}" if rates else "")
    return f"stated defaults, not tuned ({base})"
