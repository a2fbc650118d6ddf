"""Jobs that train track to the configured experiment, or stop before any work when they cannot.

``allmtl tune`` once ran without connecting to the config's store: its stage runs went to a default
experiment ``allmtl`` (on Databricks a relative name, so a required store failed after training).
Real MLflow file stores; ``run_train`` is replaced by the tune tests' grid stand-in, whose stages
are tracked by the training job's own ``_track``.
"""

from __future__ import annotations

import pytest

from allmtl_spark.training.job import StageResult, TrainSummary, _track
from tests.training.test_tune import GridTrainer

pytestmark = pytest.mark.spark
EXPERIMENT = "tune-tracked"


class TrackedGridTrainer(GridTrainer):
    """The grid stand-in, each stage logged as ``run_train`` logs it (one MLflow run per stage)."""

    def __call__(self, spark, cfg, lake, run_id=None, **kwargs):
        summary = super().__call__(spark, cfg, lake, run_id=run_id, **kwargs)
        results = []
        for result in summary.results:
            history = {"val_loss": [result.record.metrics["val_loss"]]}
            results.append(StageResult(result.plan, _track(lake, result.record, result.plan, history, "roi-adaptive")))
        return TrainSummary(summary.run_id, results, None, 0.0)


def _tune(tmp_path, *sets: str) -> list[str]:
    args = ["tune", "--config", "conf/demo.yaml", "--run-id", "tu", "--set", f"lakehouse.path={tmp_path / 'lake'}"]
    args += ["--set", "tune.learning_rates=[0.001, 0.003]"]
    for item in sets:
        args += ["--set", item]
    return args


def test_tune_runs_in_the_configured_experiment_with_its_stages_nested(spark, tmp_path, monkeypatch):
    import mlflow

    from allmtl_spark.cli import main

    trainer = TrackedGridTrainer()
    monkeypatch.setattr("allmtl_spark.training.job.run_train", trainer)

    assert main(_tune(tmp_path, f"tracking.experiment={EXPERIMENT}")) == 0

    client = mlflow.MlflowClient(f"file://{tmp_path / 'lake' / '_mlruns'}")
    assert client.get_experiment_by_name("allmtl") is None, "a run went to the default experiment"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "tune tu"]
    stages = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and len(trainer.calls) == 2
    assert len(stages) == 2 * 3  # two grid values x (stage 2 + two stage-3 approaches of demo.yaml's one task)
    assert {r.data.tags.get("mlflow.parentRunId") for r in stages} == {parent.info.run_id}
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["tune.json"]
    assert parent.data.params["tune.learning_rates"] == "[0.001, 0.003]"
    assert {k for k in parent.data.params if k.startswith("chosen.")} == {"chosen.fab4/mtl", "chosen.fab4/classical"}


def test_tune_whose_required_tracking_cannot_start_stops_before_training(spark, tmp_path, monkeypatch, capsys):
    from allmtl_spark.cli import EXIT_UNUSABLE, main

    trainer = TrackedGridTrainer()
    monkeypatch.setattr("allmtl_spark.training.job.run_train", trainer)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")

    code = main(_tune(tmp_path, f"lakehouse.mlflow_tracking_uri=file://{blocker}/mlruns", "tracking.required=true"))

    assert code == EXIT_UNUSABLE and trainer.calls == []
    assert "MLflow tracking could not start" in capsys.readouterr().err


@pytest.mark.unit
def test_a_notebook_connects_to_the_configured_store_like_a_job(tmp_path):
    from allmtl_spark import notebook, tracking
    from allmtl_spark.config import load_config
    from allmtl_spark.errors import TrackingError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = load_config(
        "conf/demo.yaml",
        [f"lakehouse.path={tmp_path / 'lake'}", f"tracking.experiment={EXPERIMENT}", "tracking.required=true"],
    )
    lake = notebook.lakehouse(cfg)
    assert tracking.current(lake.mlflow_uri).experiment == EXPERIMENT and tracking.current(lake.mlflow_uri).required

    broken = load_config(
        "conf/demo.yaml",
        [
            f"lakehouse.path={tmp_path / 'lake'}",
            f"lakehouse.mlflow_tracking_uri=file://{blocker}/mlruns",
            "tracking.required=true",
        ],
    )
    with pytest.raises(TrackingError, match="could not start"):
        notebook.lakehouse(broken)
    tracking.configure(tracking.settings(lake.mlflow_uri))
