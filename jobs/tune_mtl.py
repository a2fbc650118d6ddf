"""spark-submit entry point for `allmtl tune`.

Usage: spark-submit jobs/tune_mtl.py --config conf/demo.yaml [--set k=v ...]
"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
