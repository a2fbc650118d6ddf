#!/usr/bin/env bash
# Run one allmtl job on a Spark standalone cluster (client mode: Spark does not run Python
# drivers in standalone cluster mode). The driver is this machine's .venv (make setup).
#
#   SPARK_MASTER=spark://master:7077 ALLMTL_LAKEHOUSE=/mnt/shared/lakehouse \
#     deploy/spark-submit/standalone.sh ingest_slides --set ingest.sources='[{kind: manifest, path: /mnt/shared/data/manifest.csv}]'
#   SPARK_MASTER=spark://master:7077 ALLMTL_LAKEHOUSE=/mnt/shared/lakehouse \
#     deploy/spark-submit/standalone.sh train_mtl --set train.num_proc=4
#
# JOB (first argument) is a file of jobs/ without .py: synth, ingest_slides, train_segmenter,
# segment_slides, train_mtl, evaluate_mtl, score_archive ... Later arguments go to the job
# (`--set key=value`, `--run-id ...`). How Delta, the Python environment and the code reach the
# executors: see deploy/spark-submit/common.sh.
#
# Environment:
#   SPARK_MASTER            spark://host:7077 (required)
#   ALLMTL_LAKEHOUSE        lakehouse.path, the same path on every node: a shared mount (NFS) or an
#                           object store URI the cluster's Hadoop libraries read (required)
#   ALLMTL_CONFIG           config file (default conf/prod.yaml)
#   ALLMTL_PYENV_ARCHIVE    the executors' Python environment (default: packed once under .cache/)
#   ALLMTL_JARS_DIR         folder with the Delta jars (default .cache/jars; else --packages)
#   ALLMTL_DRIVER_MEMORY (4g) ALLMTL_EXECUTOR_MEMORY (6g) ALLMTL_EXECUTOR_CORES (2)
#   ALLMTL_TOTAL_CORES      cap on the cores the job takes from the cluster (default: all offered)
#   SPARK_HOME              a Spark 3.5 distribution to submit with (default: the venv's pyspark)
#   ALLMTL_DRY_RUN=1        print the spark-submit command instead of running it
set -euo pipefail
# shellcheck source=deploy/spark-submit/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || allmtl_die "usage: $0 JOB [job arguments...]"
job_file=$(allmtl_job_file "$1")
shift
[ -n "${SPARK_MASTER:-}" ] || allmtl_die "set SPARK_MASTER (spark://host:7077)"
[ -n "${ALLMTL_LAKEHOUSE:-}" ] || allmtl_die "set ALLMTL_LAKEHOUSE to a path every node shares"
config=$(allmtl_config_file)
driver_python="$ALLMTL_REPO/.venv/bin/python"
[ -x "$driver_python" ] || [ "$ALLMTL_DRY_RUN" = 1 ] || allmtl_die "no $driver_python: run make setup"

mapfile -t delta_args < <(allmtl_delta_args)
code_zip=$(allmtl_code_zip)
pyenv=$(allmtl_pyenv_archive)
allmtl_find_spark
cores_args=()
[ -n "${ALLMTL_TOTAL_CORES:-}" ] && cores_args=(--total-executor-cores "$ALLMTL_TOTAL_CORES")

allmtl_run "$ALLMTL_SPARK_SUBMIT" \
  --master "$SPARK_MASTER" \
  --deploy-mode client \
  --name "allmtl $(basename "$job_file" .py)" \
  --driver-memory "${ALLMTL_DRIVER_MEMORY:-4g}" \
  --executor-memory "${ALLMTL_EXECUTOR_MEMORY:-6g}" \
  --executor-cores "${ALLMTL_EXECUTOR_CORES:-2}" \
  "${cores_args[@]}" \
  "${delta_args[@]}" \
  --archives "$pyenv#environment" \
  --conf spark.pyspark.python=./environment/bin/python \
  --conf "spark.pyspark.driver.python=$driver_python" \
  --conf spark.executorEnv.PYTHONWARNINGS=ignore::FutureWarning,ignore::DeprecationWarning \
  --py-files "$code_zip" \
  "$job_file" \
  --config "$config" \
  --set spark.master=null \
  --set "lakehouse.path=$ALLMTL_LAKEHOUSE" \
  "$@"
