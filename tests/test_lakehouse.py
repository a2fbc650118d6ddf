"""Delta tables made by an older release gain the columns declared since, on real local Delta."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from allmtl_spark.errors import LakehouseError
from allmtl_spark.lakehouse import ensure_table, merge_new_rows, read_table, table_version
from allmtl_spark.tables import POINT, Table

pytestmark = pytest.mark.spark

_OLD = StructType([StructField("key", StringType(), False), StructField("value", IntegerType(), False)])


def _declared(*extra: StructField) -> Table:
    return Table(name="things", schema=StructType([*_OLD.fields, *extra]), merge_keys=("key",), description="t")


def test_an_older_table_gains_new_nullable_columns_and_keeps_its_rows(spark, lake):
    old = _declared()
    merge_new_rows(spark, lake, old, spark.createDataFrame([("a", 1), ("b", 2)], _OLD))
    before = table_version(spark, lake, old)
    new = _declared(StructField("note", StringType()), StructField("count", IntegerType()))  # as the tables' DDL

    # readers see the new columns as null before any writer has added them
    assert [r.asDict() for r in read_table(spark, lake, new).orderBy("key").collect()] == [
        {"key": "a", "value": 1, "note": None, "count": None},
        {"key": "b", "value": 2, "note": None, "count": None},
    ]
    inserted = merge_new_rows(spark, lake, new, spark.createDataFrame([("b", 9, "x", 3), ("c", 3, "y", 4)], new.schema))

    assert inserted == 1  # b was there already: kept as it was, not updated or doubled
    rows = {r["key"]: r.asDict() for r in read_table(spark, lake, new).collect()}
    assert rows == {
        "a": {"key": "a", "value": 1, "note": None, "count": None},
        "b": {"key": "b", "value": 2, "note": None, "count": None},
        "c": {"key": "c", "value": 3, "note": "y", "count": 4},
    }
    assert table_version(spark, lake, new) == before + 2  # one ALTER TABLE, one MERGE
    ensure_table(spark, lake, new)
    assert table_version(spark, lake, new) == before + 2  # nothing left to add: no commit
    # time travel to the version before the columns existed reads them as null too
    assert read_table(spark, lake, new, version=before).columns == new.schema.fieldNames()


def test_a_missing_column_that_may_not_be_null_is_a_clear_error(spark, lake):
    merge_new_rows(spark, lake, _declared(), spark.createDataFrame([("a", 1)], _OLD))
    strict = _declared(StructField("site", StringType(), False))

    with pytest.raises(LakehouseError, match=r"lacks the column\(s\) \['site'\], which may not be null"):
        ensure_table(spark, lake, strict)


def test_every_column_type_the_tables_use_can_be_added(spark, lake):
    merge_new_rows(spark, lake, _declared(), spark.createDataFrame([("a", 1)], _OLD))
    new = _declared(
        StructField("points", ArrayType(POINT)),
        StructField("scores", MapType(StringType(), DoubleType())),
        StructField("at", TimestampType()),
        StructField("png", BinaryType()),
        StructField("names", ArrayType(StringType())),
    )

    ensure_table(spark, lake, new)

    stored = spark.read.format("delta").load(lake.path(new)).schema
    assert [(f.name, f.dataType.simpleString()) for f in stored.fields] == [
        (f.name, f.dataType.simpleString()) for f in new.schema.fields
    ]


def test_a_job_that_loses_the_race_to_add_the_columns_goes_on(spark, lake, monkeypatch):
    from allmtl_spark import lakehouse

    merge_new_rows(spark, lake, _declared(), spark.createDataFrame([("a", 1)], _OLD))
    new = _declared(StructField("note", StringType()))
    stale = lakehouse._missing_columns(spark, lake, new)  # this job reads the schema ...
    ensure_table(spark, lake, new)  # ... another job adds the column first ...
    reads = iter([stale])
    real = lakehouse._missing_columns
    monkeypatch.setattr(lakehouse, "_missing_columns", lambda *args: next(reads, None) or real(*args))

    ensure_table(spark, lake, new)  # ... and this job's ALTER finds it there: no error

    assert spark.read.format("delta").load(lake.path(new)).columns == ["key", "value", "note"]


def test_readers_fill_only_nullable_columns(spark, lake):
    merge_new_rows(spark, lake, _declared(), spark.createDataFrame([("a", 1)], _OLD))
    newer = _declared(StructField("site", StringType(), False), StructField("note", StringType()))

    # a required column is not made up as null: whoever selects it gets Spark's own error
    assert read_table(spark, lake, newer).columns == ["key", "value", "note"]


def test_managed_tables_are_created_read_merged_and_time_travelled_by_name(spark, managed_lake):
    lake = managed_lake
    old = _declared()
    merge_new_rows(spark, lake, old, spark.createDataFrame([("a", 1)], _OLD))
    name = f"spark_catalog.{lake.schema}.things"

    assert lake.path(old) == name and spark.catalog.tableExists(name)
    details = {r["col_name"]: r["data_type"] for r in spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()}
    assert details["Type"] == "MANAGED" and details["Provider"] == "delta"
    assert not (Path(lake.root) / "things").exists(), "no path-based copy under lakehouse.path"
    first = table_version(spark, lake, old)
    new = _declared(StructField("note", StringType()))

    assert merge_new_rows(spark, lake, new, spark.createDataFrame([("a", 5, "x"), ("b", 2, "y")], new.schema)) == 1
    assert sorted(tuple(r) for r in read_table(spark, lake, new).collect()) == [("a", 1, None), ("b", 2, "y")]
    assert table_version(spark, lake, new) == first + 2  # ALTER TABLE ADD COLUMNS, then MERGE
    assert [tuple(r) for r in read_table(spark, lake, new, version=first).collect()] == [("a", 1, None)]
    assert merge_new_rows(spark, lake, new, spark.createDataFrame([("b", 2, "y")], new.schema)) == 0


def test_a_schema_that_cannot_be_made_is_a_clear_error(spark, tmp_path):
    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    lake = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path), catalog="no_such_catalog", schema="s"))

    with pytest.raises(LakehouseError, match=r"cannot use schema no_such_catalog\.s .*CREATE SCHEMA"):
        merge_new_rows(spark, lake, _declared(), spark.createDataFrame([("a", 1)], _OLD))


def test_a_table_another_job_is_creating_is_waited_for_not_failed(spark, lake):
    """Two jobs creating one table: the loser meets the winner's _delta_log folder before its first commit.

    Seen with two scoring jobs started together on a new lakehouse (one died DELTA_TABLE_NOT_FOUND).
    Here the winner's folder is made by hand and its first commit lands a moment later from a thread.
    """
    import threading
    import time

    table = _declared()
    Path(lake.path(table), "_delta_log").mkdir(parents=True)  # the winner has begun ...

    def winner_commits() -> None:
        time.sleep(1.0)  # ... and commits while this job is already trying
        spark.createDataFrame([("w", 1)], _OLD).write.format("delta").mode("append").save(lake.path(table))

    winner = threading.Thread(target=winner_commits)
    winner.start()
    try:
        ensure_table(spark, lake, table)  # failed at once before the retry
    finally:
        winner.join()
    assert [r["key"] for r in read_table(spark, lake, table).collect()] == ["w"]
