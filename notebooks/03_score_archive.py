# Databricks notebook source
# MAGIC %md
# MAGIC # Score the slide archive
# MAGIC
# MAGIC The same call as `allmtl score` (and `jobs/score_archive.py`): every slide the model version has not scored
# MAGIC yet is scored exactly once into `slide_scores`; counts and metrics go to `score_aggregates`, the HTML report
# MAGIC to `<lakehouse>/_reports/score/<run id>/` (see `04_reports`).
# MAGIC
# MAGIC `model`: a model id, a training run id, `latest` (with `score.task` / `score.approach`), or a registered MLflow
# MAGIC model `models:/<name>@<alias>` (e.g. `models:/main.allmtl.allmtl_fab4_mtl@champion` on Databricks).

# COMMAND ----------

from allmtl_spark import notebook, tables
from allmtl_spark.scoring.job import run_score

# COMMAND ----------

w = notebook.widgets()
w.text("config", "conf/demo.yaml", "Config file")
w.text("overrides", "", "Overrides (key=value per line)")
w.text("model", "latest", "Model (id, training run id, latest or models:/<name>@<alias>)")
w.text("run_id", "", "Scoring run id (empty: a new one)")
w.dropdown("report", "true", ["true", "false"], "Write the HTML report")

# COMMAND ----------

cfg = notebook.config_from_widgets(w, {"score.model": "model"})
spark = notebook.session(cfg)
lake = notebook.lakehouse(cfg)

# COMMAND ----------

summary = run_score(spark, cfg, lake, run_id=w.get("run_id").strip() or None, report=w.get("report") == "true")
print(summary.format())

# COMMAND ----------

# MAGIC %md
# MAGIC ## Slide scores and aggregates of this run

# COMMAND ----------

scores = notebook.run_rows(spark, lake, tables.SLIDE_SCORES, summary.run_id)
notebook.display(scores, f"slide_scores of run {summary.run_id}")

# COMMAND ----------

aggregates = notebook.run_rows(spark, lake, tables.SCORE_AGGREGATES, summary.run_id)
notebook.display(aggregates, f"score_aggregates of run {summary.run_id}")
