# Databricks notebook source
# MAGIC %md
# MAGIC # Train the multistage transfer-learning models
# MAGIC
# MAGIC The same call as `allmtl train` (and `jobs/train_mtl.py`): stage 2 on the single cells, then stage 3 on the
# MAGIC slides, with Horovod on the cluster's workers; every model is registered in `models`, logged as an MLflow
# MAGIC model in the run of its stage (nested in one run `train <run id>` of `tracking.experiment`) and, with
# MAGIC `registry.name`, registered in the MLflow model registry.
# MAGIC A run id that already exists resumes that run: finished stages are skipped.
# MAGIC
# MAGIC `overrides`: `key=value` lines, e.g. `train.stage3.epochs=3`, `train.num_proc=4`, `lakehouse.path=/Volumes/...`.

# COMMAND ----------

from allmtl_spark import notebook, tables, tracked

# COMMAND ----------

w = notebook.widgets()
w.text("config", "conf/demo.yaml", "Config file")
w.text("overrides", "", "Overrides (key=value per line)")
w.text("run_id", "", "Run id (empty: a new one)")

# COMMAND ----------

cfg = notebook.config_from_widgets(w)
spark = notebook.session(cfg)
lake = notebook.lakehouse(cfg)

# COMMAND ----------

summary = tracked.train(spark, cfg, lake, run_id=w.get("run_id").strip() or None)  # prints its summary

# COMMAND ----------

# MAGIC %md
# MAGIC ## Registered models and training curves

# COMMAND ----------

models = notebook.run_rows(spark, lake, tables.MODELS, summary.run_id)
notebook.display(models, f"models of run {summary.run_id}")

# COMMAND ----------

notebook.show_image(summary.curves_path)
