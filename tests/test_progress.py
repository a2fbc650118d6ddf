"""Progress lines of a real local Spark job (allmtl_spark.progress)."""

from __future__ import annotations

import re
import time

import pytest

from allmtl_spark.config import ConfigError
from allmtl_spark.config.schema import SparkConfig
from allmtl_spark.progress import format_duration, format_progress_line, spark_progress


def _slow_partition(rows):
    time.sleep(0.4)
    return [sum(1 for _ in rows)]


@pytest.mark.spark
def test_a_running_spark_job_prints_counts_rate_and_eta(spark):
    lines: list[str] = []
    with spark_progress(spark, "segment", 0.3, out=lines.append):
        counted = spark.sparkContext.parallelize(range(24), 12).mapPartitions(_slow_partition).collect()
    assert sum(counted) == 24  # the job's result is untouched
    pattern = re.compile(
        r"^segment: (\d+)/12 tasks \(\d+%\), 1 stage\(s\) running, [0-9.e+]+ tasks/s, ETA (\S+), \S+ so far$"
    )
    matches = [pattern.match(line) for line in lines]
    assert lines and all(matches), lines
    done = [int(m.group(1)) for m in matches]
    assert done == sorted(done) and done[-1] < 12  # counts rise; the stage was seen while running
    assert any(m.group(2) != "-" for m in matches), lines  # an ETA once tasks finished


@pytest.mark.spark
def test_interval_zero_prints_nothing(spark):
    lines: list[str] = []
    with spark_progress(spark, "score", 0, out=lines.append):
        spark.sparkContext.parallelize(range(8), 4).mapPartitions(_slow_partition).collect()
    assert lines == []


@pytest.mark.unit
def test_line_format_and_config_key():
    line = format_progress_line("score", done=40, total=100, running=2, rate=2.0, elapsed_s=15)
    assert line == "score: 40/100 tasks (40%), 2 stage(s) running, 2 tasks/s, ETA 30s, 15s so far"
    assert format_duration(75) == "1m15s" and format_duration(3725) == "1h02m"
    with pytest.raises(ConfigError, match="progress_interval_s"):
        SparkConfig(progress_interval_s=-1)
