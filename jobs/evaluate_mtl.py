"""spark-submit entry point for `allmtl evaluate`: spark-submit jobs/evaluate_mtl.py --config conf/demo.yaml"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
