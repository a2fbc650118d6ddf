"""The evaluation job's orchestration on real local Spark + Delta, with a stand-in trainer (no training)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.evaluation.job import expected_models, fold_run_id, run_evaluate, trial_train_config
from allmtl_spark.lakehouse import read_table, table_version
from tests.evaluation.fake_training import N_SLIDES, FakeTrainer, prewrite_folds

TRAIN = ["train.tasks=[binary, fab4]", "train.backbones=[InceptionV3]", "train.stage3.epochs=3"]
EVALUATE = ["evaluate.folds=2", "evaluate.trials=1", "evaluate.bootstrap_resamples=50", "evaluate.seed=7"]
EVAL_TABLES = (tables.EVALUATION_RUNS, tables.EVALUATION_METRICS)


@pytest.mark.unit
def test_trial_config_changes_only_the_seeds():
    train = load_config(None, TRAIN).train
    trial = trial_train_config(train, 2025, 3)
    assert (trial.split.seed, trial.augment.seed, trial.seed) == (2025, 2025, train.seed + 3)
    assert trial.stage3 == train.stage3 and trial.split.val_fraction == train.split.val_fraction
    assert expected_models(train) == {("InceptionV3", t, a) for t in ("binary", "fab4") for a in ("mtl", "classical")}


@pytest.mark.spark
def test_evaluate_trains_every_fold_writes_tables_and_report_and_resumes(spark, lake, tmp_path):
    cfg = load_config(None, [*TRAIN, *EVALUATE, f"evaluate.report_dir={tmp_path / 'report'}"])
    prewrite_folds(spark, lake, cfg.train, "ev1", trials=1, folds=2, seed=7)
    trainer = FakeTrainer(fail_on=fold_run_id("ev1", 0, 1))

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id="ev1", train_fn=trainer)
    summary = run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id="ev1", train_fn=trainer)

    # Resumed: fold 0, finished before the crash, was not trained again.
    assert trainer.calls == ["ev1-t0-f0", "ev1-t0-f1"] and (summary.trained, summary.skipped) == (1, 1)
    runs = read_table(spark, lake, tables.EVALUATION_RUNS).toPandas()
    assert len(runs) == 2 * (4 + 4)  # folds x (2 tasks x 2 approaches + colour-only and size-only per task)
    colour, size = runs[runs["approach"] == "colour"], runs[runs["approach"] == "size"]
    assert set(colour["backbone"]) == {"inner-histogram+logreg"} and set(colour["task"]) == {"binary", "fab4"}
    assert set(size["backbone"]) == {"area+logreg"} and set(size["task"]) == {"binary", "fab4"}
    assert set(runs["split_seed"]) == set(runs["augment_seed"]) == {7}  # evaluate.seed + trial 0
    assert (runs["n_test"] > 0).all() and (runs["n_train"] + runs["n_val"] + runs["n_test"] == N_SLIDES).all()
    assert set(runs["train_run_id"]) == {"ev1-t0-f0", "ev1-t0-f1"}
    assert (runs[~runs["approach"].isin(["colour", "size"])]["seconds"] == 2.5).all()

    metrics = read_table(spark, lake, tables.EVALUATION_METRICS).toPandas()
    keys = ["trial", "fold", "backbone", "task", "approach"]
    assert len(metrics[keys].drop_duplicates()) == (2 + 1) * 8  # (folds + pooled) x models
    pooled = metrics[(metrics["fold"] == -1) & (metrics["metric"] == "n_test")]
    assert (pooled["value"] == N_SLIDES).all()  # every slide tested once per trial
    confusion = metrics[(metrics["fold"] == -1) & (metrics["metric"] == "confusion") & (metrics["task"] == "fab4")]
    classes = ("normal", "L1", "L2", "L3")
    assert set(confusion["class_name"]) == {f"{t}/{p}" for t in classes for p in classes}

    tests = summary.results.comparisons
    nb = tests[tests["test"] == "Nadeau-Bengio corrected t"]
    assert set(nb["task"]) == {"binary", "fab4"} and (nb["level"] == "fold").all() and (nb["n_pairs"] == 2).all()
    binary = runs[runs["task"] == "binary"]
    assert summary.results.test_train_ratio["binary"] == pytest.approx((binary["n_test"] / binary["n_train"]).mean())
    assert len(summary.results.mcnemar) == 2  # tasks x trials
    assert summary.report_path == str(tmp_path / "report" / "index.html") and os.path.getsize(summary.report_path)
    assert os.path.isfile(tmp_path / "report" / "figures" / "training_curves_trial-0-fold-0.png")
    printed = summary.format()
    assert "HTML report:" in printed and "fab4    colour" in printed and "fab4    size" in printed
    # The headline leads: the corrected difference over trials x folds, with what the design can detect.
    head = summary.results.headline
    assert set(head["task"]) == {"binary", "fab4"} and (head["n_pairs"] == 2).all()
    tested = head[head["p_value"].notna()]
    assert len(tested) >= 1 and (tested["detectable_difference"] > 0).all()
    assert "multistage - classical accuracy" in printed
    page = Path(summary.report_path).read_text()
    assert page.index("Headline: multistage vs classical") < page.index("Summary</h2>")

    # Again: nothing trained, no new table versions.
    versions = [table_version(spark, lake, t) for t in EVAL_TABLES]
    assert run_evaluate(spark, cfg.evaluate, cfg.train, lake, eval_id="ev1", train_fn=trainer).trained == 0
    assert len(trainer.calls) == 2 and [table_version(spark, lake, t) for t in EVAL_TABLES] == versions

    # Resuming with another fold count would mix two different splits: refused, naming the key.
    other = load_config(None, [*TRAIN, *EVALUATE, "evaluate.folds=3"])
    with pytest.raises(ConfigError, match=r"evaluate\.folds=3 but evaluation ev1 was run with 2 folds"):
        run_evaluate(spark, other.evaluate, other.train, lake, eval_id="ev1", train_fn=trainer)
