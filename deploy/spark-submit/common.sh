# shellcheck shell=bash
# Shared by deploy/spark-submit/standalone.sh and yarn.sh (source it, do not run it): which job,
# which config, and how Delta's jars, the Python environment and our code reach the executors.
#
# - Delta: spark.jars from the local Maven cache that `make setup` fills (.cache/jars, or
#   $ALLMTL_JARS_DIR); without it, --packages and Spark resolves the coordinates from Maven Central.
# - Python: the executors need TensorFlow, horovod (compiled) and the rest of the pinned stack, which
#   --py-files cannot carry. A venv is packed once with venv-pack into a tar.gz and shipped with
#   --archives <tar.gz>#environment; executors run ./environment/bin/python. The archive is keyed
#   by a hash of deploy/constraints.txt and pyproject.toml and rebuilt only when those change.
#   venv-pack does not copy the interpreter: every node needs Python 3.11 at the path it has on
#   the machine that packs (or pass ALLMTL_PYENV_PYTHON_PREFIX, the path it has on the nodes).
# - Our code: allmtl_spark zipped fresh on every run and added with --py-files, so a code change
#   does not repack the environment.
# - The driver (client mode) runs the repo's .venv (make setup).

ALLMTL_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ALLMTL_DELTA_VERSION=3.3.2        # = DELTA_VERSION in the Makefile and delta-spark in deploy/constraints.txt
ALLMTL_DELTA_PACKAGES="io.delta:delta-spark_2.12:${ALLMTL_DELTA_VERSION},io.delta:delta-storage:${ALLMTL_DELTA_VERSION}"
ALLMTL_CONSTRAINTS="$ALLMTL_REPO/deploy/constraints.txt"
ALLMTL_BUILD_DIR="$ALLMTL_REPO/.cache/spark-submit"
ALLMTL_PYENV_RECIPE=1             # bump when allmtl_build_pyenv changes: the archive key includes it
ALLMTL_DRY_RUN=${ALLMTL_DRY_RUN:-0}

allmtl_log() { echo "allmtl: $*" >&2; }
allmtl_die() { allmtl_log "$1"; exit "${2:-2}"; }

# allmtl_job_file JOB: the absolute path of jobs/<JOB>.py, or exit 2 naming the jobs there are.
allmtl_job_file() {
  local job=${1%.py} file
  file="$ALLMTL_REPO/jobs/${job##*/}.py"
  if [ -z "$job" ] || [ ! -f "$file" ]; then
    local known="" entry
    for entry in "$ALLMTL_REPO"/jobs/*.py; do known+=" $(basename "$entry" .py)"; done
    allmtl_die "unknown job '${1:-}'; jobs:${known}"
  fi
  echo "$file"
}

# allmtl_config_file: the config to pass with --config (absolute), default conf/prod.yaml (no demo
# defaults: no demo patient key, no synthetic sources).
allmtl_config_file() {
  local config=${ALLMTL_CONFIG:-conf/prod.yaml}
  case "$config" in /*) ;; *) config="$ALLMTL_REPO/$config" ;; esac
  [ -f "$config" ] || allmtl_die "ALLMTL_CONFIG: $config does not exist"
  echo "$config"
}

# Spark's default redaction pattern plus the patient key (= REDACTION_REGEX in allmtl_spark/session.py):
# Spark shows matching properties, and values matching it, as *********(redacted) in its UI and logs.
ALLMTL_REDACTION_REGEX='(?i)secret|password|token|access[.]?key|patient[._]?key'

# allmtl_secret_properties: when $ALLMTL_PATIENT_KEY is set, writes a properties file readable by this
# user only (mode 600) holding spark-defaults.conf ($SPARK_CONF_DIR, else $SPARK_HOME/conf), the key as
# spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY (the driver's environment in YARN cluster mode) and the
# redaction pattern, and prints its path; prints nothing without a key. The key never goes on a command
# line (ps and shell histories show those). An empty key stops with exit 2. The caller deletes the file.
allmtl_secret_properties() {
  [ -n "${ALLMTL_PATIENT_KEY+set}" ] || return 0
  local key=$ALLMTL_PATIENT_KEY file defaults
  [ -n "${key//[[:space:]]/}" ] ||
    allmtl_die "ALLMTL_PATIENT_KEY is set but empty: set it to the lakehouse's secret key (docs/privacy.md) or unset it"
  file=$( umask 077 && mktemp "${TMPDIR:-/tmp}/allmtl-secret.XXXXXX" )
  defaults="${SPARK_CONF_DIR:-${SPARK_HOME:-/nonexistent}/conf}/spark-defaults.conf"
  {
    [ -f "$defaults" ] && cat "$defaults" && echo   # a --properties-file replaces spark-defaults.conf
    printf 'spark.redaction.regex %s\n' "${ALLMTL_REDACTION_REGEX//\\/\\\\}"
    printf 'spark.yarn.appMasterEnv.ALLMTL_PATIENT_KEY %s\n' "${key//\\/\\\\}"
  } > "$file"
  echo "$file"
}

# allmtl_delta_args: prints the spark-submit arguments that put Delta on the classpath, one a line.
allmtl_delta_args() {
  local dir=${ALLMTL_JARS_DIR:-$ALLMTL_REPO/.cache/jars}
  local spark_jar="$dir/delta-spark_2.12-${ALLMTL_DELTA_VERSION}.jar"
  local storage_jar="$dir/delta-storage-${ALLMTL_DELTA_VERSION}.jar"
  if [ -f "$spark_jar" ] && [ -f "$storage_jar" ]; then
    printf '%s\n' --jars "$spark_jar,$storage_jar"
  else
    allmtl_log "no Delta jars in $dir (make setup): Spark resolves $ALLMTL_DELTA_PACKAGES"
    printf '%s\n' --packages "$ALLMTL_DELTA_PACKAGES"
  fi
  printf '%s\n' --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
    --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
}

# allmtl_code_zip: zips allmtl_spark/ for --py-files and prints the zip's path.
allmtl_code_zip() {
  local zip="$ALLMTL_BUILD_DIR/allmtl_spark.zip"
  if [ "$ALLMTL_DRY_RUN" = 1 ]; then echo "$zip"; return 0; fi
  mkdir -p "$ALLMTL_BUILD_DIR"
  rm -f "$zip"
  (cd "$ALLMTL_REPO" && zip -qr "$zip" allmtl_spark -x '*/__pycache__/*' '*.pyc')
  echo "$zip"
}

# allmtl_pyenv_archive: prints the environment archive to ship, building it when missing.
# ALLMTL_PYENV_ARCHIVE may name a file or a URI the cluster reads (hdfs:///..., s3a://...).
allmtl_pyenv_archive() {
  local archive=${ALLMTL_PYENV_ARCHIVE:-}
  if [ -n "$archive" ]; then
    case "$archive" in
      *://*) echo "$archive"; return 0 ;;
      *) [ -f "$archive" ] || allmtl_die "ALLMTL_PYENV_ARCHIVE: $archive does not exist" ;;
    esac
    echo "$archive"; return 0
  fi
  local key
  key=$( (cat "$ALLMTL_CONSTRAINTS" "$ALLMTL_REPO/pyproject.toml"; echo "recipe $ALLMTL_PYENV_RECIPE") \
         | sha256sum | cut -c1-12)
  archive="$ALLMTL_BUILD_DIR/allmtl-pyenv-$key.tar.gz"
  if [ ! -f "$archive" ]; then
    if [ "$ALLMTL_DRY_RUN" = 1 ]; then
      allmtl_log "would pack the executors' Python environment into $archive"
    else
      allmtl_build_pyenv "$archive" >&2
    fi
  fi
  echo "$archive"
}

# allmtl_build_pyenv OUT.tar.gz: a fresh venv (Python 3.11, as `make setup`) with the pinned stack
# (not our package: that travels in the code zip), horovod built with docs/stack.md's recipe (pip's
# wheel cache makes it seconds after the first build), checked against the constraints, packed
# with venv-pack.
allmtl_build_pyenv() {
  local out=$1 work venv python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null || allmtl_die "$python not found (set PYTHON)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/allmtl-pyenv.XXXXXX")
  venv="$work/env"
  allmtl_log "packing the executors' Python environment into $out (a few minutes, once)"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q -c "$ALLMTL_CONSTRAINTS" "tensorflow-cpu==2.15.1" "setuptools<70" wheel venv-pack
  "$venv/bin/python" - "$ALLMTL_REPO/pyproject.toml" > "$work/requirements.txt" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    print("\n".join(tomllib.load(handle)["project"]["dependencies"]))
PY
  "$venv/bin/pip" install -q -c "$ALLMTL_CONSTRAINTS" -r "$work/requirements.txt"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    "$venv/bin/pip" install -q --no-build-isolation -c "$ALLMTL_CONSTRAINTS" "horovod[spark]==0.28.1"
  TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/horovodrun" --check-build 2>/dev/null | grep -q '\[X\] Gloo' ||
    allmtl_die "horovod built without Gloo" 1
  "$venv/bin/python" "$ALLMTL_REPO/deploy/docker/check_pins.py" "$ALLMTL_CONSTRAINTS" >&2 || exit 1
  mkdir -p "$(dirname "$out")"
  "$venv/bin/venv-pack" --quiet --prefix "$venv" --format tar.gz --output "$out.part" \
    ${ALLMTL_PYENV_PYTHON_PREFIX:+--python-prefix "$ALLMTL_PYENV_PYTHON_PREFIX"}
  mv "$out.part" "$out"
  rm -rf "$work"
}

# allmtl_find_spark: sets ALLMTL_SPARK_SUBMIT to $SPARK_HOME's spark-submit; without SPARK_HOME,
# exports the repo venv's pip pyspark as SPARK_HOME (its bin/ scripts cannot find it themselves
# unless the venv is activated, and cron activates nothing).
allmtl_find_spark() {
  if [ -z "${SPARK_HOME:-}" ] && [ -x "$ALLMTL_REPO/.venv/bin/python" ]; then
    SPARK_HOME=$("$ALLMTL_REPO/.venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    export SPARK_HOME
  fi
  if [ -z "${SPARK_HOME:-}" ] || [ ! -x "$SPARK_HOME/bin/spark-submit" ]; then
    allmtl_die "no spark-submit: set SPARK_HOME to a Spark 3.5 distribution or run make setup"
  fi
  ALLMTL_SPARK_SUBMIT="$SPARK_HOME/bin/spark-submit"   # read by the scripts that source this file
  export ALLMTL_SPARK_SUBMIT
}

# allmtl_run CMD...: runs the command in place of this shell, or prints it (shell-quoted) when
# ALLMTL_DRY_RUN=1. With ALLMTL_RUN_CHILD=1 it runs as a child and returns its exit code (the caller
# has cleaning up to do afterwards).
allmtl_run() {
  if [ "$ALLMTL_DRY_RUN" = 1 ]; then
    printf '%q ' "$@"; printf '\n'
    return 0
  fi
  if [ "${ALLMTL_RUN_CHILD:-0}" = 1 ]; then
    "$@"
    return
  fi
  exec "$@"
}
