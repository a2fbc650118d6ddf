# One-command setup, demo and tests. Every target is idempotent: stamps under .venv record what
# is done, so a second `make setup` on a ready machine only re-runs the quick checks.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
CONSTRAINTS := deploy/constraints.txt
LOCK := deploy/lock/cpu.txt
HOROVOD_LOCK := deploy/lock/horovod.txt
JARS_DIR := $(or $(ALLMTL_JARS_DIR),.cache/jars)
DELTA_VERSION := 3.3.2
CONF ?= conf/demo.yaml
PYTEST_ARGS ?=
# Extra overrides for the demo's small cross-validation (conf/demo.yaml sizes it: 2 folds x 1 trial). It is a
# smoke test of the protocol, so its folds train half the training job's epochs: a size chosen for time, not
# tuned (docs/evaluation.md, "How long the demos take"). DEMO_EVAL_SET= runs the training job's epochs.
DEMO_EVAL_SET ?= --set train.stage2.epochs=2 --set train.stage3.epochs=8

export PYTHONWARNINGS := ignore::FutureWarning,ignore::DeprecationWarning
# TensorFlow's C++ INFO lines (oneDNN, CPU features) repeat in every process; warnings still show.
export TF_CPP_MIN_LOG_LEVEL := 1
export ALLMTL_JARS_DIR := $(abspath $(JARS_DIR))

.PHONY: setup demo demo-ood demo-ood-steps demo-full detection-scales test test-all lint bench clean-lakehouse lock

setup: $(VENV)/.stamp-horovod $(JARS_DIR)/.stamp-delta
	@$(BIN)/python -m allmtl_spark.setup_check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The whole environment comes from the hashed lock file (deploy/lock/cpu.txt: the package's
# dependencies with the cpu, spark and dev extras and horovod[spark]'s, every file's SHA-256):
# pip installs exactly those versions and refuses any download whose hash differs. TensorFlow is
# in it, so it is installed before horovod compiles its ops against it.
$(VENV)/.stamp-tf: $(VENV)/bin/python $(LOCK)
	$(PIP) install -q --require-hashes --no-deps -r $(LOCK)
	touch $@

# The package itself (editable), adding nothing: its dependencies are all in the lock.
$(VENV)/.stamp-package: $(VENV)/.stamp-tf pyproject.toml
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

# Built from source with Gloo (no MPI here), from the hashed sdist in deploy/lock/horovod.txt;
# pip caches the built wheel, so later venvs take seconds.
$(VENV)/.stamp-horovod: $(VENV)/.stamp-package $(HOROVOD_LOCK)
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	$(PIP) install -q --require-hashes --no-deps --no-build-isolation -r $(HOROVOD_LOCK)
	$(PIP) check
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

# Jobs run through spark-submit exactly as on a cluster: the Delta jars from the local cache,
# the venv's Python for driver and workers, local[2] for this 2-core machine, the C1 JIT only
# (conf/demo.yaml: spark.extra_conf) with the usual 240 MB code cache: C1 alone gets 48 MB, which a
# scoring job filled ("CodeCache is full. Compiler has been disabled": the rest runs interpreted).
DELTA_JARS = $(shell ls $(JARS_DIR)/delta-*.jar 2>/dev/null | tr '\n' ',' | sed 's/,$$//')
SUBMIT = PYSPARK_PYTHON=$(abspath $(BIN)/python) PYSPARK_DRIVER_PYTHON=$(abspath $(BIN)/python) \
	$(BIN)/spark-submit --master local[2] --driver-memory 6g --jars $(DELTA_JARS) \
	--conf spark.ui.showConsoleProgress=false \
	--driver-java-options "-Dlog4j2.configurationFile=$(abspath allmtl_spark/log4j2.properties) -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
ARCHIVE := data/archive
# Every demo step ends with its wall time and the load average (the machine may be shared: times are
# only comparable at similar load); the last line gives the total after setup (make expands the whole
# recipe once its prerequisites are done, so DEMO_T0 is the time setup ended).
TOOK = echo "   took $$(( $$(date +%s) - t0 )) s (load average $$(cut -d' ' -f1-3 /proc/loadavg))"
DEMO_RUN := demo
SYNTH_BOXES = $(shell $(BIN)/python -c "from allmtl_spark.config import load_config; print(load_config('$(CONF)').synth.output)")/boxes.csv

demo: setup
	$(eval DEMO_T0 := $(shell date +%s))
	@t0=$$(date +%s) && echo "== 1/8 synthetic ALL-IDB data set" && $(BIN)/allmtl synth --config $(CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 2/8 ingest" && $(SUBMIT) jobs/ingest_slides.py --config $(CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 3/8 train the U-Net segmenter" && \
	  $(SUBMIT) jobs/train_segmenter.py --config $(CONF) --run-id $(DEMO_RUN) && $(TOOK)
	@t0=$$(date +%s) && echo "== 4/8 segment the slides (0.5x-2x ALL-IDB1's magnification); white cells vs the generator's boxes" && \
	  $(SUBMIT) jobs/segment_slides.py --config $(CONF) && \
	  $(BIN)/allmtl eval-detection --config $(CONF) --boxes $(SYNTH_BOXES) && $(TOOK)
	@t0=$$(date +%s) && echo "== 5/8 multistage + classical transfer learning" && \
	  $(SUBMIT) jobs/train_mtl.py --config $(CONF) --run-id $(DEMO_RUN)-mtl && $(TOOK)
	@t0=$$(date +%s) && echo "== 6/8 cross-validated evaluation (2 folds x 1 trial, half the epochs: DEMO_EVAL_SET)" && \
	  $(SUBMIT) jobs/evaluate_mtl.py --config $(CONF) --eval-id $(DEMO_RUN)-eval $(DEMO_EVAL_SET) && $(TOOK)
	@t0=$$(date +%s) && echo "== 7/8 score a synthetic archive (slides not used in training)" && \
	  $(BIN)/allmtl synth --config $(CONF) --set synth.output=$(ARCHIVE) --set synth.seed=2026 \
	    --set synth.n_slides=24 --set synth.n_cells=0 && \
	  $(SUBMIT) jobs/score_archive.py --config $(CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 8/8 score again: nothing is new" && $(SUBMIT) jobs/score_archive.py --config $(CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== out-of-distribution batch (other stain, magnification, focus; no smear): flagged for review?" && \
	  $(MAKE) --no-print-directory demo-ood-steps && $(TOOK)
	@t0=$$(date +%s) && echo "== MLflow: the runs, reports and models above" && $(BIN)/allmtl mlflow --config $(CONF) && $(TOOK)
	@$(BIN)/allmtl summary --config $(CONF)
	@echo "make demo took (after setup) $$(( ($$(date +%s) - $(DEMO_T0)) / 60 )) min $$(( ($$(date +%s) - $(DEMO_T0)) % 60 )) s (load average $$(cut -d' ' -f1-3 /proc/loadavg))"

# When not to trust a score (docs/scoring.md): 6 slides each drawn outside the training ranges (stain,
# pixel size, defocus) and 6 without a smear, scored as one folder (site ood); then the trust check:
# AUROC of the OOD score against the archive's slides, flag rates and reasons, ECE before/after.
OOD_ARCHIVE := data/archive_ood
OOD_SYNTH = $(BIN)/allmtl synth --config $(CONF) --set synth.seed=2027 --set synth.n_slides=6 --set synth.n_cells=0
demo-ood: setup
	@$(MAKE) --no-print-directory demo-ood-steps

# The steps alone: `make demo` runs them after its own setup (a second setup check costs ~25 s).
demo-ood-steps:
	@rm -rf $(OOD_ARCHIVE)
	@$(OOD_SYNTH) --set synth.output=$(OOD_ARCHIVE)/stain --set 'synth.stain.haem_strength=[2.2,2.8]' \
	  --set 'synth.stain.eosin_strength=[0.1,0.25]' >/dev/null
	@$(OOD_SYNTH) --set synth.output=$(OOD_ARCHIVE)/magnification --set 'synth.pixel_size_um=[0.45,0.6]' >/dev/null
	@$(OOD_SYNTH) --set synth.output=$(OOD_ARCHIVE)/blur --set 'synth.optics.blur_sigma_um=[0.8,1.5]' >/dev/null
	@$(OOD_SYNTH) --set synth.output=$(OOD_ARCHIVE)/blank --set synth.kind=blank >/dev/null
	@rm -rf $(OOD_ARCHIVE)/*/ALL_IDB1/masks $(OOD_ARCHIVE)/*/ALL_IDB1/xyc $(OOD_ARCHIVE)/*/manifest.csv
	$(SUBMIT) jobs/score_archive.py --config $(CONF) --set 'score.source={kind: folder, path: $(OOD_ARCHIVE), site: ood}'
	$(BIN)/allmtl review --config $(CONF) --ood-site ood

# The cross-validated comparison (docs/evaluation.md): the demo's data, then `allmtl tune` on the
# validation part of the training split (2 rates), a training job with those choices, and 5 folds x 1 trial
# of both approaches on the 4-class task with the colour-only and size-only baselines. Sized for an hour on 2 cores after
# setup; a fresh clone took 41 min (docs/evaluation.md, "How long the demos take").
FULL_CONF := conf/demo-full.yaml
FULL_RUN := demo-full
FULL_TUNE = $(shell $(BIN)/python -c "from allmtl_spark.config import load_config; from allmtl_spark.lakehouse import Lakehouse; print(Lakehouse.from_config(load_config('$(FULL_CONF)').lakehouse).reports)")/tune/$(FULL_RUN)-tune/tune.json

demo-full: setup
	$(eval FULL_T0 := $(shell date +%s))
	@t0=$$(date +%s) && echo "== 1/7 synthetic ALL-IDB data set" && $(BIN)/allmtl synth --config $(FULL_CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 2/7 ingest" && $(SUBMIT) jobs/ingest_slides.py --config $(FULL_CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 3/7 train the U-Net segmenter" && \
	  $(SUBMIT) jobs/train_segmenter.py --config $(FULL_CONF) --run-id $(DEMO_RUN) && $(TOOK)
	@t0=$$(date +%s) && echo "== 4/7 segment the slides" && $(SUBMIT) jobs/segment_slides.py --config $(FULL_CONF) && $(TOOK)
	@t0=$$(date +%s) && echo "== 5/7 tune: stage-3 learning rates of both approaches on validation slides only" && \
	  $(SUBMIT) jobs/tune_mtl.py --config $(FULL_CONF) --run-id $(FULL_RUN)-tune && $(TOOK)
	@t0=$$(date +%s) && echo "== 6/7 train with the tuned rates (train.tuning_record)" && \
	  $(SUBMIT) jobs/train_mtl.py --config $(FULL_CONF) --run-id $(FULL_RUN)-mtl --set train.tuning_record=$(FULL_TUNE) && $(TOOK)
	@t0=$$(date +%s) && echo "== 7/7 cross-validated comparison: 5 folds x 1 trial, colour-only and size-only baselines" && \
	  $(SUBMIT) jobs/evaluate_mtl.py --config $(FULL_CONF) --eval-id $(FULL_RUN)-eval --set train.tuning_record=$(FULL_TUNE) && $(TOOK)
	@echo "make demo-full took (after setup) $$(( ($$(date +%s) - $(FULL_T0)) / 60 )) min $$(( ($$(date +%s) - $(FULL_T0)) % 60 )) s (load average $$(cut -d' ' -f1-3 /proc/loadavg))"

# One segmenter for every magnification (docs/segmentation.md): the demo's U-Net trained on slides at ALL-IDB1's
# 0.155 um/px only segments 12 slides at 0.5x (0.31 um/px, 640x480) and 12 at 2x (0.0775 um/px, 1280x960: the
# same field as 640x480 at 0.155) that magnification, plus 12 at 0.5x with the training slides' white cells per
# area (the generator draws white cells per slide: 4x for 4x the area); eval-detection prints recall and
# one-per-cell precision against each set's boxes. A throwaway lakehouse and data folder, made afresh each run.
SCALES_CONF := conf/detection-scales.yaml
SCALES_SYNTH = $(BIN)/allmtl synth --config $(SCALES_CONF) --set synth.n_slides=12
SCALES_SETS := x0.5 x2 x0.5-dense
SCALES_TEST := ingest.sources=[{kind: manifest, path: data/scales/x0.5/manifest.csv, site: scales-x0.5}, \
  {kind: manifest, path: data/scales/x2/manifest.csv, site: scales-x2}, \
  {kind: manifest, path: data/scales/x0.5-dense/manifest.csv, site: scales-x0.5-dense}]
detection-scales: setup
	@rm -rf lakehouse-scales data/scales
	@echo "== 1/6 synthetic slides: training set at 0.155 um/px, test sets at 0.31 (0.5x) and 0.0775 (2x)" && \
	  $(BIN)/allmtl synth --config $(SCALES_CONF) && \
	  $(SCALES_SYNTH) --set synth.output=data/scales/x0.5 --set synth.seed=152 --set synth.site=scales-x0.5 \
	    --set "synth.pixel_size_um=[0.31,0.31]" && \
	  $(SCALES_SYNTH) --set synth.output=data/scales/x2 --set synth.seed=153 --set synth.site=scales-x2 \
	    --set "synth.pixel_size_um=[0.0775,0.0775]" --set synth.slide_width=1280 --set synth.slide_height=960 && \
	  $(SCALES_SYNTH) --set synth.output=data/scales/x0.5-dense --set synth.seed=156 --set synth.site=scales-x0.5-dense \
	    --set "synth.pixel_size_um=[0.31,0.31]" --set "synth.white_cells_per_slide=[12,28]" \
	    --set "synth.other_white_cells_per_slide=[0,8]"
	@echo "== 2/6 ingest the training set" && $(SUBMIT) jobs/ingest_slides.py --config $(SCALES_CONF)
	@echo "== 3/6 train the U-Net on it (0.155 um/px only)" && \
	  $(SUBMIT) jobs/train_segmenter.py --config $(SCALES_CONF) --run-id scales
	@echo "== 4/6 ingest the test sets" && \
	  $(SUBMIT) jobs/ingest_slides.py --config $(SCALES_CONF) --set "$(SCALES_TEST)"
	@echo "== 5/6 segment every slide" && $(SUBMIT) jobs/segment_slides.py --config $(SCALES_CONF)
	@echo "== 6/6 white cells against the boxes: 0.5x, 2x, 0.5x with the training slides' white cells per area" && \
	  $(foreach s,$(SCALES_SETS),$(BIN)/allmtl eval-detection --config $(SCALES_CONF) --boxes data/scales/$(s)/boxes.csv \
	    --site scales-$(s) --figure lakehouse-scales/_reports/detection/$(s).png &&) true

# The 25 slowest tests are listed at the end, so every CI log shows where the time goes.
test: setup
	$(BIN)/python -m pytest -m "not slow" --durations=25 $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check allmtl_spark jobs tests notebooks && $(BIN)/ruff format --check allmtl_spark jobs tests notebooks

clean-lakehouse:
	rm -rf lakehouse

# Regenerate the hashed lock files from pyproject.toml (extras cpu, spark, dev), horovod[spark] and
# the verified pins in deploy/constraints.txt. uv only resolves; pip installs (see deploy/lock/README.md).
UV_COMPILE = $(BIN)/uv pip compile --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
lock: $(VENV)/bin/python
	$(PIP) install -q "uv==0.13.8"
	$(UV_COMPILE) pyproject.toml deploy/lock/cpu.in --extra cpu --extra spark --extra dev -c $(CONSTRAINTS) \
	  --no-emit-package horovod -o $(LOCK)
	$(UV_COMPILE) deploy/lock/horovod.in --no-deps -o $(HOROVOD_LOCK)
