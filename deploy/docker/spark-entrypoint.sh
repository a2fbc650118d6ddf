#!/bin/bash
# Entrypoint of the allmtl images (deploy/docker/Dockerfile.cpu, Dockerfile.gpu).
#
# Spark's Kubernetes backend starts driver pods with `driver <spark-submit args>` and executor pods
# with `executor` plus SPARK_* environment variables; the official Spark images answer those with
# their entrypoint.sh. Our images carry Spark as the pip `pyspark` package (SPARK_HOME is
# .../site-packages/pyspark, which has bin/spark-submit and jars/ with spark-kubernetes), so this
# script does the same dispatch, following Apache Spark's
# resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh (Apache-2.0) for
# Spark 3.5. Any other command (`allmtl ...`, `python ...`, `spark-submit ...`) runs as given.
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME must be set (the image sets it)}"
: "${JAVA_HOME:?JAVA_HOME must be set (the image sets it)}"

# Kubernetes may run the pod under a uid the image does not know; Spark and Hadoop need a name.
if ! getent passwd "$(id -u)" >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "$(id -u):x:$(id -u):$(id -g):${SPARK_USER_NAME:-anonymous uid}:${HOME:-/tmp}:/bin/false" >> /etc/passwd
fi

classpath="${SPARK_HOME}/jars/*"
[ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && classpath="${classpath}:${SPARK_EXTRA_CLASSPATH}"
[ -n "${HADOOP_CONF_DIR:-}" ] && classpath="${HADOOP_CONF_DIR}:${classpath}"
classpath="${SPARK_CONF_DIR:-${SPARK_HOME}/conf}:${classpath}"

case "${1:-}" in
  driver)
    shift
    export PYSPARK_PYTHON PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-${PYSPARK_PYTHON:-python}}"
    cmd=("${SPARK_HOME}/bin/spark-submit"
         --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}"
         --deploy-mode client
         "$@")
    ;;
  executor)
    shift
    # Spark passes the executor JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order.
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    cmd=("${JAVA_HOME}/bin/java"
         "${java_opts[@]}"
         "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}"
         -cp "${classpath}:${SPARK_DIST_CLASSPATH:-}"
         org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
         --driver-url "${SPARK_DRIVER_URL}"
         --executor-id "${SPARK_EXECUTOR_ID}"
         --cores "${SPARK_EXECUTOR_CORES}"
         --app-id "${SPARK_APPLICATION_ID}"
         --hostname "${SPARK_EXECUTOR_POD_IP}"
         --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}"
         --podName "${SPARK_EXECUTOR_POD_NAME}")
    ;;
  *)
    cmd=("$@")
    ;;
esac

# tini reaps zombies (Python workers, horovod's Gloo processes) and forwards signals.
if [ -x /usr/bin/tini ]; then
  exec /usr/bin/tini -s -- "${cmd[@]}"
fi
exec "${cmd[@]}"
