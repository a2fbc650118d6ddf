# One-command setup, demo and tests. Every target is idempotent: stamps under .venv record what
# is done, so a second `make setup` on a ready machine only re-runs the quick checks.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
CONSTRAINTS := deploy/constraints.txt
JARS_DIR := $(or $(ALLMTL_JARS_DIR),.cache/jars)
DELTA_VERSION := 3.3.2
CONF ?= conf/demo.yaml
PYTEST_ARGS ?=

export PYTHONWARNINGS := ignore::FutureWarning,ignore::DeprecationWarning
export ALLMTL_JARS_DIR := $(abspath $(JARS_DIR))

.PHONY: setup demo test test-all lint bench clean-lakehouse

setup: $(VENV)/.stamp-horovod $(JARS_DIR)/.stamp-delta
	@$(BIN)/python -m allmtl_spark.setup_check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# TensorFlow goes in first: horovod compiles its ops against the installed TensorFlow.
$(VENV)/.stamp-tf: $(VENV)/bin/python $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) "tensorflow-cpu==2.15.1" "setuptools<70" wheel
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-tf pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[cpu,dev]"
	touch $@

# Built from source with Gloo (no MPI here); pip caches the wheel, so later venvs take seconds.
$(VENV)/.stamp-horovod: $(VENV)/.stamp-package
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	$(PIP) install -q --no-build-isolation -c $(CONSTRAINTS) "horovod[spark]==0.28.1"
	$(BIN)/horovodrun --check-build | tee $(VENV)/horovod-build.txt
	grep -q "\[X\] TensorFlow" $(VENV)/horovod-build.txt && grep -q "\[X\] Gloo" $(VENV)/horovod-build.txt
	touch $@

# Delta's JVM side: two jars from Maven Central into a local cache, so Spark starts offline.
$(JARS_DIR)/.stamp-delta:
	mkdir -p $(JARS_DIR)
	for a in io.delta:delta-spark_2.12:$(DELTA_VERSION) io.delta:delta-storage:$(DELTA_VERSION); do \
	  mvn -q dependency:copy -Dartifact=$$a -DoutputDirectory=$(abspath $(JARS_DIR)) || exit 1; \
	done
	touch $@

demo: setup
	$(BIN)/python -m allmtl_spark.cli demo --config $(CONF)

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check allmtl_spark jobs tests notebooks && $(BIN)/ruff format --check allmtl_spark jobs tests notebooks

clean-lakehouse:
	rm -rf lakehouse
