# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the lakehouse
# MAGIC
# MAGIC Row counts of the Delta tables, a few segmented slides with their white-cell masks, the class balance of
# MAGIC the slides and cells, and the rejected inputs by reason.
# MAGIC
# MAGIC Needs the `allmtl_spark` wheel on the cluster (`databricks bundle deploy` builds it). `overrides` takes
# MAGIC `key=value` lines as `allmtl ... --set key=value` does, e.g. `lakehouse.path=/Volumes/main/allmtl_dev/lakehouse`
# MAGIC (`;` separates overrides on one line). Run locally as a script, `.venv/bin/python notebooks/01_explore_data.py`,
# MAGIC with widget values from the environment: `ALLMTL_WIDGET_OVERRIDES`, `ALLMTL_WIDGET_SAMPLES`, ...

# COMMAND ----------

from allmtl_spark import notebook

# COMMAND ----------

w = notebook.widgets()
w.text("config", "conf/demo.yaml", "Config file")
w.text("overrides", "", "Overrides (key=value per line)")
w.text("samples", "3", "Sample slides to show")

# COMMAND ----------

cfg = notebook.config_from_widgets(w)
spark = notebook.session(cfg)
lake = notebook.lakehouse(cfg)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tables

# COMMAND ----------

notebook.display(notebook.table_counts(spark, lake), "table row counts")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Sample slides with their masks
# MAGIC
# MAGIC From `segmented_slides` (the most recent segmenter version): the slide, the post-processed white-cell mask
# MAGIC and the isolated cells, at the stored working scale.

# COMMAND ----------

samples = notebook.sample_slides(spark, lake, n=int(w.get("samples")))
notebook.show_figure(notebook.plot_slides(samples), "sample_slides")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Class balance
# MAGIC
# MAGIC Slides and cells per binary label (1 ALL, 0 healthy) and FAB class; nulls are unlabelled.

# COMMAND ----------

notebook.display(notebook.class_balance(spark, lake), "class balance")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rejected inputs by reason
# MAGIC
# MAGIC Every input a job could not use is a row of `rejects` (README, "Reject reasons").

# COMMAND ----------

notebook.display(notebook.rejects_by_reason(spark, lake), "rejects by stage and reason")
