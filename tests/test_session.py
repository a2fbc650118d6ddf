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
