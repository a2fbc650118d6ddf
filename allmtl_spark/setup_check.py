"""`make setup`'s last step: prove the environment works (imports, Spark + Delta round trip)."""

from __future__ import annotations

import sys
import tempfile
import time


def main() -> int:
    started = time.time()
    import horovod.tensorflow.keras  # noqa: F401 - the build must import with TensorFlow
    import petastorm  # noqa: F401
    import tensorflow as tf

    from allmtl_spark.config.schema import SparkConfig
    from allmtl_spark.session import get_spark

    spark = get_spark(SparkConfig(master="local[1]", shuffle_partitions=1))
    with tempfile.TemporaryDirectory() as folder:
        spark.range(3).write.format("delta").save(f"{folder}/probe")
        rows = spark.read.format("delta").load(f"{folder}/probe").count()
    spark.stop()
    if rows != 3:
        print(f"setup check FAILED: Delta round trip returned {rows} rows, expected 3", file=sys.stderr)
        return 1
    print(
        f"setup check ok: TensorFlow {tf.__version__}, horovod with Gloo, Spark {spark.version} + Delta "
        f"round trip ({time.time() - started:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
