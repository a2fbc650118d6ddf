"""Equal, validation-only hyper-parameter search (``allmtl tune``).

Each grid value of ``tune.learning_rates`` trains every stage-3 model of the ``train`` section (each
task, multistage and classical alike) through ``run_train`` on the training part of one split, and
scores it on that split's validation part; the test part is never read (``score_test=False``). The
multistage models of all grid values share one stage 2, trained once from the same starting weights
as the classical models. The choice per model is the rate with the best validation ``tune.metric``;
grid, every validation score and the choices go to ``tune.json`` and ``tune.csv``, and the lines to
put into the config are printed.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, replace

import pandas as pd

from allmtl_spark.config.schema import TrainConfig, TuneConfig
from allmtl_spark.lakehouse import Lakehouse
from allmtl_spark.session import assert_on_driver

TUNE_FILE, TUNE_TABLE = "tune.json", "tune.csv"


@dataclass
class TuneSummary:
    tune_id: str
    scores: pd.DataFrame  # task, approach, learning_rate, val_loss, val_accuracy, val_auc, val_n, model_id
    choices: dict[str, float]  # "<task>/<approach>" -> chosen rate
    metric: str
    path: str
    seconds: float

    def format(self) -> str:
        lines = [f"tune {self.tune_id}: {len(self.scores)} stage-3 trainings ({self.seconds / 60:.1f} min)"]
        lines.append(f"  {'model':<18} {'rate':>8} {'val loss':>9} {'val acc':>8} {'val auc':>8}")
        for row in self.scores.itertuples(index=False):
            mark = " <- chosen" if math.isclose(self.choices[f"{row.task}/{row.approach}"], row.learning_rate) else ""
            lines.append(
                f"  {row.task + '/' + row.approach:<18} {row.learning_rate:>8g} {row.val_loss:>9.4f} "
                f"{row.val_accuracy:>8.3f} {row.val_auc:>8.3f}{mark}"
            )
        budget = self.scores.groupby("approach").size().to_dict()
        lines.append(f"  budget (stage-3 trainings per approach): {budget}; chosen on validation {self.metric}")
        rates = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.choices.items()))
        lines.append("  put into the config (train section):")
        lines.append(f"    stage3_learning_rates: {{{rates}}}")
        lines.append(f"    tuning_record: {self.path}")
        return "\n".join(lines)


def choose(scores: pd.DataFrame, metric: str) -> dict[str, float]:
    """Best rate per (task, approach) on ``metric`` (loss: lowest, accuracy: highest; ties: the smaller rate).

    Args:
        scores: one row per (task, approach, learning_rate) with the validation metrics.
        metric: ``val_loss`` or ``val_accuracy``.

    Returns:
        ``"<task>/<approach>"`` -> rate.
    """
    sign = 1.0 if metric == "val_loss" else -1.0
    ranked = scores.assign(_key=sign * scores[metric]).sort_values(["_key", "learning_rate"], kind="stable")
    best = ranked.groupby(["task", "approach"], sort=True).head(1)
    return {f"{r.task}/{r.approach}": float(r.learning_rate) for r in best.itertuples(index=False)}


def run_tune(
    spark,
    train: TrainConfig,
    cfg: TuneConfig,
    lake: Lakehouse,
    tune_id: str | None = None,
    fold: tuple[int, int] | None = None,
    train_fn=None,
) -> TuneSummary:
    """Train every stage-3 model once per grid value and choose each model's rate on validation data.

    Args:
        spark: the session (driver only).
        train: the ``train`` section (its split, or ``fold``'s training side, is what the search sees).
        cfg: the ``tune`` section.
        lake: the lakehouse.
        tune_id: resume this search (finished grid values are skipped through ``run_train``'s resume).
        fold: ``(n_folds, index)``: search inside that fold's training side (nested in cross-validation).
        train_fn: ``run_train`` (default) or a stand-in with its signature, for tests.

    Returns:
        The scores, the choices and the path of ``tune.json``.
    """
    assert_on_driver()
    started = time.time()
    from allmtl_spark.ids import check_run_id

    tune_id = check_run_id(tune_id, "--run-id") if tune_id else f"tune-{uuid.uuid4().hex[:8]}"
    if train_fn is None:
        from allmtl_spark.training.job import run_train as train_fn
    rows = []
    first_run = f"{tune_id}-r0"
    for i, rate in enumerate(cfg.learning_rates):
        grid_cfg = replace(train, stage3_learning_rates={a: float(rate) for a in train.approaches}, tuning_record=None)
        print(f"[{tune_id}] grid value {i + 1}/{len(cfg.learning_rates)}: stage-3 learning rate {rate:g}", flush=True)
        summary = train_fn(
            spark, grid_cfg, lake, run_id=f"{tune_id}-r{i}", fold=fold, stage2_from_run=first_run, score_test=False
        )
        for result in summary.results:
            if result.plan.stage != "stage3":
                continue
            m = result.record.metrics
            rows.append(
                {
                    "task": result.plan.task,
                    "approach": result.plan.approach,
                    "learning_rate": float(rate),
                    "val_loss": m.get("val_loss", math.nan),
                    "val_accuracy": m.get("val_accuracy", math.nan),
                    "val_auc": m.get("val_auc", math.nan),
                    "val_n": m.get("val_n", math.nan),
                    "model_id": result.record.model_id,
                }
            )
    scores = pd.DataFrame(rows).sort_values(["task", "approach", "learning_rate"]).reset_index(drop=True)
    choices = choose(scores, cfg.metric)
    folder = cfg.output or os.path.join(lake.reports, "tune", tune_id)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, TUNE_FILE)
    record = {
        "tune_id": tune_id,
        "grid": [float(r) for r in cfg.learning_rates],
        "metric": cfg.metric,
        "choices": choices,
        "budget": {str(k): int(v) for k, v in scores.groupby("approach").size().items()},
        "split": {
            "fold": list(fold) if fold else None,
            "seed": train.split.seed,
            "val_fraction": train.split.val_fraction,
        },
        "weights_seed": train.seed,
        "test_part_read": False,
        "scores": scores.to_dict("records"),
    }
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
    scores.to_csv(os.path.join(folder, TUNE_TABLE), index=False)
    return TuneSummary(tune_id, scores, choices, cfg.metric, path, time.time() - started)
