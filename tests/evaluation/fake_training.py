"""Evaluating from pre-written models: what ``run_train`` writes for each fold, without training.

``prewrite_folds`` records every fold's split in ``splits`` (the real ``fold_parts`` on a fixed set
of slides), one ``models`` row per planned stage (every fold has its own stage 2), validation and test rows
in ``predictions`` (the multistage model is the more accurate one) and a ``history.json`` per stage
under ``<lake.models>/_checkpoints/<run_id>/<stage_key>/``, as the rank trainer does.
``FakeTrainer`` stands in for ``run_train``: it returns those models as a real ``TrainSummary``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from datetime import datetime

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.evaluation.baselines import BASELINE_APPROACHES
from allmtl_spark.evaluation.job import fold_run_id, trial_train_config
from allmtl_spark.lakehouse import merge_new_rows, read_table
from allmtl_spark.registry import ModelRecord, record_from_row
from allmtl_spark.training.job import StageResult, TrainSummary, baseline_model_id
from allmtl_spark.training.split import fold_parts, split_id
from allmtl_spark.training.stages import plan_stages

N_SLIDES = 24
SKILL = {"mtl": 0.85, "classical": 0.6, "colour": 0.3, "size": 0.45}  # chance of predicting the true class


def slide_frame(task: str, class_names: tuple[str, ...]) -> pd.DataFrame:
    """The fixed slides: key, item_id, group (two slides per patient), label."""
    keys = [hashlib.sha256(f"slide-{i}".encode()).hexdigest() for i in range(N_SLIDES)]
    labels = [class_names[(i // 2) % len(class_names)] for i in range(N_SLIDES)]
    return pd.DataFrame(
        {
            "key": keys,
            "item_id": [f"Im{i:03d}_{i % 2}" for i in range(N_SLIDES)],
            "group": [f"patient-{i // 2}" for i in range(N_SLIDES)],
            "label": labels,
        }
    )


def prewrite_folds(spark, lake, train, eval_id: str, trials: int, folds: int, seed: int) -> None:
    """Write the ``splits``, ``models``, ``predictions`` rows and histories of every fold of an evaluation,
    as ``run_train`` would, in one Delta write per table (the merges are the slow part on 2 busy cores)."""
    rows: dict[str, list[dict]] = {"splits": [], "predictions": [], "models": []}
    for trial in range(trials):
        cfg = trial_train_config(train, seed + trial, trial)
        for fold in range(folds):
            owner = fold_run_id(eval_id, trial, fold)
            for plan in plan_stages(cfg):
                _stage(lake, cfg, plan, owner, (folds, fold), rows)
                if plan.stage == "stage3" and plan.approach == "classical":  # the shape-blind baselines, per task
                    meta = slide_frame(plan.task, plan.class_names)
                    meta["part"] = fold_parts(meta, folds, fold, cfg.split.val_fraction, cfg.split.seed).to_numpy()
                    for approach in BASELINE_APPROACHES:
                        floor = replace(plan, approach=approach)
                        model_id = baseline_model_id(owner, approach, plan.task)
                        rows["predictions"] += _prediction_rows(model_id, meta, floor, seed)
    for table, name in ((tables.SPLITS, "splits"), (tables.PREDICTIONS, "predictions"), (tables.MODELS, "models")):
        merge_new_rows(spark, lake, table, spark.createDataFrame(rows[name], table.schema))


class FakeTrainer:
    """Callable with ``run_train``'s signature, returning the pre-written models of the fold.

    ``calls`` lists the run ids "trained"; ``fail_on`` makes that run raise once (a crash).
    """

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on

    def __call__(self, spark, cfg, lake, run_id=None, fold=None, stage2_from_run=None, **_) -> TrainSummary:
        if run_id == self.fail_on:
            self.fail_on = None
            raise RuntimeError(f"simulated crash in {run_id}")
        self.calls.append(run_id)
        plans = plan_stages(cfg)
        ids = [p.model_id((stage2_from_run or run_id) if p.stage == "stage2" else run_id) for p in plans]
        found = {
            r["model_id"]: r
            for r in read_table(spark, lake, tables.MODELS).where(F.col("model_id").isin(ids)).collect()
        }
        missing = sorted(set(ids) - set(found))
        if missing:
            raise AssertionError(f"models not pre-written: {missing}")
        results = [
            StageResult(p, record_from_row(found[i], lake), seconds=2.5) for p, i in zip(plans, ids, strict=True)
        ]
        tasks = {p.task: {} for p in plans if p.stage == "stage3"}  # the baselines' predictions were pre-written
        return TrainSummary(run_id, results, None, 0.0, dict.fromkeys(BASELINE_APPROACHES, tasks))


def _stage(lake, cfg, plan, owner: str, fold: tuple[int, int], rows: dict[str, list[dict]]) -> None:
    meta = slide_frame(plan.task, plan.class_names)
    if plan.stage == "stage3":
        meta["part"] = fold_parts(meta, fold[0], fold[1], cfg.split.val_fraction, cfg.split.seed).to_numpy()
    else:
        meta["part"] = "test"
    sid = split_id(meta["key"].tolist(), {"task": plan.task, "seed": cfg.split.seed, "fold": str(fold)})
    rows["splits"] += _split_rows(meta, sid, "slides" if plan.stage == "stage3" else "cells", fold)
    model_id = plan.model_id(owner)
    record = ModelRecord(
        model_id=model_id,
        run_id=owner,
        kind="classifier",
        stage=plan.stage,
        task=plan.task,
        class_names=list(plan.class_names),
        artifact_path=f"/nonexistent/{model_id}",
        artifact_sha256="0" * 64,
        config_json="{}",
        approach=plan.approach,
        backbone=plan.backbone,
        input_size=cfg.input_size,
        split_id=sid,
    )
    rows["models"].append(asdict(record))
    rows["predictions"] += _prediction_rows(model_id, meta, plan, cfg.split.seed)
    _write_history(lake, owner, plan.key, plan.schedule.epochs)


def _split_rows(meta: pd.DataFrame, sid: str, source: str, fold) -> list[dict]:
    return [
        {
            "split_id": sid,
            "source_table": source,
            "content_sha256": r.key,
            "item_id": r.item_id,
            "group_key": r.group,
            "label": r.label,
            "part": r.part,
            "fold": fold[1] if fold else None,
            "created_at": datetime(2026, 1, 1),
        }
        for r in meta.itertuples()
    ]


def _prediction_rows(model_id: str, meta: pd.DataFrame, plan, seed: int) -> list[dict]:
    rng = np.random.default_rng(int(hashlib.sha256(model_id.encode()).hexdigest()[:8], 16) + seed)
    names, k = plan.class_names, len(plan.class_names)
    rows = []
    for r in meta[meta["part"].isin(["val", "test"])].itertuples():
        label = names.index(r.label)
        right = rng.random() < SKILL.get(plan.approach or "mtl", 0.7)
        top = label if right else (label + 1 + int(rng.integers(k - 1))) % k
        scores = rng.dirichlet(np.ones(k)) * 0.4
        scores[top] += 0.6
        rows.append(
            {
                "model_id": model_id,
                "content_sha256": r.key,
                "part": r.part,
                "item_id": r.item_id,
                "label": label,
                "predicted": int(np.argmax(scores)),
                "scores": scores.tolist(),
                "created_at": datetime(2026, 1, 1),
            }
        )
    return rows


def _write_history(lake, run_id: str, key: str, epochs: int) -> None:
    folder = os.path.join(lake.models, "_checkpoints", run_id, key)
    os.makedirs(folder, exist_ok=True)
    decay = [0.5**e for e in range(epochs)]
    history = {
        "loss": decay,
        "accuracy": [1 - d / 2 for d in decay],
        "val_loss": [d * 1.2 for d in decay],
        "val_accuracy": [1 - d / 1.5 for d in decay],
    }
    with open(os.path.join(folder, "history.json"), "w") as handle:
        json.dump(history, handle)
