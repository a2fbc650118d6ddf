"""spark-submit entry point for `allmtl ingest`.

Usage: spark-submit jobs/ingest_slides.py --config conf/demo.yaml [--set k=v ...]
"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
