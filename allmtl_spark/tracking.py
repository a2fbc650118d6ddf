"""MLflow tracking that works, or says why not.

The store is ``lakehouse.mlflow_tracking_uri`` (``databricks`` on Databricks; null: a local file
store ``<lakehouse>/_mlruns``), the experiment ``tracking.experiment`` (on Databricks an absolute
workspace path such as ``/Shared/allmtl``). A job calls :func:`configure` first: it connects and
gets or creates the experiment, so a store that cannot be used stops the job before any work.
With ``tracking.required`` (default: true unless the store is a local file store) every failure
to start a run or to log to it stops the job with a :class:`~allmtl_spark.errors.TrackingError`
that says what to fix; otherwise it is a warning and the job goes on (the ``models`` table, not
MLflow, is the system of record).

What a run holds: parameters, per-epoch metrics (one ``log_batch`` call per history, not one
request per value), the reports and figures as artifacts, and the Delta version of every table
it read as an MLflow dataset input (``mlflow.log_input``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from allmtl_spark.errors import TrackingError

log = logging.getLogger(__name__)
EXPERIMENT = "allmtl"
MAX_PARAM_CHARS = 500


@dataclass(frozen=True)
class Tracking:
    """Where and how strictly a job tracks."""

    uri: str
    experiment: str = EXPERIMENT
    required: bool = False
    registry_uri: str | None = None

    @property
    def local(self) -> bool:
        """A file store on this machine (the laptop and CI), where tracking is optional by default."""
        return not self.uri.startswith("databricks") and urlparse(self.uri).scheme in ("", "file")


_configured: Tracking | None = None


def settings(tracking_uri: str, cfg=None, registry=None) -> Tracking:
    """The tracking settings for a store ``tracking_uri`` from the ``tracking`` and ``registry`` sections.

    Args:
        tracking_uri: the MLflow tracking URI (``Lakehouse.mlflow_uri``).
        cfg: ``TrackingConfig`` (experiment, required); None: the defaults.
        registry: ``RegistryConfig``; its ``uri``, else ``databricks-uc`` on Databricks, else the tracking store.
    """
    experiment = cfg.experiment if cfg is not None else EXPERIMENT
    draft = Tracking(uri=tracking_uri, experiment=experiment)
    required = cfg.required if cfg is not None and cfg.required is not None else not draft.local
    registry_uri = registry.uri if registry is not None and registry.uri else None
    if registry_uri is None:
        registry_uri = "databricks-uc" if tracking_uri.startswith("databricks") else tracking_uri
    return Tracking(tracking_uri, experiment, required, registry_uri)


def configure(tracking: Tracking) -> str | None:
    """Connect to the store and get or create the experiment; later runs of this process use these settings.

    Returns:
        The experiment id, or None when tracking is unavailable and not required (a warning is logged).

    Raises:
        TrackingError: the store or experiment cannot be used and ``tracking.required`` is true.
    """
    global _configured
    _configured = tracking
    try:
        return _experiment_id(tracking)
    except Exception as err:
        _failed(tracking, "could not start", err)
        return None


def current(tracking_uri: str) -> Tracking:
    """The configured settings when they are for ``tracking_uri``, else the defaults for that store."""
    if _configured is not None and _configured.uri == tracking_uri:
        return _configured
    return settings(tracking_uri)


def _experiment_id(tracking: Tracking) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking.uri)
    if tracking.registry_uri:
        mlflow.set_registry_uri(tracking.registry_uri)
    return mlflow.set_experiment(tracking.experiment).experiment_id


def _hint(tracking: Tracking) -> str:
    """What to check for this kind of store."""
    if tracking.uri.startswith("databricks"):
        where = (
            "run on Databricks (or set DATABRICKS_HOST and DATABRICKS_TOKEN), and make tracking.experiment an "
            "absolute workspace path whose folder exists and that you may edit, e.g. /Shared/allmtl or "
            "/Users/<you>/allmtl"
        )
    elif tracking.local:
        where = f"make {tracking.uri.removeprefix('file://')} writable, or set lakehouse.mlflow_tracking_uri"
    else:
        where = f"check that the tracking server {tracking.uri} is reachable and accepts this experiment"
    return f"{where}; or set tracking.required=false to run without tracking"


def _failed(tracking: Tracking, what: str, err: Exception) -> None:
    """Raise (required) or warn about a tracking failure."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    message = f"MLflow tracking {what} (store {tracking.uri}, experiment {tracking.experiment!r}: {detail}); "
    if tracking.required:
        raise TrackingError(message + _hint(tracking)) from None
    log.warning("%scontinuing without it (tracking.required is false)", message)


@contextlib.contextmanager
def mlflow_run(
    tracking_uri: str,
    run_name: str,
    params: dict | None = None,
    tags: dict | None = None,
    nested: bool = False,
    run_id: str | None = None,
) -> Iterator[object | None]:
    """A run in the configured experiment (or run ``run_id`` reopened); yields it, or None without tracking.

    The run ends FINISHED, or FAILED when the body raises.

    Raises:
        TrackingError: the run cannot start and tracking is required.
    """
    import mlflow

    tracking = current(tracking_uri)
    try:
        experiment_id = _experiment_id(tracking)
        run = mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else experiment_id,
            run_name=None if run_id else run_name,
            nested=nested or (mlflow.active_run() is not None),
            tags=tags or {},
        )
    except Exception as err:
        _failed(tracking, f"could not start run {run_name!r}", err)
        yield None
        return
    status = "FAILED"
    try:
        if params:
            log_params(params)
        yield run
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


@contextlib.contextmanager
def _logging(what: str) -> Iterator[None]:
    """Turn an MLflow failure inside into a TrackingError (required) or a warning."""
    import mlflow

    try:
        yield
    except TrackingError:
        raise
    except Exception as err:
        active = mlflow.active_run()
        uri = mlflow.get_tracking_uri()
        _failed(current(uri), f"could not log {what}" + (f" to run {active.info.run_id}" if active else ""), err)


def log_params(params: dict) -> None:
    """Parameters (values as text, cut to 500 characters)."""
    import mlflow

    with _logging("parameters"):
        mlflow.log_params({k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items()})


def log_history(history: dict[str, list[float]]) -> None:
    """Per-epoch Keras metrics with step = epoch, in one batch (MLflow splits it at its 1000-metric limit)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(value), now, epoch)
        for name, values in history.items()
        for epoch, value in enumerate(values)
        if value is not None and math.isfinite(float(value))
    ]
    if not metrics:
        return
    with _logging("the per-epoch metrics"):
        mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def log_metrics(metrics: dict[str, float]) -> None:
    """Final metrics (NaN and None left out: undefined, not zero)."""
    import mlflow

    values = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if values:
        with _logging("metrics"):
            mlflow.log_metrics(values)


def log_artifact(path: str | None, artifact_path: str | None = None) -> None:
    """A file (report, figure, model.json) or a folder of them; a missing path is skipped."""
    import mlflow

    if not path or not os.path.exists(path):
        return
    with _logging(f"artifact {os.path.basename(path)}"):
        if os.path.isdir(path):
            mlflow.log_artifacts(path, artifact_path)
        else:
            mlflow.log_artifact(path, artifact_path)


def log_inputs(lake, versions: dict[str, int], context: str = "training") -> None:
    """The Delta version of every table read, as MLflow dataset inputs (source: the table's path or name).

    Args:
        lake: the ``Lakehouse`` (where each table lives).
        versions: table name -> Delta version read (``models.input_tables``).
        context: MLflow's input context tag (``training``, ``scoring`` ...).
    """
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from allmtl_spark import tables

    declared = {t.name: t for t in tables.ALL_TABLES}
    with _logging("the input tables"):
        for name, version in sorted(versions.items()):
            if name not in declared:
                continue
            where = lake.path(declared[name])
            source = (
                DeltaDatasetSource(delta_table_name=where, delta_table_version=int(version))
                if lake.managed
                else DeltaDatasetSource(path=where, delta_table_version=int(version))
            )
            mlflow.log_input(MetaDataset(source, name=f"{name}@v{int(version)}"), context=context)
        mlflow.log_params({f"input.{name}.version": int(v) for name, v in versions.items()})


def run_url(run) -> str:
    """Where to look at a run: the workspace's experiment page on Databricks, else the run's artifact folder."""
    if run is None:
        return "(not tracked)"
    return f"experiment {run.info.experiment_id}, run {run.info.run_id} ({run.info.artifact_uri})"


def log_score_run(lake, summary, slides_version: int | None = None) -> None:
    """What a scoring run did: model version, counts, the report folder and the ``slides`` version it read."""
    log_params({"model_version": summary.model_version})
    log_metrics(
        {
            "slides_pending": summary.pending,
            "slides_scored": summary.scored,
            "slides_rejected": sum(summary.rejects.values()),
            "scoring_seconds": summary.scoring_seconds,
            "seconds": summary.seconds,
        }
    )
    if summary.report_path:
        log_artifact(os.path.dirname(summary.report_path), "report")  # index.html and its figures
    if slides_version is not None:
        log_inputs(lake, {"slides": slides_version}, context="scoring")


def describe_store(tracking: Tracking, max_runs: int = 20) -> str:
    """Where the runs, their reports and the registered models are: the lines ``allmtl mlflow`` prints."""
    import mlflow

    client = mlflow.MlflowClient(tracking.uri, tracking.registry_uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    lines = [f"MLflow store {tracking.uri}, experiment {tracking.experiment!r}"]
    if experiment is None:
        return "\n".join([*lines, "  no runs yet (a training, evaluation or scoring job makes the experiment)"])
    lines.append(f"  experiment id {experiment.experiment_id}, artifacts under {experiment.artifact_location}")
    runs = client.search_runs([experiment.experiment_id], max_results=max_runs, order_by=["attributes.start_time DESC"])
    lines.append(f"  newest {len(runs)} run(s):")
    for run in runs:
        artifacts = [a.path + ("/" if a.is_dir else "") for a in client.list_artifacts(run.info.run_id)]
        lines.append(
            f"    {run.info.run_name or run.info.run_id:<44} {run.info.status:<9} {run.info.run_id}  "
            f"artifacts: {', '.join(artifacts) or '-'}"
        )
    try:
        models = client.search_registered_models(max_results=100)
    except Exception as err:  # a store without a registry
        return "\n".join([*lines, f"  model registry {tracking.registry_uri}: unavailable ({err})"])
    lines.append(f"  registered models ({tracking.registry_uri}): {len(models)}")
    for model in models:
        versions = client.search_model_versions(f"name='{model.name}'")
        newest = max((int(v.version) for v in versions), default=0)
        aliases = ", ".join(f"@{alias} -> v{version}" for alias, version in sorted((model.aliases or {}).items()))
        lines.append(f"    models:/{model.name}  {len(versions)} version(s), newest v{newest}  {aliases}")
    return "\n".join(lines)
