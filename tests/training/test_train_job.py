"""The whole training job, end to end, and kill-and-resume (slow tier: real training)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from allmtl_spark.registry import file_sha256, record_from_row
from allmtl_spark.training.job import run_train

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
    rows = {r["model_id"]: record_from_row(r) for r in read_table(spark, lake, tables.MODELS).collect()}
    for result in summary.results:
        record = rows[result.record.model_id]
        assert file_sha256(record.model_file) == record.artifact_sha256
        assert {"slides", "cells", "segmented_slides", "slide_cells"} <= set(record.input_tables)
        assert 0.0 <= record.metrics["test_accuracy"] <= 1.0 and record.split_id
    predictions = read_table(spark, lake, tables.PREDICTIONS).where("model_id LIKE 'e2e-%'")
    assert predictions.where("part = 'test'").count() > 0
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
