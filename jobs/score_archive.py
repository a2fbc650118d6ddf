"""spark-submit entry point for `allmtl score`.

Usage: spark-submit jobs/score_archive.py --config conf/demo.yaml [--set k=v ...]
"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
