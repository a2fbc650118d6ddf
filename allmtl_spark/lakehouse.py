"""Delta table access: create, read, idempotent MERGE with retry on concurrent commits.

Tables are path-based (``<lakehouse.path>/<table>``) by default, or managed tables addressed by
name (``<catalog>.<schema>.<table>``) when ``lakehouse.catalog`` and ``lakehouse.schema`` are set:
Unity Catalog on Databricks (which allows no table on files inside a volume), Spark's session
catalog elsewhere. Every table access goes through this module, so the rest of the code never
knows which.

All writes go through ``merge_new_rows``: an insert-only MERGE keyed by the table's merge keys.
Running the same write twice, or two writers at once, leaves exactly one row per key: Delta's
optimistic concurrency makes the second committer fail with a ``Concurrent*Exception`` and the
retry re-reads the table, finds the keys present and inserts nothing.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from allmtl_spark.config.schema import LakehouseConfig
from allmtl_spark.errors import LakehouseError
from allmtl_spark.syncpoints import sync_point
from allmtl_spark.tables import Table

log = logging.getLogger(__name__)

_RETRYABLE = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT",
    "FileAlreadyExistsException",
)


def resolve_root(path: str) -> str:
    """Absolute local path for a plain folder; URIs (s3://, dbfs:/, abfss://, file:/) unchanged."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:
        return path
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class Lakehouse:
    """The lakehouse root and the derived folders for models, reports and MLflow.

    ``catalog`` and ``schema`` set: the tables are managed tables ``<catalog>.<schema>.<table>``
    and ``root`` holds only files (models, reports, caches).
    """

    root: str
    models: str
    reports: str
    mlflow_uri: str
    catalog: str | None = None
    schema: str | None = None
    cache_root: str | None = None  # lakehouse.cache_path; null: <root>/_cache

    @classmethod
    def from_config(cls, cfg: LakehouseConfig) -> Lakehouse:
        root = resolve_root(cfg.path)
        models = resolve_root(cfg.models_path) if cfg.models_path else f"{root}/_models"
        reports = resolve_root(cfg.reports_path) if cfg.reports_path else f"{root}/_reports"
        mlflow_uri = cfg.mlflow_tracking_uri or _file_uri(f"{root}/_mlruns")
        cache = resolve_root(cfg.cache_path) if cfg.cache_path else None
        return cls(root, models, reports, mlflow_uri, cfg.catalog, cfg.schema, cache)

    @property
    def cache(self) -> str:
        """Where files derived from model artifacts go (TFLite conversions): never beside the artifact."""
        return self.cache_root or f"{self.root}/_cache"

    @property
    def warehouse(self) -> str:
        """Spark's ``spark.sql.warehouse.dir`` for sessions the jobs start: in the cache, never the current folder."""
        return f"{self.cache}/spark-warehouse"

    @property
    def managed(self) -> bool:
        """True when tables are addressed by name in a catalog, False for path-based tables."""
        return self.catalog is not None and self.schema is not None

    def table_name(self, table: Table) -> str | None:
        """``<catalog>.<schema>.<table>`` for a managed table, None for a path-based one."""
        return f"{self.catalog}.{self.schema}.{table.name}" if self.managed else None

    def path(self, table: Table) -> str:
        """Where the table lives, for messages and MLflow: its name (managed) or its folder (path-based)."""
        return self.table_name(table) or table.path(self.root)

    def sql_ref(self, table: Table) -> str:
        """The table in SQL: `catalog`.`schema`.`table`, or delta.`<folder>`."""
        if self.managed:
            return ".".join(f"`{part}`" for part in (self.catalog, self.schema, table.name))
        return "delta.`{}`".format(table.path(self.root).replace("`", "``"))

    def check_writable(self) -> None:
        """Fail early, with the folder named, when a local lakehouse cannot be written."""
        if urlparse(self.root).scheme not in ("", "file"):
            return
        folder = self.root.removeprefix("file:")
        try:
            os.makedirs(folder, exist_ok=True)
            # unique per thread too: two jobs in one driver (concurrent scoring runs) check at once
            probe = os.path.join(folder, f".write-probe-{os.getpid()}-{uuid.uuid4().hex}")
            with open(probe, "w") as handle:
                handle.write("ok")
            os.remove(probe)
        except OSError as err:
            raise LakehouseError(
                f"lakehouse folder {folder} is not writable ({err.strerror}); "
                "set lakehouse.path to a folder you can write"
            ) from None


def _file_uri(path: str) -> str:
    return path if urlparse(path).scheme else f"file://{path}"


def table_exists(spark: SparkSession, lake: Lakehouse, table: Table) -> bool:
    from delta.tables import DeltaTable

    if lake.managed:
        try:
            return spark.catalog.tableExists(lake.table_name(table))
        except Exception as err:  # no such catalog, or no permission to list it
            raise _schema_error(lake, err) from None
    return DeltaTable.isDeltaTable(spark, lake.path(table))


def _schema_error(lake: Lakehouse, err: Exception) -> LakehouseError:
    return LakehouseError(
        f"cannot use schema {lake.catalog}.{lake.schema} ({str(err).strip().splitlines()[0]}); create it first "
        f"(CREATE SCHEMA {lake.catalog}.{lake.schema}) or grant USE CATALOG, USE SCHEMA and CREATE TABLE "
        "on it, or set lakehouse.catalog / lakehouse.schema to one you can use"
    )


def ensure_schema(spark: SparkSession, lake: Lakehouse) -> None:
    """Create ``<catalog>.<schema>`` if missing (managed tables only).

    Raises:
        LakehouseError: the schema cannot be created (no such catalog, or no permission), saying what to grant.
    """
    if not lake.managed:
        return
    try:
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{lake.catalog}`.`{lake.schema}`")
    except Exception as err:  # AnalysisException / a Unity Catalog permission error
        raise _schema_error(lake, err) from None


def ensure_table(spark: SparkSession, lake: Lakehouse, table: Table) -> None:
    """Create the table at its path with its declared schema, if it does not exist yet.

    A table made by an older release gets the nullable columns declared since (``ALTER TABLE ADD
    COLUMNS``; its rows read them as null), so a lakehouse never needs migrating by hand for them.

    Raises:
        LakehouseError: the table lacks a declared column that may not be null.
    """
    from delta.tables import DeltaTable

    def create() -> None:
        if lake.managed:
            spark.sql(_create_statement(lake, table))
            return
        builder = DeltaTable.createIfNotExists(spark).location(lake.path(table)).addColumns(table.schema)
        if table.partition_by:
            builder = builder.partitionedBy(*table.partition_by)
        builder.execute()

    if lake.managed and not table_exists(spark, lake, table):
        ensure_schema(spark, lake)
    # Two jobs creating one path table at once: the loser finds the winner's _delta_log folder before its
    # first commit, takes the table for existing and fails DELTA_TABLE_NOT_FOUND; the commit lands moments later.
    with_retries(create, f"create {table.name}", also=("DELTA_TABLE_NOT_FOUND",))
    # re-reads the schema on every attempt: another job may have added the columns meanwhile
    with_retries(lambda: _add_new_columns(spark, lake, table), f"add columns to {table.name}")


def _create_statement(lake: Lakehouse, table: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a managed table, with the declared columns' and table's docs as comments.

    SQL rather than ``DeltaTable.createIfNotExists().tableName()``: open-source Delta's builder takes
    only two-part names, and the comments show in Unity Catalog's Catalog Explorer.
    """

    def quoted(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    columns = []
    for f in table.schema.fields:
        column = f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
        if f.name in table.column_docs:
            column += f" COMMENT {quoted(table.column_docs[f.name])}"
        columns.append(column)
    partitions = f" PARTITIONED BY ({', '.join(f'`{c}`' for c in table.partition_by)})" if table.partition_by else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {lake.sql_ref(table)} ({', '.join(columns)}) USING DELTA{partitions} "
        f"COMMENT {quoted(table.description)}"
    )


def _missing_columns(spark: SparkSession, lake: Lakehouse, table: Table) -> list:
    return _absent(table, _reader(spark, lake, table).columns)


def _reader(spark: SparkSession, lake: Lakehouse, table: Table, version: int | None = None) -> DataFrame:
    """The stored table (optionally as of a Delta version), by name or by path."""
    if lake.managed:
        at = f" VERSION AS OF {int(version)}" if version is not None else ""
        return spark.sql(f"SELECT * FROM {lake.sql_ref(table)}{at}")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(lake.path(table))


def _absent(table: Table, columns: list[str]) -> list:
    """The fields ``table`` declares that ``columns`` (what is stored) lacks."""
    return [f for f in table.schema.fields if f.name not in columns]


def _add_new_columns(spark: SparkSession, lake: Lakehouse, table: Table) -> None:
    missing = _missing_columns(spark, lake, table)
    if not missing:
        return
    required = [f.name for f in missing if not f.nullable]
    if required:
        raise LakehouseError(
            f"table {table.name} at {lake.path(table)} lacks the column(s) {required}, which may not be null: "
            "it was made by an incompatible release; move it aside and rerun the job that writes it"
        )
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
    try:
        spark.sql(f"ALTER TABLE {lake.sql_ref(table)} ADD COLUMNS ({columns})")
    except Exception:
        # another job committed the same columns between our read and our ALTER ("already exists")
        if _missing_columns(spark, lake, table):
            raise


def read_table(spark: SparkSession, lake: Lakehouse, table: Table, version: int | None = None) -> DataFrame:
    """The table as a DataFrame (optionally as of a Delta version); empty with its schema if absent."""
    if not table_exists(spark, lake, table):
        if version is not None:
            raise LakehouseError(f"table {table.name} does not exist at {lake.path(table)}")
        return spark.createDataFrame([], table.schema)
    frame = _reader(spark, lake, table, version)
    # nullable columns declared after the table (or this version of it) was written read as null
    nulls = {f.name: F.lit(None).cast(f.dataType) for f in _absent(table, frame.columns) if f.nullable}
    return frame.withColumns(nulls) if nulls else frame


def table_version(spark: SparkSession, lake: Lakehouse, table: Table) -> int | None:
    """Latest Delta version of the table, or None if it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(spark, lake, table):
        return None
    if lake.managed:  # SQL: open-source Delta's DeltaTable.forName takes only two-part names
        return int(spark.sql(f"DESCRIBE HISTORY {lake.sql_ref(table)} LIMIT 1").select("version").first()[0])
    return int(DeltaTable.forPath(spark, lake.path(table)).history(1).select("version").first()[0])


def merge_new_rows(
    spark: SparkSession,
    lake: Lakehouse,
    table: Table,
    rows: DataFrame,
    update_condition: str | None = None,
    update_set: dict[str, str] | None = None,
) -> int:
    """Insert rows whose merge keys are not in the table yet; optionally update matched rows.

    Args:
        spark: the session.
        lake: the lakehouse.
        table: the target table declaration (its merge keys are the join keys).
        rows: rows with exactly the table's columns (extra columns are dropped).
        update_condition: SQL condition on ``t`` (target) and ``s`` (source) for matched rows to update.
        update_set: column -> SQL expression for that update.

    Returns:
        The number of rows inserted (from the Delta commit metrics; 0 when nothing was new).
    """
    ensure_table(spark, lake, table)
    source = rows.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in table.schema.fields])
    source = source.dropDuplicates(list(table.merge_keys))  # Delta would insert both copies of a key
    source = _pending_rows(spark, lake, table, source, update_condition if update_set else None)
    if source.isEmpty():
        return 0  # nothing new: no commit at all, so a rerun leaves the table version unchanged
    view = f"merge_source_{uuid.uuid4().hex}"
    source.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in table.merge_keys)
    update = ""
    if update_set:
        assignments = ", ".join(f"t.`{column}` = {expr}" for column, expr in update_set.items())
        condition = f" AND ({update_condition})" if update_condition else ""
        update = f"WHEN MATCHED{condition} THEN UPDATE SET {assignments} "
    # SQL MERGE (not the Python builder) because it returns the commit's row counts.
    statement = f"MERGE INTO {lake.sql_ref(table)} t USING {view} s ON {on} {update}WHEN NOT MATCHED THEN INSERT *"
    sync_point(f"merge:{table.name}")
    try:
        metrics = with_retries(lambda: spark.sql(statement).first(), f"merge into {table.name}")
    finally:
        spark.catalog.dropTempView(view)
    sync_point(f"merged:{table.name}")
    return int(metrics["num_inserted_rows"]) if metrics else 0


def delete_matched(spark: SparkSession, lake: Lakehouse, table: Table, keys: DataFrame, condition: str) -> int:
    """Delete the rows of ``table`` that match a row of ``keys`` under the SQL ``condition`` (``t``, ``s``).

    Nothing is committed when no row matches (checked first), so a rerun leaves the table version
    unchanged; concurrent commits are retried like ``merge_new_rows``.

    Returns:
        The number of rows deleted.
    """
    if not table_exists(spark, lake, table) or keys.isEmpty():
        return 0
    target = read_table(spark, lake, table)
    if target.alias("t").join(keys.alias("s"), F.expr(condition), "left_semi").isEmpty():
        return 0
    view = f"delete_keys_{uuid.uuid4().hex}"
    keys.createOrReplaceTempView(view)
    statement = f"MERGE INTO {lake.sql_ref(table)} t USING {view} s ON {condition} WHEN MATCHED THEN DELETE"
    try:
        metrics = with_retries(lambda: spark.sql(statement).first(), f"delete from {table.name}")
    finally:
        spark.catalog.dropTempView(view)
    return int(metrics["num_deleted_rows"]) if metrics else 0


def _pending_rows(spark, lake, table, source: DataFrame, update_condition: str | None) -> DataFrame:
    """Source rows the MERGE would act on: new keys, plus matched rows meeting the update condition.

    Delta commits a MERGE that has a WHEN MATCHED clause even when no row qualifies; filtering
    first lets the caller skip the MERGE, so an idempotent rerun writes no new table version.
    """
    target = read_table(spark, lake, table).select(
        *table.merge_keys,
        *([c for c in table.schema.fieldNames() if c not in table.merge_keys] if update_condition else []),
    )
    keys = list(table.merge_keys)
    new = source.join(target.select(*keys), keys, "left_anti")
    if not update_condition:
        return new
    matched = source.alias("s").join(target.alias("t"), [F.col(f"s.{k}") == F.col(f"t.{k}") for k in keys])
    return new.unionByName(matched.where(F.expr(update_condition)).select("s.*"))


def with_retries(action, what: str, attempts: int = 8, also: tuple[str, ...] = ()):
    """Run ``action``; on a Delta concurrent-commit conflict (or an error named in ``also``) wait
    (jittered backoff) and rerun it."""
    retryable = _RETRYABLE + also
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:  # py4j wraps the JVM exception: match on its text
            text = f"{type(err).__name__}: {err}"
            if attempt == attempts or not any(name in text for name in retryable):
                raise
            delay = min(10.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning(
                "%s hit a concurrent Delta commit (attempt %d/%d); retrying in %.1fs", what, attempt, attempts, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
