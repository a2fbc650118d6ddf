"""Shared fixtures: one real local Spark session with Delta for the whole test run."""

from __future__ import annotations

import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    """A real ``local[2]`` Spark session with Delta, as the product builds it."""
    from allmtl_spark.config.schema import SparkConfig
    from allmtl_spark.session import get_spark

    session = get_spark(
        SparkConfig(master="local[2]", driver_memory="3g", shuffle_partitions=2, delta_snapshot_partitions=2)
    )
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path):
    """An empty lakehouse folder for one test."""
    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    return Lakehouse.from_config(LakehouseConfig(path=str(tmp_path / "lakehouse")))


@pytest.fixture
def managed_lake(spark, tmp_path):
    """A lakehouse whose tables are managed tables of a fresh schema in the session catalog.

    The name-based table mode as on Unity Catalog (``lakehouse.catalog`` / ``lakehouse.schema``);
    the schema's location is under ``tmp_path``, and it is dropped afterwards.
    """
    import uuid

    from allmtl_spark.config.schema import LakehouseConfig
    from allmtl_spark.lakehouse import Lakehouse

    schema = f"allmtl_test_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE SCHEMA spark_catalog.{schema} LOCATION '{tmp_path / 'warehouse'}'")
    yield Lakehouse.from_config(LakehouseConfig(path=str(tmp_path / "files"), catalog="spark_catalog", schema=schema))
    spark.sql(f"DROP SCHEMA IF EXISTS spark_catalog.{schema} CASCADE")
