"""The whole training job, end to end, and kill-and-resume (slow tier: real training)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from allmtl_spark.registry import file_sha256, record_from_row
from allmtl_spark.training.job import run_train
from allmtl_spark.trust import read_trust

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_train_registers_every_stage_with_matching_hash_and_data_versions(spark, train_lake):
    cfg, lake, _ = train_lake
    summary = run_train(spark, cfg.train, lake, run_id="e2e")
    keys = [r.plan.key for r in summary.results]
    assert keys == [
        "stage2-cell_binary-inceptionv3",
        "stage3-binary-mtl-inceptionv3",
        "stage3-binary-classical-inceptionv3",
    ]
    # one Horovod launch per run: every stage trained in the same rank process (TensorFlow, Horovod and
    # Gloo started once), the multistage stage 3 from the stage-2 model that launch had just saved
    assert len({r.rank_process for r in summary.results}) == 1
    stored = {r["model_id"]: r for r in read_table(spark, lake, tables.MODELS).collect()}
    rows = {model_id: record_from_row(r, lake) for model_id, r in stored.items()}
    for result in summary.results:
        record = rows[result.record.model_id]
        # a training run's models are what `latest` chooses from; their folders are recorded inside the lakehouse
        assert record.purpose == "train"
        assert stored[record.model_id]["artifact_path"] == f"_models/{record.model_id}"
        assert file_sha256(record.model_file) == record.artifact_sha256
        assert {"slides", "cells", "segmented_slides", "slide_cells"} <= set(record.input_tables)
        assert record.split_id and record.metrics["test_n"] > 0
        # calibrated on the validation part only: the temperature in the table, model.json and trust.json
        trust = read_trust(record.artifact_path, record.trust_sha256, record.model_id)
        assert record.temperature > 0 and trust["temperature"] == record.temperature
        assert record.spec()["calibration"]["temperature"] == record.temperature
        assert trust["calibration"]["n_val"] == record.metrics["val_n"]
        assert {"val_ece", "val_ece_calibrated", "test_ece", "test_ece_calibrated"} <= set(record.metrics)
        # slide classifiers carry the out-of-distribution check, thresholded on validation
        assert ("ood" in trust) == (record.stage == "stage3")
        if record.stage == "stage3":
            assert trust["ood"]["n_val"] == record.metrics["val_n"] and trust["ood"]["threshold"] > 0
            # the range check, and one fused threshold over every check
            assert trust["ood"]["range_threshold"] >= cfg.train.ood_range_margin
            assert len(trust["ood"]["low"]) == len(trust["ood"]["features"]) and trust["ood_fused"]["threshold"] > 0
            assert "feature_ood" not in trust  # train.ood_feature_check is off by default
            # measured, not fitted: the held-out test slides the check flags (an in-distribution flag rate)
            assert 0 <= record.metrics["test_ood_flagged"] <= record.metrics["test_ood_n"] == record.metrics["test_n"]
    predictions = read_table(spark, lake, tables.PREDICTIONS).where("model_id LIKE 'e2e-%'")
    assert predictions.where("part = 'test'").count() > 0
    # Every split of the run passed the cross-stage check before training and says so in `splits`.
    split_ids = {r.record.split_id for r in summary.results}
    checks = read_table(spark, lake, tables.SPLITS).where(F.col("split_id").isin(sorted(split_ids)))
    assert {r["overlap_check"][:7] for r in checks.select("overlap_check").collect()} == {"passed:"}
    # The shape-blind baselines were fitted beside the stage-3 models and scored on the same test slides.
    assert set(summary.baselines) == {"colour", "size"}
    assert all(set(tasks) == {"binary"} and tasks["binary"]["test_n"] > 0 for tasks in summary.baselines.values())
    assert os.path.isfile(summary.curves_path)
    # A registered stage's checkpoints are freed (train.keep_checkpoints defaults to false); the
    # history and best-epoch record stay for the evaluation report's curves.
    left = {name for _, _, files in os.walk(os.path.join(lake.models, "_checkpoints", "e2e")) for name in files}
    assert "history.json" in left and left <= {"history.json", "best.json"}
    again = run_train(spark, cfg.train, lake, run_id="e2e")  # finished stages are skipped
    assert all(r.skipped for r in again.results)


def test_killed_run_resumes_from_the_last_completed_epoch(train_lake, tmp_path):
    _, lake, root = train_lake
    args = [
        sys.executable,
        "-m",
        "allmtl_spark.cli",
        "train",
        "--run-id",
        "resume",
        "--set",
        f"lakehouse.path={root}/lakehouse",
        "--set",
        "train.approaches=[mtl]",
        "--set",
        "train.stage2.epochs=3",
        "--set",
        "train.input_size=75",
        "--set",
        "train.tasks=[binary]",
        "--set",
        "train.stage2.batch_size=4",
        "--set",
        "train.stage3.batch_size=4",
        "--set",
        "train.stage3.epochs=1",
        "--set",
        "train.stage2_task=cell_binary",
        "--set",
        "train.augment.copies_per_image=1",
        "--set",
        "spark.master=local[2]",
        "--set",
        "segment.mask_source=roi",  # as train_lake segmented: publishing builds the scorer with this segmenter
        "--set",
        "train.num_proc=2",  # conf/demo.yaml trains on one rank; resume must work across two
    ]
    checkpoints = os.path.join(lake.models, "_checkpoints", "resume", "stage2-cell_binary-inceptionv3")
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while not os.path.exists(os.path.join(checkpoints, "ckpt-1.index")):
            assert first.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint after 15 minutes"
            time.sleep(2)
        os.killpg(first.pid, signal.SIGKILL)  # the driver, Spark and both Horovod ranks
        first.wait()
    second = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "[stage2-cell_binary-inceptionv3] resuming from" in output
    done = int(
        output.split("[stage2-cell_binary-inceptionv3] resuming from")[1]
        .split("epoch(s) already done")[0]
        .rsplit(":", 1)[1]
    )
    assert done >= 1
    assert f"[stage2-cell_binary-inceptionv3] epoch {done + 1}/3" in output
    assert "[stage2-cell_binary-inceptionv3] epoch 1/3" not in output


def test_same_seed_same_metrics_validation_scored_once_equal_starting_weights(spark, train_lake):
    """Two runs of one config and seed on one rank: identical metrics and predictions to the last digit.

    Also: the kept epoch's validation accuracy in the Keras history (one finite pass per epoch) equals
    the accuracy of the registered model on the validation part (every item once); with the old endless
    validation stream read for ceil(n / batch) steps, the two differed. And the stage-2 model and the
    classical stage-3 model started from the same backbone weights.
    """
    from dataclasses import replace

    cfg, lake, _ = train_lake
    # seed 0, the default: Petastorm takes a reader seed of 0 as no seed (training/rank.py: reader_seed)
    one_rank = replace(cfg.train, num_proc=1, threads_per_rank=2, seed=0)
    first = run_train(spark, one_rank, lake, run_id="det-a")
    second = run_train(spark, one_rank, lake, run_id="det-b")
    for a, b in zip(first.results, second.results, strict=True):
        assert a.record.metrics == b.record.metrics, a.plan.key
        assert a.history == b.history, a.plan.key
    scores = {
        run: {
            (r["model_id"].split(run)[1], r["content_sha256"], r["part"]): r["scores"]
            for r in read_table(spark, lake, tables.PREDICTIONS).where(F.col("model_id").startswith(run)).collect()
        }
        for run in ("det-a", "det-b")
    }
    assert scores["det-a"] == scores["det-b"] and len(scores["det-a"]) > 0
    for result in first.results:
        spec = result.record.spec()
        kept = spec["kept_epoch"]["epoch"]
        assert result.history["val_accuracy"][kept - 1] == pytest.approx(
            result.record.metrics["val_accuracy"], abs=1e-6
        )
    digests = {r.plan.key: r.record.spec()["init_digest"] for r in first.results}
    assert digests["stage2-cell_binary-inceptionv3"] == digests["stage3-binary-classical-inceptionv3"]
