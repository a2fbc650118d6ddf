"""spark-submit entry point for `allmtl train-segmenter`: spark-submit jobs/train_segmenter.py -c conf/demo.yaml"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-segmenter", *sys.argv[1:]]))
