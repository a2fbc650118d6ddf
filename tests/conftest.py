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
