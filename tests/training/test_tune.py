"""allmtl tune: the same grid for both approaches, choices on validation only, everything recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.config.schema import LakehouseConfig, TuneConfig
from allmtl_spark.lakehouse import Lakehouse
from allmtl_spark.registry import ModelRecord
from allmtl_spark.training.job import StageResult, TrainSummary, check_tuning_record
from allmtl_spark.training.stages import plan_stages
from allmtl_spark.training.tune import choose, run_tune

pytestmark = pytest.mark.unit
BEST = {"binary/mtl": 0.001, "binary/classical": 0.003, "fab4/mtl": 0.0003, "fab4/classical": 0.001}


class GridTrainer:
    """Stand-in for run_train: validation loss is lowest at BEST[model]; records how it was called."""

    def __init__(self):
        self.calls = []

    def __call__(self, spark, cfg, lake, run_id=None, fold=None, stage2_from_run=None, score_test=True, **_):
        self.calls.append({"run_id": run_id, "fold": fold, "stage2": stage2_from_run, "score_test": score_test})
        results = []
        for plan in plan_stages(cfg):
            rate = cfg.stage3_learning_rates.get(plan.approach)
            best = BEST.get(f"{plan.task}/{plan.approach}")
            loss = abs(rate - best) * 100 + 0.3 if plan.stage == "stage3" else 0.5
            metrics = {"val_loss": loss, "val_accuracy": 1 - loss / 2, "val_auc": 0.9, "val_n": 12.0}
            record = ModelRecord(plan.model_id(run_id), run_id, "classifier", plan.stage, plan.task, [], "", "", "{}")
            results.append(StageResult(plan, ModelRecord(**{**record.__dict__, "metrics": metrics})))
        return TrainSummary(run_id, results, None, 0.0)


def test_both_approaches_get_the_same_grid_and_choices_come_from_validation_only(tmp_path):
    train = load_config("conf/demo-full.yaml", ["train.tasks=[binary, fab4]"]).train  # both tasks
    tune = TuneConfig(learning_rates=(0.0003, 0.001, 0.003))
    lake = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path / "lake")))
    trainer = GridTrainer()
    summary = run_tune(None, train, tune, lake, tune_id="tu", fold=(5, 2), train_fn=trainer)
    assert summary.choices == BEST
    assert [c["run_id"] for c in trainer.calls] == ["tu-r0", "tu-r1", "tu-r2"]
    assert all(c["score_test"] is False and c["fold"] == (5, 2) and c["stage2"] == "tu-r0" for c in trainer.calls)
    budget = summary.scores.groupby("approach").size().to_dict()
    assert budget == {"classical": 6, "mtl": 6}  # 3 rates x 2 tasks each: an equal search budget
    record = json.loads(Path(summary.path).read_text())
    assert record["choices"] == BEST and record["test_part_read"] is False and record["grid"] == [0.0003, 0.001, 0.003]
    assert record["split"]["fold"] == [5, 2] and len(record["scores"]) == 12
    assert "stage3_learning_rates: {binary/classical: 0.003" in summary.format()


def test_choice_minimises_loss_or_maximises_accuracy_and_breaks_ties_to_the_smaller_rate():
    scores = pd.DataFrame(
        {
            "task": ["binary"] * 3,
            "approach": ["mtl"] * 3,
            "learning_rate": [0.003, 0.001, 0.0003],
            "val_loss": [0.4, 0.2, 0.2],
            "val_accuracy": [0.9, 0.8, 0.7],
        }
    )
    assert choose(scores, "val_loss") == {"binary/mtl": 0.0003}
    assert choose(scores, "val_accuracy") == {"binary/mtl": 0.003}


def test_training_refuses_rates_that_are_not_the_recorded_choices(tmp_path):
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"tune_id": "tu", "grid": [0.001], "metric": "val_loss", "choices": BEST}))
    rates = "{binary/mtl: 0.001, binary/classical: 0.003, fab4/mtl: 0.0003, fab4/classical: 0.001}"
    both = "train.tasks=[binary, fab4]"
    cfg = load_config(
        "conf/demo-full.yaml", [both, f"train.stage3_learning_rates={rates}", f"train.tuning_record={path}"]
    )
    cfg = cfg.train
    assert "validation slides only" in check_tuning_record(cfg, plan_stages(cfg))
    bad = load_config(
        "conf/demo-full.yaml", [both, f"train.tuning_record={path}", "train.stage3_learning_rates={mtl: 0.01}"]
    )
    with pytest.raises(ConfigError, match=r"binary/mtl: config 0.01, tune 0.001"):
        check_tuning_record(bad.train, plan_stages(bad.train))
    with pytest.raises(ConfigError, match="stage3_learning_rates.*has key 'fab5/mtl'"):
        load_config(None, ["train.stage3_learning_rates={fab5/mtl: 0.1}"])
