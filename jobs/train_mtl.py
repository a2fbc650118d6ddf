"""spark-submit entry point for `allmtl train`.

Usage: spark-submit jobs/train_mtl.py --config conf/demo.yaml [--set k=v ...]
"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
