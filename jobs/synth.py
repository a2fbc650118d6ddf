"""spark-submit entry point for `allmtl synth`: spark-submit jobs/synth.py --config conf/demo.yaml [--set k=v ...]"""

import sys

from allmtl_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
