"""Every notebook end to end, headless, as a local Python script on local Spark with the demo config.

Synthetic data is prepared once through the CLI (synth -> ingest -> segment with the ROI masks); each notebook then
runs in its own process (``python notebooks/0X_....py``, the way a Databricks source file is also valid Python) with
its widgets set from ``ALLMTL_WIDGET_<NAME>`` variables so the runs are tiny. Training makes this the slow tier.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config import load_config
from allmtl_spark.lakehouse import Lakehouse, read_table

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 1800  # seconds per process; a shared 2-core machine can be slow
DATA = [
    "synth.n_slides=16",
    "synth.n_cells=24",
    "synth.slides_per_patient=1",  # enough patients for stage 2 after stage 3's split
    "synth.slide_width=320",
    "synth.slide_height=240",
    "synth.workers=1",
    "segment.mask_source=roi",
    "segment.crop_size_um=30",
    "spark.driver_memory=3g",
]
TRAIN = [
    "train.tasks=[binary]",
    "train.approaches=[mtl]",
    "train.input_size=75",
    "train.num_proc=1",
    "train.stage2.epochs=1",
    "train.stage3.epochs=1",
    "train.stage2.batch_size=8",
    "train.stage3.batch_size=8",
    "train.augment.copies_per_image=1",
    "train.head_dense_units=[16]",
]
SCORE = [
    "score.task=binary",
    "score.approach=mtl",  # the notebook run trains MTL only
    "score.source=null",
    "score.bootstrap_resamples=50",
    "score.report_sample=2",
    "score.gradcam_slides=1",
]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def timings():
    """Print how long each CLI step and notebook took, after the module (visible with ``-s``)."""
    yield TIMINGS
    print("\n" + "\n".join(f"  {label:<32} {seconds:7.0f}s" for label, seconds in TIMINGS.items()))


def _env(widgets: dict[str, str], figures: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLMTL_WIDGET_", "PYSPARK_GATEWAY"))}
    env.update({f"ALLMTL_WIDGET_{name.upper()}": value for name, value in widgets.items()})
    env["PYTHONUNBUFFERED"] = "1"
    if figures is not None:
        env["ALLMTL_NOTEBOOK_FIGURES"] = str(figures)
    return env


def _run(label: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    TIMINGS[label] = time.perf_counter() - started
    print(f"{label}: exit {done.returncode} in {TIMINGS[label]:.0f}s")
    return done


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-6000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A fresh lakehouse with 16 synthetic slides and 24 cells, ingested and segmented by the CLI."""
    root = tmp_path_factory.mktemp("notebooks")
    overrides = [
        *DATA,
        f"lakehouse.path={root / 'lakehouse'}",
        f"synth.output={root / 'synth'}",
        f"ingest.sources=[{{kind: manifest, path: {root / 'synth' / 'manifest.csv'}, site: synthetic}}]",
    ]
    sets = [arg for item in overrides for arg in ("--set", item)]
    for command in (["synth"], ["ingest", "--run-id", "nb-ingest"], ["segment", "--run-id", "nb-segment"]):
        _ok(
            _run(
                f"cli {command[0]}",
                [
                    sys.executable,
                    "-m",
                    "allmtl_spark.cli",
                    command[0],
                    "--config",
                    "conf/demo.yaml",
                    *sets,
                    *command[1:],
                ],
                _env({}),
            )
        )
    lake = Lakehouse.from_config(load_config(REPO / "conf" / "demo.yaml", overrides).lakehouse)
    return root, overrides, lake


def run_notebook(name: str, widgets: dict[str, str], figures: Path | None = None) -> subprocess.CompletedProcess:
    return _run(f"notebook {name}", [sys.executable, str(REPO / "notebooks" / name)], _env(widgets, figures))


@pytest.fixture(scope="module")
def trained(prepared):
    _, overrides, lake = prepared
    widgets = {"config": "conf/demo.yaml", "overrides": "\n".join([*overrides, *TRAIN]), "run_id": "nb-train"}
    return run_notebook("02_train_mtl.py", widgets), lake


@pytest.fixture(scope="module")
def scored(prepared, trained):
    _, overrides, lake = prepared
    widgets = {"overrides": "\n".join([*overrides, *SCORE]), "model": "nb-train", "run_id": "nb-score"}
    return run_notebook("03_score_archive.py", widgets), lake


def _table(out: str, caption: str) -> str:
    """The text a ``notebook.display(..., caption)`` printed (up to the next caption)."""
    return out.split(f"== {caption}", 1)[1].split("\n== ", 1)[0]


def test_explore_notebook_prints_counts_balance_rejects_and_draws_samples(prepared, tmp_path):
    _, overrides, _ = prepared
    out = _ok(run_notebook("01_explore_data.py", {"overrides": "\n".join(overrides), "samples": "2"}, tmp_path))

    counts = {
        name: int(rows)
        for name, rows in re.findall(r"^\s*(\w+)\s+(\d+)\s+\d+\s*$", _table(out, "table row counts"), re.M)
    }
    assert {k: counts.get(k) for k in ("slides", "cells", "segmented_slides")} == {
        "slides": 16,
        "cells": 24,
        "segmented_slides": 16,
    }
    assert counts["slide_cells"] > 0 and "evaluation_runs" not in counts  # only the tables that exist
    balance = _table(out, "class balance")
    assert sum(int(n) for n in re.findall(r"^\s*slides\s.*?(\d+)\s*$", balance, re.M)) == 16
    assert sum(int(n) for n in re.findall(r"^\s*cells\s.*?(\d+)\s*$", balance, re.M)) == 24
    assert "== rejects by stage and reason" in out
    figure = tmp_path / "sample_slides.png"
    assert f"figure sample_slides: {figure}" in out and figure.stat().st_size > 10_000


def test_training_notebook_registers_the_models_and_shows_the_curves(spark, trained):
    done, lake = trained
    out = _ok(done)

    stage2_task = load_config(REPO / "conf" / "demo.yaml").train.stage2_task
    models = read_table(spark, lake, tables.MODELS).where("run_id = 'nb-train'").toPandas()
    assert sorted(zip(models["stage"], models["task"], models["approach"].fillna("-"), strict=True)) == [
        ("stage2", stage2_task, "-"),
        ("stage3", "binary", "mtl"),
    ]
    assert "training run nb-train" in out and "== models of run nb-train" in out
    assert all(model_id in out for model_id in models["model_id"])
    curves = Path(lake.reports) / "train" / "nb-train" / "training_curves.png"
    assert re.search(rf"^image: {re.escape(str(curves))} \(\d+x\d+\)$", out, re.M)


def test_scoring_notebook_writes_slide_scores_and_aggregates(spark, scored):
    done, lake = scored
    out = _ok(done)

    scores = read_table(spark, lake, tables.SLIDE_SCORES).where("scoring_run_id = 'nb-score'").toPandas()
    assert len(scores) == 16 and scores["model_version"].str.startswith("nb-train-stage3-binary-mtl").all()
    aggregates = read_table(spark, lake, tables.SCORE_AGGREGATES).where("scoring_run_id = 'nb-score'").count()
    assert aggregates > 0
    assert "== slide_scores of run nb-score" in out and "== score_aggregates of run nb-score" in out
    assert sum(slide_id in out for slide_id in scores["slide_id"]) == 16
    assert (Path(lake.reports) / "score" / "nb-score" / "index.html").is_file()


def test_reports_notebook_lists_and_shows_the_evaluation_and_scoring_reports(prepared, scored):
    from allmtl_spark.evaluation import aggregate
    from allmtl_spark.evaluation.report import write_report
    from tests.evaluation.synthetic import CLASS_NAMES, make_predictions, make_runs

    _, overrides, lake = prepared
    _ok(scored[0])
    predictions = make_predictions(trials=1, folds=2, tasks=("binary",))
    results = aggregate.evaluate_predictions(
        predictions,
        make_runs(predictions),
        CLASS_NAMES,
        compare_metrics=["accuracy"],
        n_resamples=20,
        confidence=0.95,
        seed=0,
    )
    evaluation = write_report(
        results,
        str(Path(lake.reports) / "evaluation" / "e-synthetic"),
        "Evaluation e-synthetic",
        {"eval_id": "e-synthetic"},
    )

    out = _ok(run_notebook("04_reports.py", {"overrides": "\n".join(overrides), "limit": "5"}))

    listing = _table(out, "reports under")
    assert re.search(r"^\s*evaluation\s+e-synthetic\s", listing, re.M) and re.search(
        r"^\s*score\s+nb-score\s", listing, re.M
    )
    assert f"HTML report 'Evaluation e-synthetic': {evaluation}" in out
    assert f"HTML report 'Scoring run nb-score': {Path(lake.reports) / 'score' / 'nb-score' / 'index.html'}" in out
    summary = _table(out, "e-synthetic: summary")
    assert "accuracy" in summary and "InceptionV3" in summary
    aggregates = _table(out, "nb-score: score_aggregates")
    assert re.search(r"\brun\s+nb-score\s+count\b", aggregates)
