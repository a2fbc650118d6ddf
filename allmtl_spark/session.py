"""The one Spark session factory: local by default, any cluster unchanged.

Precedence for the master: an explicit ``master`` argument (the CLI's ``--master``), then
whatever spark-submit / the cluster already set, then ``SparkConfig.master``. Delta's JVM jars
come from the local Maven cache that ``make setup`` fills, from ``delta_packages`` coordinates,
or from the platform (Databricks ships Delta).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import SparkConfig

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
DEFAULT_JARS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "jars"
# Largest image the pipelines pass through a pandas UDF in one row: an RGB ALL-IDB1 slide
# decoded (2592 x 1944 x 3 bytes, about 15 MiB). The Arrow batch record limit is derived from it.
LARGEST_ROW_BYTES = 2592 * 1944 * 3
# Spark's default redaction pattern plus the patient key: Spark hides the values of matching
# properties (and of properties whose value matches, such as a command line holding
# privacy.patient_key=...) in its UI, event logs and REST API, e.g. spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY.
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|patient[._]?key"
# Spark's JVM logging (warnings and errors, without the notices every local start prints): spark-submit
# gets it from the Makefile, a JVM this module starts through SPARK_SUBMIT_OPTS (``log4j_options``).
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def quiet_third_party_warnings() -> None:
    """Filter out the library warnings a user cannot act on, one message each (``allmtl_spark.quiet``)."""
    from allmtl_spark import quiet

    quiet.install()


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (the JVM gateway exists)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jar_paths(cfg: SparkConfig) -> list[str]:
    """The Delta jar files to put on ``spark.jars``, or [] when none are cached.

    Looks in ``cfg.delta_jars_dir``, else ``$ALLMTL_JARS_DIR``, else ``<repo>/.cache/jars``.
    """
    folder = cfg.delta_jars_dir or os.environ.get("ALLMTL_JARS_DIR") or str(DEFAULT_JARS_DIR)
    jars = sorted(glob.glob(os.path.join(folder, "delta-*.jar")))
    if cfg.delta_jars_dir and not jars:
        raise ConfigError(
            f"spark.delta_jars_dir is {cfg.delta_jars_dir!r} but holds no delta-*.jar; run `make setup` "
            "or point it at the folder with delta-spark_2.12 and delta-storage jars"
        )
    return jars


def arrow_records_per_batch(cfg: SparkConfig, row_bytes: int = LARGEST_ROW_BYTES) -> int:
    """Records per Arrow batch that keep one batch within ``arrow_max_bytes_per_batch``.

    Spark 3.5 bounds Arrow batches by record count only, so the byte budget is turned into a
    record count using the largest row the pipelines pass (one decoded full-size slide).
    """
    by_bytes = max(1, cfg.arrow_max_bytes_per_batch // max(1, row_bytes))
    return max(1, min(cfg.arrow_max_records_per_batch, by_bytes))


def get_spark(cfg: SparkConfig, master: str | None = None, warehouse_dir: str | None = None) -> SparkSession:
    """Return the active Spark session or build one with Delta configured.

    Args:
        cfg: the ``spark`` config section.
        master: overrides both spark-submit's and the config's master (the CLI ``--master``).
        warehouse_dir: ``spark.sql.warehouse.dir`` of a new session unless ``cfg.extra_conf`` sets it
            (the jobs pass a folder in the lakehouse's cache: Spark otherwise makes ``./spark-warehouse``
            in whatever folder the command runs from).

    Returns:
        A SparkSession whose catalog is Delta's and whose Arrow batches are bounded.

    Raises:
        ConfigError: when Delta is not on the classpath, saying how to get it there.
    """
    quiet_third_party_warnings()
    active = SparkSession.getActiveSession()
    if active is None:
        builder = SparkSession.builder.appName(cfg.app_name)
        chosen_master = master or (None if launched_by_spark_submit() else cfg.master)
        if chosen_master and chosen_master.startswith("local"):
            # Local workers must run this interpreter (the venv), not whatever python3 is on PATH.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if chosen_master:
            builder = builder.master(chosen_master)
        for key, value in _static_conf(cfg, warehouse_dir).items():
            builder = builder.config(key, value)
        extra = log4j_options(cfg.extra_conf.get("spark.driver.extraJavaOptions", ""))
        with _submit_opts(extra):
            active = builder.getOrCreate()
        active.sparkContext.setLogLevel("ERROR")
    _set_runtime_conf(active, cfg)
    _check_delta(active)
    return active


def _static_conf(cfg: SparkConfig, warehouse_dir: str | None = None) -> dict[str, str]:
    conf = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.driver.memory": cfg.driver_memory,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Python workers are reused across tasks: this is what lets a model load once per worker.
        "spark.python.worker.reuse": "true",
        "spark.redaction.regex": REDACTION_REGEX,
    }
    if cfg.delta_packages:
        conf["spark.jars.packages"] = cfg.delta_packages
    else:
        jars = delta_jar_paths(cfg)
        if jars:
            conf["spark.jars"] = ",".join(jars)
    if warehouse_dir:
        conf["spark.sql.warehouse.dir"] = warehouse_dir
    conf.update(cfg.extra_conf)
    return conf


def log4j_options(driver_java_options: str = "") -> str:
    """The Java option naming the package's ``LOG4J_CONFIG`` for a JVM started here; "" where logging is set already.

    Only for a JVM this process starts (the CLI, the tests, a local notebook): Spark's default logging
    prints the native-Hadoop and loopback-address warnings and "Setting default log level" on every
    start. Nothing is added when the driver's Java options or SPARK_SUBMIT_OPTS name a log4j
    configuration, or the Spark installation has its own (``$SPARK_CONF_DIR/log4j2.properties``).
    """
    if "log4j2.configurationFile" in driver_java_options + os.environ.get("SPARK_SUBMIT_OPTS", ""):
        return ""
    site = os.environ.get("SPARK_CONF_DIR") or os.path.join(os.environ.get("SPARK_HOME", ""), "conf")
    if os.path.isfile(os.path.join(site, "log4j2.properties")) or not LOG4J_CONFIG.is_file():
        return ""
    return f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"


@contextlib.contextmanager
def _submit_opts(extra: str):
    """SPARK_SUBMIT_OPTS plus ``extra`` while PySpark launches its JVM: options of the driver JVM itself,
    beside (not replacing) any ``spark.driver.extraJavaOptions`` of the site's spark-defaults.conf."""
    before = os.environ.get("SPARK_SUBMIT_OPTS")
    if extra:
        os.environ["SPARK_SUBMIT_OPTS"] = f"{before or ''} {extra}".strip()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = before


def _set_runtime_conf(spark: SparkSession, cfg: SparkConfig) -> None:
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_records_per_batch(cfg)))
    spark.conf.set("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    if cfg.delta_snapshot_partitions is not None:
        spark.conf.set(DELTA_SNAPSHOT_PARTITIONS, str(cfg.delta_snapshot_partitions))


def _check_delta(spark: SparkSession) -> None:
    from py4j.java_gateway import JavaClass

    delta_class = spark._jvm.io.delta.tables.DeltaTable  # noqa: SLF001 - the one JVM probe we need
    if not isinstance(delta_class, JavaClass):
        raise ConfigError(
            "Delta Lake is not on Spark's classpath. Run `make setup` (caches the jars in .cache/jars), "
            "or set spark.delta_packages, or start spark-submit with "
            "--jars .cache/jars/delta-spark_2.12-3.3.2.jar,.cache/jars/delta-storage-3.3.2.jar"
        )
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA_EXTENSION not in extensions and "databricks" not in spark.conf.get("spark.app.name", "").lower():
        log.warning("spark.sql.extensions lacks %s; Delta SQL commands may not work", DELTA_EXTENSION)


def assert_on_driver() -> None:
    """Raise if called inside a Spark task: sessions and table writes belong to the driver."""
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        raise RuntimeError("this function must run on the Spark driver, not inside a task")
