#!/usr/bin/env bash
# Run one allmtl job on YARN, by default in cluster mode (the driver runs in the application master
# container, so the job survives this shell).
#
#   export HADOOP_CONF_DIR=/etc/hadoop/conf SPARK_HOME=/opt/spark-3.5.7
#   ALLMTL_LAKEHOUSE=hdfs:///data/allmtl/lakehouse deploy/spark-submit/yarn.sh ingest_slides \
#     --set ingest.sources='[{kind: allidb1, path: hdfs:///data/allmtl/raw/ALL_IDB1, site: allidb}]'
#   ALLMTL_LAKEHOUSE=hdfs:///data/allmtl/lakehouse ALLMTL_NUM_EXECUTORS=4 \
#     deploy/spark-submit/yarn.sh train_mtl --set train.num_proc=4
#
# JOB (first argument) is a file of jobs/ without .py: synth, ingest_slides, train_segmenter,
# segment_slides, train_mtl, evaluate_mtl, score_archive ... Later arguments go to the job.
# How Delta, the Python environment and the code reach the containers: see
# deploy/spark-submit/common.sh. In cluster mode the driver uses the same environment archive as
# the executors, and the config file travels with --files (the job reads it from the container's
# working directory).
#
# The patient key (jobs that ingest: ingest_slides, score_archive with score.source): export
# ALLMTL_PATIENT_KEY from your secret store before running this. In cluster mode the driver does not
# inherit this shell's environment: the key goes to it as spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY in
# a properties file only you can read, deleted when spark-submit returns, never on the command line;
# spark.redaction.regex hides it in Spark's UI and logs (docs/privacy.md). In client mode the driver
# runs here and inherits the variable.
#
# The environment archive is about 1.5 GB: upload it once and point ALLMTL_PYENV_ARCHIVE at it,
#   hdfs dfs -put .cache/spark-submit/allmtl-pyenv-<key>.tar.gz /apps/allmtl/
#   export ALLMTL_PYENV_ARCHIVE=hdfs:///apps/allmtl/allmtl-pyenv-<key>.tar.gz
# otherwise YARN uploads it from here on every run.
#
# Environment:
#   HADOOP_CONF_DIR / YARN_CONF_DIR   the cluster's client configuration (required by spark-submit)
#   ALLMTL_LAKEHOUSE        lakehouse.path, e.g. hdfs:///data/allmtl/lakehouse (required)
#   ALLMTL_CONFIG           config file (default conf/prod.yaml)
#   ALLMTL_PATIENT_KEY      the patient-id HMAC key (from a secret store; see above)
#   ALLMTL_DEPLOY_MODE      cluster (default) | client (driver here, in the repo's .venv)
#   ALLMTL_QUEUE            YARN queue (default: default)
#   ALLMTL_PYENV_ARCHIVE    the Python environment archive, a local file or an hdfs:// URI
#   ALLMTL_JARS_DIR         folder with the Delta jars (default .cache/jars; else --packages)
#   ALLMTL_NUM_EXECUTORS (2) ALLMTL_EXECUTOR_MEMORY (6g) ALLMTL_EXECUTOR_CORES (2)
#   ALLMTL_MEMORY_OVERHEAD (3g: Python workers and TensorFlow live outside the JVM heap)
#   ALLMTL_DRIVER_MEMORY (4g)
#   SPARK_HOME              a Spark 3.5 distribution (default: the venv's pyspark)
#   ALLMTL_DRY_RUN=1        print the spark-submit command instead of running it
set -euo pipefail
# shellcheck source=deploy/spark-submit/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 1 ] || allmtl_die "usage: $0 JOB [job arguments...]"
job_file=$(allmtl_job_file "$1")
shift
[ -n "${ALLMTL_LAKEHOUSE:-}" ] || allmtl_die "set ALLMTL_LAKEHOUSE (hdfs:///... or another URI the cluster reads)"
if [ -z "${HADOOP_CONF_DIR:-}${YARN_CONF_DIR:-}" ] && [ "$ALLMTL_DRY_RUN" != 1 ]; then
  allmtl_die "set HADOOP_CONF_DIR (or YARN_CONF_DIR) to the cluster's client configuration"
fi
config=$(allmtl_config_file)
mode=${ALLMTL_DEPLOY_MODE:-cluster}

mapfile -t delta_args < <(allmtl_delta_args)
code_zip=$(allmtl_code_zip)
pyenv=$(allmtl_pyenv_archive)
allmtl_find_spark

case "$mode" in
  cluster)
    # The driver runs in a container: the environment archive's Python, the config via --files.
    mode_args=(--conf spark.pyspark.driver.python=./environment/bin/python
               --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python
               --files "$config")
    config_arg=$(basename "$config")
    secret_file=$(allmtl_secret_properties)
    if [ -n "$secret_file" ]; then
      trap 'rm -f "$secret_file"' EXIT
      mode_args+=(--properties-file "$secret_file")
      ALLMTL_RUN_CHILD=1   # not exec: the file is deleted when spark-submit returns
    fi
    ;;
  client)
    mode_args=(--conf "spark.pyspark.driver.python=$ALLMTL_REPO/.venv/bin/python")
    config_arg=$config
    ;;
  *) allmtl_die "ALLMTL_DEPLOY_MODE must be cluster or client, not $mode" ;;
esac

allmtl_run "$ALLMTL_SPARK_SUBMIT" \
  --master yarn \
  --deploy-mode "$mode" \
  --queue "${ALLMTL_QUEUE:-default}" \
  --name "allmtl $(basename "$job_file" .py)" \
  --driver-memory "${ALLMTL_DRIVER_MEMORY:-4g}" \
  --num-executors "${ALLMTL_NUM_EXECUTORS:-2}" \
  --executor-memory "${ALLMTL_EXECUTOR_MEMORY:-6g}" \
  --executor-cores "${ALLMTL_EXECUTOR_CORES:-2}" \
  --conf "spark.executor.memoryOverhead=${ALLMTL_MEMORY_OVERHEAD:-3g}" \
  "${delta_args[@]}" \
  --archives "$pyenv#environment" \
  --conf spark.pyspark.python=./environment/bin/python \
  --conf spark.executorEnv.PYTHONWARNINGS=ignore::FutureWarning,ignore::DeprecationWarning \
  "${mode_args[@]}" \
  --py-files "$code_zip" \
  "$job_file" \
  --config "$config_arg" \
  --set spark.master=null \
  --set "lakehouse.path=$ALLMTL_LAKEHOUSE" \
  "$@"
