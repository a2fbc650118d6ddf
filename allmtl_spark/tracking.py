"""MLflow tracking: a local file store by default, the workspace's server on Databricks.

``lakehouse.mlflow_tracking_uri`` selects the store (``databricks`` on Databricks); the default
is ``<lakehouse>/_mlruns``. Tracking never blocks a job: if MLflow is unavailable the job logs a
warning and goes on, since the ``models`` table is the system of record.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)
EXPERIMENT = "allmtl"


@contextlib.contextmanager
def mlflow_run(
    tracking_uri: str, run_name: str, params: dict | None = None, tags: dict | None = None, nested: bool = False
) -> Iterator[object | None]:
    """Start an MLflow run (yields the mlflow module's active run, or None when tracking fails)."""
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(EXPERIMENT)
        run = mlflow.start_run(run_name=run_name, nested=nested, tags=tags or {})
    except Exception as err:  # tracking is best-effort by design (see module docstring)
        log.warning("MLflow tracking unavailable (%s); continuing without it", err)
        yield None
        return
    try:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run
    finally:
        mlflow.end_run()


def log_history(history: dict[str, list[float]]) -> None:
    """Per-epoch Keras metrics as MLflow metrics with step = epoch."""
    import mlflow

    for name, values in history.items():
        for epoch, value in enumerate(values):
            mlflow.log_metric(name, float(value), step=epoch)


def log_metrics(metrics: dict[str, float]) -> None:
    import math

    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))})


def log_artifact(path: str) -> None:
    import mlflow

    mlflow.log_artifact(path)
