"""Scoring survives what production does to it, each shown with real processes and real kills.

- two separately submitted scoring jobs (``spark-submit``) that overlap: one row per (slide, model
  version) and a Delta conflict retried;
- an executor JVM killed while it runs a scoring task (``local-cluster``): Spark runs the task again;
- a driver killed between its commits: the next run writes the run's aggregates and report.

The processes meet at named points (``allmtl_spark.syncpoints``): that is what makes them overlap
for certain, and what lets a test kill a process at a chosen moment instead of at a random one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from allmtl_spark import tables
from allmtl_spark.config import load_config
from allmtl_spark.config.schema import SparkConfig
from allmtl_spark.lakehouse import read_table
from allmtl_spark.session import delta_jar_paths
from allmtl_spark.syncpoints import arrivals, holder
from tests.scoring.conftest import SLIDES, copy_model, overrides

pytestmark = pytest.mark.spark
REPO = Path(__file__).resolve().parents[2]


# Short-lived JVMs, started as `make demo` starts them: conf/demo.yaml's JVM options (the C1 JIT only).
C1_ONLY = load_config(str(REPO / "conf" / "demo.yaml")).spark.extra_conf["spark.driver.extraJavaOptions"]
C1_CONF = f"spark.driver.extraJavaOptions: '{C1_ONLY}', spark.executor.extraJavaOptions: '{C1_ONLY}'"


def _job_args(root: Path, model_id: str, *extra: str) -> list[str]:
    sets = [*overrides(root), f"score.model={model_id}", "score.runtime=keras", "score.cell_model=null", *extra]
    return [arg for s in sets for arg in ("--set", s)] + ["--no-report"]


def _env(sync: Path, points: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "ALLMTL_SYNC_DIR": str(sync),
        "ALLMTL_SYNC_POINTS": points,
        "ALLMTL_SYNC_TIMEOUT": "240",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _wait_for(path: Path, jobs: list[subprocess.Popen], seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and all(j.poll() is None for j in jobs):
        time.sleep(0.2)
    if not path.exists():
        outputs = [j.communicate(timeout=120)[0][-3000:] if j.poll() is not None else "(running)" for j in jobs]
        pytest.fail(f"{path.name} never appeared:\n" + "\n----\n".join(outputs))


def _rows_per_slide(spark, lake, model_id: str) -> list[int]:
    scores = read_table(spark, lake, tables.SLIDE_SCORES).where(f"model_version = '{model_id}'")
    return [r["count"] for r in scores.groupBy("content_sha256").count().collect()]


def test_two_submitted_scoring_jobs_overlap_and_leave_one_row_per_slide(spark, scoring_lake, tmp_path):
    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-submit-stage3-fab4")
    root = Path(lake.root).parent
    sync = tmp_path / "sync"
    sync.mkdir()
    # both drivers reach the slide_scores MERGE before either starts it: they overlap by construction
    env = _env(sync, "merge:slide_scores:2,merged:slide_scores:1")
    submit = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master", "local[1]",
        "--driver-memory", "1g",
        "--jars", ",".join(delta_jar_paths(SparkConfig())),
        "--driver-java-options", C1_ONLY,
        "--conf", "spark.ui.enabled=false",
        str(REPO / "jobs" / "score_archive.py"),
        "--config", str(REPO / "conf" / "demo.yaml"),
        *_job_args(root, record.model_id),
    ]  # fmt: skip
    jobs = [
        subprocess.Popen(submit, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=1500)[0] for job in jobs]

    assert [job.returncode for job in jobs] == [0, 0], "\n----\n".join(o[-3000:] for o in outputs)
    entered, left = arrivals(str(sync), "merge:slide_scores"), arrivals(str(sync), "merged:slide_scores")
    assert len({a["pid"] for a in entered}) == 2 and len({a["pid"] for a in left}) == 2  # two drivers
    assert max(a["time"] for a in entered) < min(a["time"] for a in left)  # both inside the MERGE at once
    assert any("hit a concurrent Delta commit" in o for o in outputs), "no Delta conflict was retried"
    assert _rows_per_slide(spark, lake, record.model_id) == [1] * SLIDES


def test_an_executor_killed_mid_task_is_replaced_and_every_slide_scored_once(spark, scoring_lake, tmp_path):
    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-executor-kill-stage3-fab4")
    root = Path(lake.root).parent
    sync = tmp_path / "sync"
    sync.mkdir()
    env = _env(sync, "score:task:hold")  # the first scoring task waits inside its worker until killed
    forwarded = ", ".join(f"spark.executorEnv.{k}: '{env[k]}'" for k in ("ALLMTL_SYNC_DIR", "ALLMTL_SYNC_POINTS"))
    args = [
        sys.executable, "-m", "allmtl_spark.cli", "score", "--master", "local-cluster[2,1,1024]",
        *_job_args(root, record.model_id, f"spark.extra_conf={{spark.ui.enabled: 'false', {C1_CONF}, {forwarded}}}"),
    ]  # fmt: skip
    job = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(sync / "score:task.held", [job])
    # the other executor's first task may have arrived too (and gone on): the held one is the holder's
    held = [a for a in arrivals(str(sync), "score:task") if a["pid"] == holder(str(sync), "score:task")][-1]
    executor = psutil.Process(held["ppid"]).parent()  # task worker <- pyspark daemon <- executor JVM
    assert "CoarseGrainedExecutorBackend" in " ".join(executor.cmdline())
    executor.send_signal(signal.SIGKILL)
    executor.wait(timeout=60)
    (sync / "score:task.release").touch()  # an orphaned worker, if any, stops waiting
    output = job.communicate(timeout=1500)[0]

    assert job.returncode == 0, output[-3000:]
    assert not psutil.pid_exists(executor.pid)
    # the held partition ran again after the kill: a new attempt of the task, or (when the lost executor also
    # held shuffle blocks the task needed) a task of a resubmitted stage attempt, whose attempt number is 0 again
    again = [
        a
        for a in arrivals(str(sync), "score:task")
        if a["partition"] == held["partition"] and a["time"] > held["time"] and a["pid"] != held["pid"]
    ]
    assert again, "the killed task was not attempted again"
    assert _rows_per_slide(spark, lake, record.model_id) == [1] * SLIDES


def test_a_driver_killed_between_commits_is_finished_by_the_next_run(spark, scoring_lake, tmp_path):
    from allmtl_spark.scoring.job import run_score

    cfg, lake, models = scoring_lake
    record = copy_model(spark, lake, models["stage3"], "tiny-driver-kill-stage3-fab4")
    root = Path(lake.root).parent
    sync = tmp_path / "sync"
    sync.mkdir()
    env = _env(sync, "merged:slide_scores:hold")  # the driver stops right after its first commit
    args = [
        sys.executable, "-m", "allmtl_spark.cli", "score", "--master", "local[1]", "--run-id", "killed-run",
        *_job_args(root, record.model_id, f"spark.extra_conf={{spark.ui.enabled: 'false', {C1_CONF}}}"),
    ]  # fmt: skip
    job = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    _wait_for(sync / "merged:slide_scores.held", [job])
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, between the slide_scores and later commits
    job.communicate(timeout=120)
    assert _rows_per_slide(spark, lake, record.model_id) == [1] * SLIDES
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where("scoring_run_id = 'killed-run'")
    assert aggregates.count() == 0

    keras = replace(cfg, score=replace(cfg.score, model=record.model_id, runtime="keras", cell_model=None))
    summary = run_score(spark, keras, lake, report=True)

    assert summary.pending == 0 and summary.completed == ["killed-run"]
    # read again: before the repair the table may not have existed (this test alone), and a frame of a
    # missing table stays empty
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where("scoring_run_id = 'killed-run'")
    counts = aggregates.where("scope = 'run' AND metric IN ('count', 'needs_review')").collect()
    assert sum(r["value"] for r in counts) == SLIDES  # each slide counted by its class or as needing review
    assert (Path(lake.reports) / "score" / "killed-run" / "index.html").is_file()
