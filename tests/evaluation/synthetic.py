"""Hand-made cross-validation prediction tables for the evaluation tests (no Spark, no training)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

CLASS_NAMES = {"binary": ("normal", "ALL"), "fab4": ("normal", "L1", "L2", "L3")}


def _key(task: str, case: int) -> str:
    return hashlib.sha256(f"{task}-{case}".encode()).hexdigest()


def make_predictions(
    trials: int = 2,
    folds: int = 3,
    per_fold: int = 12,
    tasks=("binary", "fab4"),
    backbones=("InceptionV3",),
    skill=None,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-case test predictions of a repeated k-fold run: every case once per trial, in one fold.

    Args:
        skill: approach -> probability mass put on the true class (default mtl 0.5, classical 0.25):
            the multistage model is the better one.

    Returns:
        The ``predictions`` frame of ``allmtl_spark.evaluation.aggregate``.
    """
    skill = skill or {"mtl": 0.5, "classical": 0.25}
    rng = np.random.default_rng(seed)
    rows = []
    for task in tasks:
        k = len(CLASS_NAMES[task])
        n = folds * per_fold
        labels = np.arange(n) % k
        for trial in range(trials):
            fold_of = rng.permutation(np.arange(n) % folds)
            for backbone in backbones:
                for approach, mass in skill.items():
                    for case in range(n):
                        scores = rng.dirichlet(np.ones(k))
                        scores = (1 - mass) * scores + mass * np.eye(k)[labels[case]] * rng.uniform(0.3, 1.0)
                        scores = scores / scores.sum()
                        rows.append(
                            {
                                "trial": trial,
                                "fold": int(fold_of[case]),
                                "backbone": backbone,
                                "task": task,
                                "approach": approach,
                                "content_sha256": _key(task, case),
                                "item_id": f"Im{case:03d}",
                                "label": int(labels[case]),
                                "predicted": int(np.argmax(scores)),
                                "scores": scores.tolist(),
                            }
                        )
    return pd.DataFrame(rows)


def make_runs(predictions: pd.DataFrame, n_train: int = 20, n_val: int = 4) -> pd.DataFrame:
    """``evaluation_runs`` rows matching ``make_predictions`` (one per trial, fold and model)."""
    keys = ["trial", "fold", "backbone", "task", "approach"]
    runs = predictions.groupby(keys).size().rename("n_test").reset_index()
    runs["n_train"], runs["n_val"] = n_train, n_val
    runs["model_id"] = [
        f"eval-t{r.trial}-f{r.fold}-stage3-{r.task}-{r.approach}-{r.backbone.lower()}" for r in runs.itertuples()
    ]
    runs["split_id"] = [f"split-{r.task}-{r.trial}-{r.fold}" for r in runs.itertuples()]
    runs["seconds"] = 1.5
    return runs
