"""spark-submit entry point for `allmtl segment`: spark-submit jobs/segment_slides.py --config conf/demo.yaml"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
