"""MLflow tracking works against a real local file store, or stops the job saying why."""

from __future__ import annotations

import logging

import pytest

from allmtl_spark import tracking
from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.config.schema import LakehouseConfig, RegistryConfig, TrackingConfig
from allmtl_spark.errors import TrackingError
from allmtl_spark.lakehouse import Lakehouse

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    lake = Lakehouse.from_config(LakehouseConfig(path=str(tmp_path / "lakehouse")))
    settings = tracking.settings(lake.mlflow_uri, TrackingConfig(experiment="allmtl-test", required=True))
    assert tracking.configure(settings)
    yield lake
    tracking.configure(tracking.settings(lake.mlflow_uri))


def test_a_run_holds_params_batched_epoch_metrics_artifacts_and_the_data_versions(store, tmp_path):
    import mlflow

    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html></html>")
    (report / "confusion.png").write_bytes(b"png")
    history = {"loss": [0.9, 0.5, 0.4], "val_accuracy": [0.5, float("nan"), 0.75]}

    with tracking.mlflow_run(store.mlflow_uri, "stage", {"lr": 0.001, "long": "x" * 900}) as run:
        tracking.log_history(history)
        tracking.log_metrics({"test_accuracy": 0.8, "auc": float("nan")})
        tracking.log_artifact(str(report), "report")
        tracking.log_inputs(store, {"slides": 3, "cells": 7})

    client = mlflow.MlflowClient(store.mlflow_uri)
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.params["lr"] == "0.001" and len(done.data.params["long"]) == tracking.MAX_PARAM_CHARS
    assert done.data.params["input.slides.version"] == "3"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (0, 0.9),
        (1, 0.5),
        (2, 0.4),
    ]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0, 2]  # NaN left out
    assert done.data.metrics["test_accuracy"] == 0.8 and "auc" not in done.data.metrics
    assert sorted(f.path for f in client.list_artifacts(run.info.run_id, "report")) == [
        "report/confusion.png",
        "report/index.html",
    ]
    inputs = {d.dataset.name: d.dataset for d in done.inputs.dataset_inputs}
    assert sorted(inputs) == ["cells@v7", "slides@v3"]
    assert '"delta_table_version": 3' in inputs["slides@v3"].source and "lakehouse/slides" in inputs["slides@v3"].source


def test_a_run_whose_job_fails_is_marked_failed(store):
    import mlflow

    with pytest.raises(ZeroDivisionError), tracking.mlflow_run(store.mlflow_uri, "broken") as run:
        1 / 0  # noqa: B018

    assert mlflow.MlflowClient(store.mlflow_uri).get_run(run.info.run_id).info.status == "FAILED"


def test_an_unwritable_store_stops_a_job_that_requires_tracking(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    settings = tracking.settings(f"file://{blocker}/mlruns", TrackingConfig(required=True))

    with pytest.raises(TrackingError, match=r"could not start .*make .*not-a-folder/mlruns writable.*required=false"):
        tracking.configure(settings)


def test_databricks_without_credentials_is_loud_by_default(monkeypatch, tmp_path):
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = tracking.settings("databricks", TrackingConfig(experiment="/Shared/allmtl"))

    assert settings.required and settings.registry_uri == "databricks-uc"  # off the laptop: required
    with pytest.raises(TrackingError, match=r"run on Databricks \(or set DATABRICKS_HOST and DATABRICKS_TOKEN\)"):
        tracking.configure(settings)


def test_optional_tracking_warns_and_lets_the_job_go_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    uri = f"file://{blocker}/mlruns"
    settings = tracking.settings(uri, TrackingConfig(required=False))

    with caplog.at_level(logging.WARNING):
        assert tracking.configure(settings) is None
        with tracking.mlflow_run(uri, "stage") as run:
            ran = True
    assert run is None and ran
    assert "continuing without it" in caplog.text
    tracking.configure(tracking.settings(uri))


def test_a_failing_log_call_is_loud_when_required(store):
    with (
        pytest.raises(TrackingError, match=r"could not log parameters to run"),
        tracking.mlflow_run(store.mlflow_uri, "stage", {"lr": 0.1}),
    ):
        tracking.log_params({"lr": 0.2})  # MLflow refuses to change a logged parameter


def test_the_defaults_are_optional_on_a_laptop_and_required_elsewhere():
    assert not tracking.settings("file:///tmp/x/_mlruns").required
    assert tracking.settings("http://mlflow.internal:5000").required
    assert not tracking.settings("databricks", TrackingConfig(experiment="/Shared/a", required=False)).required
    assert tracking.settings("databricks", registry=RegistryConfig(uri="databricks")).registry_uri == "databricks"


def test_databricks_experiments_and_model_names_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"tracking.experiment is 'allmtl', but on Databricks .* /Shared/allmtl"):
        load_config("conf/demo.yaml", ["lakehouse.mlflow_tracking_uri=databricks"])
    with pytest.raises(ConfigError, match=r"registry.name is 'allmtl', but Unity Catalog .* three-level"):
        load_config(
            "conf/demo.yaml",
            ["lakehouse.mlflow_tracking_uri=databricks", "tracking.experiment=/Shared/a", "registry.name=allmtl"],
        )


@pytest.mark.spark
def test_a_job_whose_required_tracking_cannot_start_stops_before_any_work(spark, tmp_path, monkeypatch, capsys):
    from allmtl_spark.cli import EXIT_UNUSABLE, main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    lakehouse = tmp_path / "lakehouse"

    code = main(
        [
            "score",
            "--config",
            "conf/demo.yaml",
            "--set",
            f"lakehouse.path={lakehouse}",
            "--set",
            f"lakehouse.mlflow_tracking_uri=file://{blocker}/mlruns",
            "--set",
            "tracking.required=true",
        ]
    )

    assert code == EXIT_UNUSABLE
    assert "MLflow tracking could not start" in capsys.readouterr().err
    assert not lakehouse.exists()


def test_allmtl_mlflow_says_where_the_runs_reports_and_models_are(store, tmp_path, capsys):
    import mlflow

    from allmtl_spark.cli import main

    report = tmp_path / "index.html"
    report.write_text("<html></html>")
    with tracking.mlflow_run(store.mlflow_uri, "score demo") as run:
        tracking.log_artifact(str(report), "report")
    mlflow.set_registry_uri(store.mlflow_uri)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/report", "allmtl_fab4_mtl")
    mlflow.MlflowClient().set_registered_model_alias("allmtl_fab4_mtl", "champion", version.version)
    mlflow.set_registry_uri(None)

    args = ["mlflow", "--set", f"lakehouse.path={store.root}", "--set", "tracking.experiment=allmtl-test"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"MLflow store {store.mlflow_uri}, experiment 'allmtl-test'" in out
    assert "score demo" in out and run.info.run_id in out and "artifacts: report/" in out
    assert "models:/allmtl_fab4_mtl  1 version(s), newest v1  @champion -> v1" in out
