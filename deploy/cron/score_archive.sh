#!/usr/bin/env bash
# Nightly scoring of the slide archive without a scheduler: deploy/cron/allmtl-score.cron runs this.
#
# - One run at a time: flock on $ALLMTL_LOCK_FILE. A night whose previous run still holds the lock
#   is skipped (exit 75, EX_TEMPFAIL, with a line on stderr that cron mails).
# - One log file per run in $ALLMTL_LOG_DIR; logs older than $ALLMTL_LOG_KEEP_DAYS days are deleted.
#   On failure the log's last lines go to stderr as well, so cron's mail says what broke.
# - Where it runs: SPARK_MASTER unset or local[...] -> spark-submit of the repo's .venv on this
#   machine (Delta jars from .cache/jars, see `make setup`); spark://... -> deploy/spark-submit/standalone.sh;
#   yarn -> deploy/spark-submit/yarn.sh. Arguments of this script go to the job (--set key=value).
#
# Settings come from the environment or from $ALLMTL_ENV_FILE (default /etc/allmtl/score.env,
# readable by the cron user only; it is the place for ALLMTL_PATIENT_KEY), e.g.
#   ALLMTL_CONFIG=conf/prod.yaml      (the default; the archive: --set score.source=... or in a config)
#   ALLMTL_LAKEHOUSE=/srv/allmtl/lakehouse
#   ALLMTL_SCORE_MODEL=demo-mtl-stage3-fab4-mtl-inceptionv3   (required: the pinned model version, a
#     model_id of `models` or models:/<name>@<alias>; never `latest`, which drifts to every new model)
#   SPARK_MASTER=local[4]
#   ALLMTL_PATIENT_KEY=...
# ALLMTL_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_FILE=${ALLMTL_ENV_FILE:-/etc/allmtl/score.env}
if [ -r "$ENV_FILE" ]; then
  set -a
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  set +a
fi

LOG_DIR=${ALLMTL_LOG_DIR:-$REPO/.cache/logs/score_archive}
LOCK_FILE=${ALLMTL_LOCK_FILE:-$REPO/.cache/score_archive.lock}
KEEP_DAYS=${ALLMTL_LOG_KEEP_DAYS:-30}
MASTER=${SPARK_MASTER:-local[2]}
mkdir -p "$LOG_DIR" "$(dirname "$LOCK_FILE")"

exec 9>>"$LOCK_FILE"
if ! flock --nonblock 9; then
  echo "allmtl score_archive: a previous run still holds $LOCK_FILE; skipped this one" >&2
  exit 75
fi

case "${ALLMTL_SCORE_MODEL:-}" in
  ""|latest)
    echo "allmtl score_archive: set ALLMTL_SCORE_MODEL (in $ENV_FILE) to the model version the nightly job" \
         "scores with (a model_id, or models:/<name>@<alias>); 'latest' would change models unannounced" >&2
    exit 2
    ;;
esac

cd "$REPO"   # relative paths of the config (lakehouse, data) are relative to the repo
model_args=(--set "score.model=$ALLMTL_SCORE_MODEL")
case "$MASTER" in
  spark://*)
    cmd=("$REPO/deploy/spark-submit/standalone.sh" score_archive "${model_args[@]}" "$@")
    ;;
  yarn)
    cmd=("$REPO/deploy/spark-submit/yarn.sh" score_archive "${model_args[@]}" "$@")
    ;;
  local*)
    # shellcheck source=deploy/spark-submit/common.sh
    source "$REPO/deploy/spark-submit/common.sh"
    job_file=$(allmtl_job_file score_archive)
    config=$(allmtl_config_file)
    mapfile -t delta_args < <(allmtl_delta_args)
    allmtl_find_spark
    lakehouse_args=()
    [ -n "${ALLMTL_LAKEHOUSE:-}" ] && lakehouse_args=(--set "lakehouse.path=$ALLMTL_LAKEHOUSE")
    cmd=(env "PYSPARK_PYTHON=$REPO/.venv/bin/python"
         "$ALLMTL_SPARK_SUBMIT"
         --master "$MASTER"
         --driver-memory "${ALLMTL_DRIVER_MEMORY:-6g}"
         --name "allmtl score_archive"
         "${delta_args[@]}"
         "$job_file"
         --config "$config"
         --set spark.master=null
         "${lakehouse_args[@]}"
         "${model_args[@]}"
         "$@")
    ;;
  *)
    echo "allmtl score_archive: SPARK_MASTER=$MASTER: expected local[...], spark://... or yarn" >&2
    exit 2
    ;;
esac

if [ "${ALLMTL_DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"; printf '\n'
  exit 0
fi

log="$LOG_DIR/score_archive-$(date -u +%Y%m%dT%H%M%SZ).log"
find "$LOG_DIR" -name 'score_archive-*.log' -mtime +"$KEEP_DAYS" -delete 2>/dev/null || true
(
  echo "== $(date -u +%FT%TZ) start: ${cmd[*]}"
  rc=0
  "${cmd[@]}" || rc=$?
  echo "== $(date -u +%FT%TZ) exit $rc"
  exit "$rc"
) >>"$log" 2>&1 || {
  rc=$?
  echo "allmtl score_archive failed (exit $rc); last lines of $log:" >&2
  tail -n 40 "$log" >&2
  exit "$rc"
}
