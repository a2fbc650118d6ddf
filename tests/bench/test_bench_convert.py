"""``allmtl bench convert``: both conversions timed on one model, their bytes compared."""

from __future__ import annotations

import pytest

from allmtl_spark.bench.convert import format_result, run_bench_convert

pytestmark = pytest.mark.unit


def test_both_ways_give_the_same_flatbuffer_and_are_timed():
    import tensorflow as tf

    inputs = tf.keras.Input((8, 8, 3))
    pooled = tf.keras.layers.GlobalAveragePooling2D(name="pool")(tf.keras.layers.Conv2D(4, 3)(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(pooled))

    result = run_bench_convert(model, repeats=1)

    assert result["identical"] and result["bytes"] > 0
    assert result["baseline_s"] > 0 and result["variables_s"] > 0


def test_the_report_gives_both_times_and_the_ratio():
    text = format_result({"baseline_s": 51.3, "variables_s": 11.9, "identical": True, "bytes": 89_289_680}, "m")
    assert "89.3 MB flatbuffer (identical flatbuffers)" in text
    assert "(baseline): 51.3 s" in text and "11.9 s  (4.3x faster)" in text
    different = format_result({"baseline_s": 2.0, "variables_s": 1.0, "identical": False, "bytes": 10}, "m")
    assert "DIFFERENT flatbuffers" in different
