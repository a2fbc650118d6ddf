"""``allmtl summary`` on a real lakehouse: the rows it prints are the tables' rows."""

from __future__ import annotations

import re

import pytest

from allmtl_spark.summary import LakeSummary, format_summary
from tests.ingest.malformed import good_jpeg


@pytest.mark.slow  # 25 s; make demo ends with this summary
@pytest.mark.spark
def test_summary_prints_each_tables_rows_and_where_to_look(spark, tmp_path, capsys):
    from allmtl_spark import tables
    from allmtl_spark.cli import main
    from allmtl_spark.config import load_config
    from allmtl_spark.lakehouse import Lakehouse, read_table

    images = tmp_path / "ALL_IDB1" / "im"
    images.mkdir(parents=True)
    for i, label in enumerate([1, 0, 1], start=1):
        (images / f"Im00{i}_{label}.jpg").write_bytes(good_jpeg(seed=i))
    (images / "Im009_1.jpg").write_bytes(b"not a jpeg")  # a reject
    settings = [
        f"lakehouse.path={tmp_path / 'lake'}",
        f"ingest.sources=[{{kind: allidb1, path: {tmp_path / 'ALL_IDB1'}}}]",
        "privacy.patient_key=k",
    ]
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    assert main(["ingest", *overrides]) == 0
    capsys.readouterr()
    assert main(["summary", *overrides]) == 0
    out = capsys.readouterr().out
    lake = Lakehouse.from_config(load_config(None, settings).lakehouse)
    printed = dict(re.findall(r"^  (\w+) +(\d+|not made yet)$", out, re.M))
    assert printed["slides"] == str(read_table(spark, lake, tables.SLIDES).count()) == "3"
    assert printed["rejects"] == str(read_table(spark, lake, tables.REJECTS).count()) != "0"
    assert printed["segmented_slides"] == printed["slide_scores"] == "not made yet"
    assert f"  models   {lake.models}" in out and f"mlflow ui --backend-store-uri {lake.mlflow_uri}" in out


@pytest.mark.unit
def test_the_figures_of_models_evaluation_and_scoring_are_printed():
    summary = LakeSummary(
        "/lake",
        {"slides": 40, "slide_scores": 24},
        models=[
            {
                "model_id": "demo-mtl-stage3-fab4-mtl-inceptionv3",
                "stage": "stage3",
                "task": "fab4",
                "approach": "mtl",
                "backbone": "inceptionv3",
                "metrics": {"val_accuracy": 0.5, "loss": 1.2},
            }
        ],
        evaluation={
            "eval_id": "demo-eval",
            "folds": 4,
            "trials": 1,
            "accuracy": {"fab4 inceptionv3 mtl": (0.61, 0.61, 0.61)},
            "report": "/lake/_reports/evaluation/demo-eval/index.html",
        },
        scoring={"run_id": "score-1", "slides": 24, "leukemia": 11, "model_version": "m", "report": None, "total": 24},
        reports=["/lake/_reports/evaluation/demo-eval/index.html", "/lake/_reports/segmentation_example.png"],
        models_dir="/lake/_models",
        mlflow_uri="file:///lake/_mlruns",
    )
    text = format_summary(summary)
    assert "stage3 fab4 mtl inceptionv3" in text and "val_accuracy 0.500" in text and "loss" not in text
    assert "evaluation demo-eval: 1 trial(s) x 4 folds" in text and "0.610 (0.610-0.610)" in text
    assert "scoring run score-1: 24 slide(s) scored by m, 11 predicted leukemia" in text
    assert text.count("demo-eval/index.html") == 1 and "segmentation_example.png" in text
