"""partitioning: tags that hash-partition a known key list into equal tasks, on real Spark."""

from __future__ import annotations

from collections import Counter

import pytest
from pyspark.sql import functions as F

from allmtl_spark.partitioning import partition_tags, spark_hash_int, spread_over_tasks, tagged_keys

pytestmark = pytest.mark.spark


def test_hash_matches_sparks_own_hash_function(spark):
    values = [*range(-300, 3000), 2**31 - 1, -(2**31), 123_456_789, -987_654_321]
    rows = spark.createDataFrame([(v,) for v in values], "v int").select("v", F.hash("v").alias("h")).collect()

    assert {r.v: r.h for r in rows} == {v: spark_hash_int(v) for v in values}


@pytest.mark.parametrize("partitions", [1, 2, 3, 8, 31, 100])
def test_each_tag_lands_in_its_own_partition(spark, partitions):
    tags = partition_tags(partitions)
    frame = spark.createDataFrame(list(enumerate(tags)), "want int, part int").repartition(partitions, "part")

    landed = frame.select("want", F.spark_partition_id().alias("got")).collect()

    assert sorted((r.want, r.got) for r in landed) == [(p, p) for p in range(partitions)]


def test_plain_partition_numbers_would_collide(spark):
    """Why tags are needed: hashing the numbers 0..7 into 8 partitions leaves some partitions empty."""
    frame = spark.createDataFrame([(p,) for p in range(8)], "part int").repartition(8, "part")

    used = {r[0] for r in frame.select(F.spark_partition_id()).collect()}

    assert len(used) < 8


@pytest.mark.parametrize(
    ("n_keys", "per_partition", "sizes"), [(7, 2, [2, 2, 2, 1]), (10, 3, [3, 3, 2, 2]), (5, 8, [5])]
)
def test_joined_rows_are_spread_evenly(spark, n_keys, per_partition, sizes):
    keys = [f"sha-{i:03d}" for i in range(n_keys)]
    # the rows to spread: several input partitions, a payload column standing in for the image bytes
    slides = spark.createDataFrame([(k, b"x" * 1000) for k in reversed(keys)], "content_sha256 string, content binary")
    slides = slides.repartition(3)
    _, partitions = tagged_keys(spark, keys, per_partition, "content_sha256")

    spread = spread_over_tasks(spark, slides, keys, per_partition, "content_sha256")
    per_task = Counter(r[0] for r in spread.select(F.spark_partition_id()).collect())

    assert partitions == len(sizes)
    assert sorted(per_task.values(), reverse=True) == sizes
    assert spread.count() == n_keys


def test_bad_arguments_are_refused(spark):
    with pytest.raises(ValueError, match="partitions"):
        partition_tags(0)
    with pytest.raises(ValueError, match="per_partition"):
        tagged_keys(spark, ["a"], 0, "content_sha256")
