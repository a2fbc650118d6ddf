"""Scoring survives losing a Python worker or an executor JVM (two executors on local-cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from allmtl_spark import tables
from allmtl_spark.lakehouse import read_table
from tests.scoring.conftest import SLIDES, copy_model

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _score_cluster(root: str, model_id: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "allmtl_spark.cli",
        "score",
        "--no-report",
        "--master",
        "local-cluster[2,1,1024]",
        "--set",
        f"lakehouse.path={root}/lakehouse",
        "--set",
        "segment.mask_source=roi",
        "--set",
        f"score.model={model_id}",
        "--set",
        "score.slides_per_partition=1",
        "--set",
        "privacy.patient_key=test",
        "--set",
        "score.source=null",
    ]  # the ingested slides only
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _victims(kind: str, under: int) -> list[psutil.Process]:
    """Scoring processes below the driver: Python workers busy on a task, or executor JVMs."""
    found = []
    for proc in psutil.Process(under).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if kind == "python" and "pyspark.daemon" in cmd and proc.cpu_percent(interval=0.2) > 20:
            found.append(proc)
        if kind == "jvm" and "CoarseGrainedExecutorBackend" in cmd:
            found.append(proc)
    return found


@pytest.mark.parametrize("kind", ["python", "jvm"])
def test_killing_a_worker_mid_scoring_still_scores_every_slide_once(spark, scoring_lake, kind):
    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], f"tiny-kill-{kind}-stage3-fab4")
    root = os.path.dirname(lake.root)
    job = _score_cluster(root, record.model_id)
    killed, deadline = None, time.time() + 600
    while killed is None and time.time() < deadline and job.poll() is None:
        victims = _victims(kind, job.pid)
        if victims:
            time.sleep(3)  # let the victim get into its slide
            victims[0].send_signal(signal.SIGKILL)
            killed = victims[0].pid
        time.sleep(1)
    output, _ = job.communicate(timeout=1200)
    assert killed is not None, f"no {kind} worker to kill appeared:\n{output[-3000:]}"
    assert job.returncode == 0, output[-3000:]
    scores = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{record.model_id}'")
    counts = [r["count"] for r in scores.groupBy("content_sha256").count().collect()]
    assert counts == [1] * SLIDES
