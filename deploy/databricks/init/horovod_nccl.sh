#!/bin/bash
# Databricks cluster init script (deploy/databricks/resources/*.yml attach it to the job clusters):
# TensorFlow 2.15.1 and horovod 0.28.1 compiled against it, with Gloo and, on GPU nodes, NCCL.
#
# Why: the models are tf.keras = Keras 2 models (TF 2.15.1 is the last such TensorFlow; horovod's
# Keras layer breaks on Keras 3). A runtime whose TensorFlow differs gets TF 2.15.1, and then
# horovod must be rebuilt, because its TensorFlow ops are compiled against one TensorFlow ABI.
# The build is docs/stack.md's recipe (Gloo, no MPI, no PyTorch/MXNet) plus HOROVOD_GPU_OPERATIONS=NCCL
# on GPU nodes. About 10 minutes per node when it builds (all nodes build in parallel).
#
# Idempotent: every step checks first and does nothing when the node already has what it needs
# (`horovodrun --check-build` must list TensorFlow, Gloo and, on GPU nodes, NCCL). A failed
# check after a build exits non-zero, which fails the cluster start with this log.
#
# Environment (set in the job cluster's spark_env_vars; init scripts see them):
#   ALLMTL_CONSTRAINTS       deploy/constraints.txt as a workspace file: pip installs use it
#   ALLMTL_INIT_HOROVOD      1 (default) TensorFlow and horovod; 0 TensorFlow only
#   ALLMTL_INIT_GPU          auto (default: nvidia-smi sees a GPU) | 1 | 0
#   ALLMTL_HOROVOD_WHEEL_CACHE  optional folder (e.g. a /Volumes path) to keep the built horovod
#                            wheel: later cluster starts install it in seconds instead of building
#   ALLMTL_INIT_PYTHON       the cluster's Python (default /databricks/python/bin/python)
#   ALLMTL_INIT_DRY_RUN      1: print what would be installed or built, change nothing
set -euo pipefail

TF_VERSION=2.15.1
HOROVOD_VERSION=0.28.1
CUDA_RELEASE=12.2            # TensorFlow 2.15.1's CUDA (and cuDNN 8.9)

PY=${ALLMTL_INIT_PYTHON:-/databricks/python/bin/python}
BIN_DIR=$(dirname "$PY")
CONSTRAINTS=${ALLMTL_CONSTRAINTS:-}
WANT_HOROVOD=${ALLMTL_INIT_HOROVOD:-1}
DRY_RUN=${ALLMTL_INIT_DRY_RUN:-0}
WHEEL_CACHE=${ALLMTL_HOROVOD_WHEEL_CACHE:-}
export TF_CPP_MIN_LOG_LEVEL=3 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "allmtl-init: $*"; }
run() {
  if [ "$DRY_RUN" = 1 ]; then log "would run: $*"; else "$@"; fi
}

if [ ! -x "$PY" ]; then
  log "no Python at $PY (set ALLMTL_INIT_PYTHON)"; exit 1
fi
if [ -n "$CONSTRAINTS" ] && [ ! -f "$CONSTRAINTS" ]; then
  # TensorFlow's own pins (numpy<2, protobuf<5) still hold; the constraints only narrow them.
  log "warning: ALLMTL_CONSTRAINTS=$CONSTRAINTS is not readable here; installing without it"
  CONSTRAINTS=
fi

pip_install() {
  run "$PY" -m pip install --quiet ${CONSTRAINTS:+-c "$CONSTRAINTS"} "$@"
}

gpu_node() {
  case "${ALLMTL_INIT_GPU:-auto}" in
    1|true|yes) return 0 ;;
    0|false|no) return 1 ;;
  esac
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

tf_version() {
  "$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null || echo none
}

dist_installed() {   # dist_installed NAME: is this pip distribution installed?
  "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$1" >/dev/null 2>&1
}

horovod_version() {
  "$PY" -c 'import horovod; print(horovod.__version__)' 2>/dev/null || echo none
}

horovod_check_build() {
  local runner="$BIN_DIR/horovodrun"
  [ -x "$runner" ] || runner=$(command -v horovodrun || true)
  [ -n "$runner" ] || return 0
  "$runner" --check-build 2>/dev/null || true
}

# Prints why the installed horovod does not fit and returns 1, or returns 0 when it does.
horovod_fits() {
  local version report
  version=$(horovod_version)
  if [ "$version" != "$HOROVOD_VERSION" ]; then
    log "horovod: found $version, need $HOROVOD_VERSION"; return 1
  fi
  report=$(horovod_check_build)
  if ! grep -q '\[X\] TensorFlow' <<<"$report"; then
    log "horovod $version: its TensorFlow ops do not load with TensorFlow $(tf_version)"; return 1
  fi
  if ! grep -q '\[X\] Gloo' <<<"$report"; then
    log "horovod $version: built without Gloo"; return 1
  fi
  if gpu_node && ! grep -q '\[X\] NCCL' <<<"$report"; then
    log "horovod $version: GPU node but built without NCCL"; return 1
  fi
  return 0
}

# ------------------------------------------------------------------ TensorFlow
ensure_tensorflow() {
  local found spec
  found=$(tf_version)
  if [ "$found" = "$TF_VERSION" ]; then
    log "TensorFlow $TF_VERSION present"; return 0
  fi
  if gpu_node; then
    spec="tensorflow[and-cuda]==$TF_VERSION"       # pulls the CUDA 12.2 / cuDNN 8.9 pip libraries
  elif dist_installed tensorflow-cpu; then
    spec="tensorflow-cpu==$TF_VERSION"
  else
    spec="tensorflow==$TF_VERSION"                  # replace the runtime's `tensorflow` in place
  fi
  log "TensorFlow $found -> installing $spec (tf.keras must be Keras 2)"
  pip_install "$spec"
}

# ------------------------------------------------------------------ build prerequisites
cuda_home() {
  local dir
  for dir in "${CUDA_HOME:-}" "/usr/local/cuda-$CUDA_RELEASE" /usr/local/cuda; do
    if [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ] && "$dir/bin/nvcc" --version | grep -q 'release 12\.'; then
      echo "$dir"; return 0
    fi
  done
  return 1
}

nccl_headers() { [ -f /usr/include/nccl.h ] && ls /usr/lib/x86_64-linux-gnu/libnccl.so* >/dev/null 2>&1; }

ensure_compiler() {
  if command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then return 0; fi
  log "installing cmake and g++"
  run apt-get update -q
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends cmake g++ make
}

# nvcc and the NCCL headers from NVIDIA's apt repository, CUDA 12.2 builds (the runtime images
# carry the CUDA and NCCL libraries but not always the compiler and headers).
ensure_cuda_toolchain() {
  if cuda_home >/dev/null && nccl_headers; then return 0; fi
  local repo nccl pkg_release=${CUDA_RELEASE/./-}
  [ "$(uname -m)" = x86_64 ] || { log "GPU build supports x86_64 only"; return 1; }
  # shellcheck disable=SC1091
  . /etc/os-release
  case "${ID:-}" in
    ubuntu) repo="ubuntu${VERSION_ID//./}" ;;        # Databricks Runtime 15.4: Ubuntu 22.04 -> ubuntu2204
    debian) repo="debian${VERSION_ID%%.*}" ;;
    *) log "no NVIDIA apt repository known for ${ID:-this OS}; install nvcc and libnccl-dev first"; return 1 ;;
  esac
  log "installing nvcc $CUDA_RELEASE and NCCL headers from NVIDIA's $repo repository"
  run curl -fsSL -o /tmp/cuda-keyring.deb \
    "https://developer.download.nvidia.com/compute/cuda/repos/$repo/x86_64/cuda-keyring_1.1-1_all.deb"
  run dpkg -i /tmp/cuda-keyring.deb
  run apt-get update -q
  nccl=$(apt-cache madison libnccl-dev 2>/dev/null | awk -v want="+cuda$CUDA_RELEASE" 'index($3, want) {print $3; exit}')
  if [ -z "$nccl" ] && [ "$DRY_RUN" != 1 ]; then
    log "no libnccl-dev build for CUDA $CUDA_RELEASE in $repo"; return 1
  fi
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    --allow-downgrades --allow-change-held-packages \
    "cuda-nvcc-$pkg_release" "cuda-cudart-dev-$pkg_release" "cuda-nvml-dev-$pkg_release" \
    "libnccl2=${nccl:-<+cuda$CUDA_RELEASE>}" "libnccl-dev=${nccl:-<+cuda$CUDA_RELEASE>}"
}

# ------------------------------------------------------------------ horovod
first_file() {   # first_file GLOB-EXPANSION...: the first argument that is a file, or nothing
  local f
  for f in "$@"; do [ -f "$f" ] && { echo "$f"; return 0; }; done
  return 0
}

build_horovod() {
  local flavour=gloo pyver build_dir cache_dir wheel
  local -a build_env=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
                      HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1)
  if gpu_node; then
    flavour="nccl-cuda$CUDA_RELEASE"
    ensure_cuda_toolchain
    # Compute capabilities: V100 70, T4 75, A100 80, A10/A10G 86, L4 89, H100 90.
    build_env+=(HOROVOD_GPU=CUDA HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED
                "HOROVOD_BUILD_CUDA_CC_LIST=70,75,80,86,89,90"
                "HOROVOD_CUDA_HOME=$(cuda_home || echo "/usr/local/cuda-$CUDA_RELEASE")"
                HOROVOD_NCCL_INCLUDE=/usr/include HOROVOD_NCCL_LIB=/usr/lib/x86_64-linux-gnu)
  fi
  pyver=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  cache_dir=${WHEEL_CACHE:+$WHEEL_CACHE/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$flavour-$pyver}

  if [ "$(horovod_version)" != none ]; then
    run "$PY" -m pip uninstall -y -q horovod    # same version number, other build: pip would keep it
  fi
  wheel=$(first_file "${cache_dir:-/nonexistent}"/horovod-"$HOROVOD_VERSION"-*.whl)
  if [ -n "$wheel" ]; then
    log "installing the cached build $wheel"
    pip_install "$wheel"
    return 0
  fi
  ensure_compiler
  if [ "$DRY_RUN" = 1 ]; then build_dir=/tmp/horovod-build; else build_dir=$(mktemp -d); fi
  log "building horovod $HOROVOD_VERSION ($flavour) against TensorFlow $TF_VERSION"
  # --no-cache-dir: pip's wheel cache may hold a build against another TensorFlow.
  run env "${build_env[@]}" "$PY" -m pip wheel --quiet --no-deps --no-build-isolation --no-cache-dir \
    --wheel-dir "$build_dir" "horovod==$HOROVOD_VERSION"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  wheel=$(first_file "$build_dir"/horovod-"$HOROVOD_VERSION"-*.whl)
  [ -n "$wheel" ] || { log "pip wheel left no horovod wheel in $build_dir"; return 1; }
  pip_install "$wheel"
  if [ -n "$cache_dir" ]; then
    { mkdir -p "$cache_dir" && cp "$wheel" "$cache_dir/" && log "kept the build in $cache_dir"; } ||
      log "could not write $cache_dir; the next start builds again"
  fi
  rm -rf "$build_dir"
}

# ------------------------------------------------------------------ main
log "python $PY, GPU node: $(gpu_node && echo yes || echo no), dry run: $DRY_RUN"
ensure_tensorflow
if [ "$WANT_HOROVOD" != 1 ]; then
  log "ALLMTL_INIT_HOROVOD=$WANT_HOROVOD: horovod left as it is"
  exit 0
fi
if horovod_fits; then
  log "horovod $HOROVOD_VERSION fits (TensorFlow, Gloo$(gpu_node && echo ', NCCL')): nothing to build"
  exit 0
fi
build_horovod
if [ "$DRY_RUN" = 1 ]; then exit 0; fi
if ! horovod_fits; then
  log "horovod check failed after the build:"; horovod_check_build; exit 1
fi
log "horovod $HOROVOD_VERSION ready"
horovod_check_build
