"""The training jobs as MLflow sees them: one place for the CLI and the notebooks.

A job that trains connects to the MLflow store of its config first (``tracking.experiment``,
``tracking.required``), so a store that cannot be used stops it before any work and every run
lands in the configured experiment, never in a default one (on Databricks a relative experiment
name fails). ``allmtl train`` / ``allmtl tune`` then open one parent run (the stages nest in it);
the models a training run registers are logged as MLflow pyfunc models and registered
(``allmtl_spark.mlflow_models``).
"""

from __future__ import annotations

import uuid

from allmtl_spark.config import AppConfig, to_dict


def lakehouse(cfg: AppConfig):
    """The lakehouse of ``cfg``, after connecting to its MLflow store.

    Raises:
        TrackingError: the store or experiment cannot be used and ``tracking.required`` is true.
    """
    from allmtl_spark import tracking
    from allmtl_spark.lakehouse import Lakehouse

    lake = Lakehouse.from_config(cfg.lakehouse)
    tracking.configure(tracking.settings(lake.mlflow_uri, cfg.tracking, cfg.registry))
    return lake


def train(spark, cfg: AppConfig, lake, run_id: str | None = None):
    """``run_train`` in a parent run ``train <run id>``, its curves logged; prints its summary, publishes its models.

    Returns:
        The ``TrainSummary``.
    """
    from allmtl_spark import tracking
    from allmtl_spark.training.job import run_train

    run_id = run_id or f"mtl-{uuid.uuid4().hex[:8]}"
    with tracking.mlflow_run(lake.mlflow_uri, f"train {run_id}", to_dict(cfg.train), {"run_id": run_id}) as run:
        summary = run_train(spark, cfg.train, lake, run_id=run_id)  # each stage: a run nested in this one
        if run is not None:
            tracking.log_artifact(summary.curves_path)
    print(summary.format(), flush=True)
    publish(spark, cfg, lake, [r.record for r in summary.results])
    return summary


def tune(spark, cfg: AppConfig, lake, tune_id: str | None = None):
    """``run_tune`` inside a parent run ``tune <tune id>`` (each grid value's stages nest in it), ``tune.json`` logged.

    The tuning runs' models are not published: they are chosen among, never scored with.

    Returns:
        The ``TuneSummary``.
    """
    from allmtl_spark import tracking
    from allmtl_spark.training.tune import run_tune

    tune_id = tune_id or f"tune-{uuid.uuid4().hex[:8]}"
    params = {**{f"tune.{k}": v for k, v in to_dict(cfg.tune).items()}, **to_dict(cfg.train)}
    with tracking.mlflow_run(lake.mlflow_uri, f"tune {tune_id}", params, {"tune_id": tune_id}) as run:
        summary = run_tune(spark, cfg.train, cfg.tune, lake, tune_id=tune_id)
        if run is not None:
            tracking.log_artifact(summary.path)
            tracking.log_params({f"chosen.{model}": rate for model, rate in summary.choices.items()})
    return summary


def publish(spark, cfg: AppConfig, lake, records) -> list:
    """Log a training run's models as MLflow pyfunc models (and registry versions); print where they are."""
    from allmtl_spark import mlflow_models

    published = mlflow_models.publish_models(spark, cfg, lake, records)
    logged = [r for r in published if r.mlflow_model_uri]
    if logged:
        print(f"MLflow: {len(logged)} model(s) in experiment {cfg.tracking.experiment!r} of {lake.mlflow_uri}")
    return published
