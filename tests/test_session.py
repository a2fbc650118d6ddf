import pytest

from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.config.schema import SparkConfig
from allmtl_spark.session import DELTA_SNAPSHOT_PARTITIONS, _set_runtime_conf

pytestmark = pytest.mark.spark


def test_snapshot_partitions_key_reaches_the_session_and_null_leaves_it(spark):
    before = spark.conf.get(DELTA_SNAPSHOT_PARTITIONS, None)
    try:
        _set_runtime_conf(spark, SparkConfig(shuffle_partitions=2, delta_snapshot_partitions=3))
        assert spark.conf.get(DELTA_SNAPSHOT_PARTITIONS) == "3"
        _set_runtime_conf(spark, SparkConfig(shuffle_partitions=2, delta_snapshot_partitions=None))
        assert spark.conf.get(DELTA_SNAPSHOT_PARTITIONS) == "3"  # null: whatever the session has
    finally:
        _set_runtime_conf(spark, SparkConfig(shuffle_partitions=2, delta_snapshot_partitions=int(before or 2)))


def test_snapshot_partitions_must_be_positive():
    with pytest.raises(ConfigError, match=r"^spark\.delta_snapshot_partitions must be >= 1 or null"):
        load_config(None, ["spark.delta_snapshot_partitions=0"])
    assert load_config("conf/demo.yaml").spark.delta_snapshot_partitions == 2
    assert load_config("conf/paper.yaml").spark.delta_snapshot_partitions is None


def test_a_jvm_started_from_python_logs_through_the_packages_log4j_configuration(spark, tmp_path, monkeypatch):
    from allmtl_spark.session import LOG4J_CONFIG, log4j_options

    # the tests' session is started here, as the CLI's and a local notebook's are
    assert spark._jvm.java.lang.System.getProperty("log4j2.configurationFile") == LOG4J_CONFIG.as_uri()  # noqa: SLF001
    monkeypatch.delenv("SPARK_SUBMIT_OPTS", raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert log4j_options() == f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"
    # a configuration the user or the site gives wins
    assert log4j_options("-XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile=mine.xml") == ""
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", "-Dlog4j2.configurationFile=file:/etc/spark/log4j2.xml")
    assert log4j_options() == ""
    monkeypatch.delenv("SPARK_SUBMIT_OPTS")
    (tmp_path / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert log4j_options() == ""


@pytest.mark.slow
def test_a_session_started_from_python_prints_none_of_sparks_start_up_notices(tmp_path):
    """A JVM the CLI or a notebook starts logs through the package's log4j2.properties, as spark-submit does."""
    import os
    import subprocess
    import sys

    script = (
        "from allmtl_spark.config.schema import SparkConfig\n"
        "from allmtl_spark.session import get_spark\n"
        "spark = get_spark(SparkConfig(master='local[1]', driver_memory='1g', shuffle_partitions=1))\n"
        "print(spark.range(3).count())\n"
        "spark.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0 and done.stdout.strip().endswith("3"), done.stderr[-2000:]
    # Spark's default logging prints both on every local start (no native Hadoop library here)
    assert "Setting default log level" not in done.stderr and "NativeCodeLoader" not in done.stderr, done.stderr
