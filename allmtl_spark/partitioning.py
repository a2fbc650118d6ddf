"""Spread a known list of slides evenly over Spark tasks without a sampling pass.

The segment and score jobs know, on the driver, exactly which slides they will process. They want
``ceil(n / per_partition)`` tasks of equal size. Two Spark built-ins fall short:

- ``repartition(n)`` (round robin) starts at a random offset per input partition, so a few input
  files leave some tasks with several slides and others empty;
- ``repartitionByRange(n, col)`` balances, but first runs a sampling job over its whole input, and
  that input carries every slide's image bytes: the archive is read twice.

``repartition(n, col)`` hashes ``col`` (Murmur3, seed 42, then ``pmod n``) without sampling. Giving
slide ``i`` a tag that is known to hash into partition ``i mod n`` makes it exact. The tags come
from :func:`spark_hash_int`, a copy of Spark's ``Murmur3_x86_32.hashInt``; the tests check it
against Spark's own ``hash`` so an engine that hashed differently is caught (it would only unbalance
the tasks, never lose or duplicate a slide).
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

SPARK_HASH_SEED = 42  # HashPartitioning's Murmur3Hash seed
PART_COLUMN = "part"  # the tag column of tagged_keys
_MASK = 0xFFFFFFFF


def _rotl32(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def spark_hash_int(value: int, seed: int = SPARK_HASH_SEED) -> int:
    """Spark's ``hash(int_column)``: Murmur3 x86 32-bit of one 4-byte int, as a signed int."""
    k1 = _rotl32((value & _MASK) * 0xCC9E2D51 & _MASK, 15) * 0x1B873593 & _MASK
    h1 = (_rotl32((seed & _MASK) ^ k1, 13) * 5 + 0xE6546B64) & _MASK
    h1 ^= 4  # the input length in bytes
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _MASK
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def partition_tags(partitions: int) -> list[int]:
    """``tags[p]``: the smallest non-negative int that ``repartition(partitions, tags)`` sends to partition ``p``."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    tags: dict[int, int] = {}
    candidate = 0
    while len(tags) < partitions:
        tags.setdefault(spark_hash_int(candidate) % partitions, candidate)  # Python's % is Spark's pmod here
        candidate += 1
    return [tags[p] for p in range(partitions)]


def tagged_keys(spark: SparkSession, keys: list[str], per_partition: int, key_column: str) -> tuple[DataFrame, int]:
    """A small DataFrame of ``keys`` with a ``PART_COLUMN`` tag each, and the number of partitions."""
    if per_partition < 1:
        raise ValueError(f"per_partition must be >= 1, got {per_partition}")
    partitions = max(1, math.ceil(len(keys) / per_partition))
    tags = partition_tags(partitions)
    rows = [(key, tags[i % partitions]) for i, key in enumerate(keys)]
    return spark.createDataFrame(rows, f"{key_column} string, {PART_COLUMN} int"), partitions


def spread_over_tasks(
    spark: SparkSession, rows: DataFrame, keys: list[str], per_partition: int, key_column: str
) -> DataFrame:
    """The ``rows`` whose ``key_column`` is in ``keys``, in ``ceil(len(keys) / per_partition)`` tasks.

    The keys are dealt round robin in list order, so every task gets ``len(keys) // partitions`` or
    one more (never more than ``per_partition``), and none is empty unless ``keys`` is. The result
    carries the ``PART_COLUMN`` tag as an extra column.
    """
    tagged, partitions = tagged_keys(spark, keys, per_partition, key_column)
    return rows.join(F.broadcast(tagged), key_column).repartition(partitions, PART_COLUMN)
