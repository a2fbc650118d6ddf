"""The training job's Petastorm converter: its files in one order in every run."""

from __future__ import annotations

import pytest
from petastorm.spark import SparkDatasetConverter

from allmtl_spark.training.job import ordered_converter

pytestmark = pytest.mark.spark


def test_converter_files_in_partition_order(spark, tmp_path):
    # Spark's inputFiles() is a set: eight files in partition order by chance is 1 in 40,320.
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{tmp_path}")
    frame = spark.range(0, 64).repartition(8).sortWithinPartitions("id")
    converter = ordered_converter(frame)
    try:
        names = [url.rsplit("/", 1)[1] for url in converter.file_urls]
        assert len(names) == 8
        assert [name.split("-")[1] for name in names] == [f"{i:05d}" for i in range(8)], names
    finally:
        converter.delete()
