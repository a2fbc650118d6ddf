# Databricks notebook source
# MAGIC %md
# MAGIC # Reports
# MAGIC
# MAGIC The evaluation reports (`allmtl evaluate`) and scoring reports (`allmtl score`) under the lakehouse reports
# MAGIC folder, newest first. On Databricks each page is shown inline; run locally, the notebook prints each page's
# MAGIC path and its key table (an evaluation's summary, a scoring run's aggregates).

# COMMAND ----------

from allmtl_spark import notebook

# COMMAND ----------

w = notebook.widgets()
w.text("config", "conf/demo.yaml", "Config file")
w.text("overrides", "", "Overrides (key=value per line)")
w.dropdown("kind", "all", ["all", "evaluation", "score"], "Reports to show")
w.text("limit", "3", "How many to show")

# COMMAND ----------

cfg = notebook.config_from_widgets(w)
spark = notebook.session(cfg)
lake = notebook.lakehouse(cfg)

# COMMAND ----------

reports = notebook.list_reports(lake)
notebook.display(reports, f"reports under {lake.reports}")

# COMMAND ----------

notebook.show_reports(spark, lake, reports, kind=w.get("kind"), limit=w.get("limit"))
