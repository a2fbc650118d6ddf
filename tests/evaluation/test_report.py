"""Report tables and the self-contained HTML page, on hand-made prediction tables."""

from __future__ import annotations

import base64
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from allmtl_spark.evaluation import aggregate as agg
from allmtl_spark.evaluation import report
from tests.evaluation.synthetic import CLASS_NAMES, make_predictions, make_runs

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def results():
    predictions = make_predictions(trials=2, folds=2, backbones=("InceptionV3", "Xception"))
    return agg.evaluate_predictions(
        predictions,
        make_runs(predictions),
        CLASS_NAMES,
        compare_metrics=["accuracy"],
        n_resamples=50,
        confidence=0.95,
        seed=0,
    )


def _summary_value(results, **where):
    rows = results.summary
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows.iloc[0]


def test_detection_table_reports_the_positive_class_per_backbone(results):
    table = report.detection_table(results.summary, "ALL")
    assert list(table[["backbone", "approach"]].itertuples(index=False, name=None)) == [
        ("InceptionV3", "classical"),
        ("InceptionV3", "mtl"),
        ("Xception", "classical"),
        ("Xception", "mtl"),
    ]
    row = table.iloc[1]
    expected = _summary_value(
        results, backbone="InceptionV3", task="binary", approach="mtl", metric="recall", class_name="ALL"
    )
    assert row["recall"] == expected["mean"] and row["recall_sd"] == expected["sd"]
    assert {"accuracy", "precision", "specificity", "f1", "auc"} <= set(table.columns)


def test_multiclass_table_has_every_class_and_the_averages(results):
    table = report.multiclass_table(results.summary, CLASS_NAMES["fab4"])
    one = table[(table["backbone"] == "Xception") & (table["approach"] == "mtl")]
    assert list(one["class"]) == ["normal", "L1", "L2", "L3", "macro avg", "micro avg", "weighted avg"]
    macro = one[one["class"] == "macro avg"].iloc[0]
    assert (
        macro["f1"]
        == _summary_value(results, backbone="Xception", task="fab4", approach="mtl", metric="macro_f1")["mean"]
    )
    assert math.isnan(one[one["class"] == "weighted avg"]["auc"].iloc[0])


def test_confusion_table_sums_trials_and_rows_are_percentages(results):
    table = report.confusion_table(results.metrics, "fab4", CLASS_NAMES["fab4"])
    one = table[(table["backbone"] == "InceptionV3") & (table["approach"] == "classical")]
    assert list(one["true"]) == ["normal", "L1", "L2", "L3"]
    assert one[["normal", "L1", "L2", "L3"]].to_numpy().sum() == 2 * 24  # trials x slides
    assert one[[f"{c} %" for c in CLASS_NAMES["fab4"]]].sum(axis=1).round(6).eq(100).all()


def test_display_merges_sd_columns_and_escapes():
    frame = pd.DataFrame({"name": ["<b>x</b>"], "accuracy": [0.91234], "accuracy_sd": [0.0123], "n": [3]})
    shown = report.display_frame(frame)
    assert list(shown.columns) == ["name", "accuracy", "n"]
    assert shown.iloc[0]["accuracy"] == "0.912 ± 0.012" and shown.iloc[0]["name"] == "&lt;b&gt;x&lt;/b&gt;"


def test_write_report_embeds_every_figure_and_table(results, tmp_path):
    histories = {
        "trial 0 fold 0": {
            "stage3-binary-mtl-inceptionv3": {
                "loss": [0.9, 0.5],
                "accuracy": [0.5, 0.8],
                "val_loss": [1.0, 0.7],
                "val_accuracy": [0.5, 0.7],
            }
        }
    }

    path = report.write_report(results, str(tmp_path), "Evaluation test", {"evaluation id": "ev"}, histories)

    page = Path(path).read_text(encoding="utf-8")
    pngs = sorted(os.listdir(tmp_path / "figures"))
    # ROC + confusion per task x backbone x approach, the per-fold comparison, one training-curve figure
    assert len(pngs) == 2 * 2 * 2 * 2 + 1 + 1
    for name in pngs:
        data = base64.b64encode((tmp_path / "figures" / name).read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{data}"' in page, name
    assert re.findall(r'src="(?!data:)', page) == []  # nothing loaded from elsewhere
    for stem, (caption, frame) in report.build_tables(results).items():
        assert (tmp_path / "tables" / f"{stem}.csv").is_file()
        assert f"<caption>{caption}</caption>" in page.replace("&#x27;", "'"), stem
        assert len(pd.read_csv(tmp_path / "tables" / f"{stem}.csv")) == len(frame)
    for term in ("Nadeau-Bengio", "McNemar", "paired", "effect", "confidence interval"):
        assert term in page


def test_calibration_section_shows_ece_before_and_after_each_models_temperature(results, tmp_path):
    from dataclasses import replace

    from allmtl_spark.metrics.calibration import apply_temperature, compute_ece

    assert report.calibration_figures(results, str(tmp_path))[0].empty  # no temperatures: no section
    predictions = results.predictions.copy()
    predictions["temperature"] = 1.5 + 0.5 * (predictions["fold"] % 2)  # one temperature per fold model
    table, figures = report.calibration_figures(replace(results, predictions=predictions), str(tmp_path), bins=10)
    row = table[(table["task"] == "fab4") & (table["backbone"] == "Xception") & (table["approach"] == "mtl")].iloc[0]
    cases = predictions[
        (predictions["task"] == "fab4") & (predictions["backbone"] == "Xception") & (predictions["approach"] == "mtl")
    ]
    scaled = [apply_temperature(s, t) for s, t in zip(cases["scores"], cases["temperature"], strict=True)]
    assert row["ECE calibrated"] == pytest.approx(compute_ece(cases["label"], scaled, bins=10))
    assert row["ECE raw"] == pytest.approx(compute_ece(cases["label"], list(cases["scores"]), bins=10))
    assert row["ECE raw"] != row["ECE calibrated"]
    assert len(figures) == len(table) and all(os.path.getsize(path) > 0 for _, path in figures)


def test_comparison_panels_join_the_shape_blind_baselines_fold_by_fold_and_carry_the_headline_test():
    predictions = make_predictions(
        trials=2,
        folds=3,
        tasks=("binary", "fab4"),
        skill={"mtl": 0.5, "classical": 0.25, "colour": 0.1, "size": 0.4},
    )
    # as the evaluation stores them: each shape-blind baseline under a backbone of its own
    predictions.loc[predictions["approach"] == "colour", "backbone"] = "inner-histogram+logreg"
    predictions.loc[predictions["approach"] == "size", "backbone"] = "area+logreg"
    # unbalanced 4-class labels: of the L3 cases (every 4th of 36) keep one, so 9 of the 28 cases are the majority
    l3 = (predictions["task"] == "fab4") & (predictions["label"] == 3) & (predictions["item_id"] != "Im003")
    predictions = predictions[~l3].reset_index(drop=True)
    results = agg.evaluate_predictions(
        predictions, make_runs(predictions), CLASS_NAMES, compare_metrics=["accuracy"], n_resamples=50,
        confidence=0.95, seed=0,
    )  # fmt: skip

    panels = report.comparison_panels(results)

    assert list(panels) == ["InceptionV3 / binary", "InceptionV3 / fab4"]  # the baselines join each task's panel
    for task in ("binary", "fab4"):
        frame, subtitle, majority = panels[f"InceptionV3 / {task}"]
        assert list(frame.columns) == ["trial", "fold", "colour", "size", "classical", "mtl"] and len(frame) == 2 * 3
        for row in frame.itertuples():
            for approach in ("colour", "size", "classical", "mtl"):
                cases = predictions[
                    (predictions["task"] == task)
                    & (predictions["approach"] == approach)
                    & (predictions["trial"] == row.trial)
                    & (predictions["fold"] == row.fold)
                ]
                accuracy = (cases["predicted"] == cases["label"]).mean()
                assert getattr(row, approach) == pytest.approx(accuracy), (task, row.trial, row.fold, approach)
        head = results.headline[results.headline["task"] == task].iloc[0]
        assert f"{head['mean_difference']:+.3f} [{head['ci_low']:+.3f}, {head['ci_high']:+.3f}]" in subtitle
    assert panels["InceptionV3 / binary"][2] == pytest.approx(0.5)  # binary labels alternate
    assert panels["InceptionV3 / fab4"][2] == pytest.approx(9 / 28)


def test_comparison_panels_keep_the_folds_both_approaches_scored():
    predictions = make_predictions(trials=1, folds=3, tasks=("fab4",))
    predictions = predictions[~((predictions["approach"] == "mtl") & (predictions["fold"] == 2))]
    results = agg.evaluate_predictions(
        predictions, make_runs(predictions), CLASS_NAMES, compare_metrics=["accuracy"], n_resamples=50,
        confidence=0.95, seed=0,
    )  # fmt: skip

    frame, _, _ = report.comparison_panels(results)["InceptionV3 / fab4"]

    assert list(frame["fold"]) == [0, 1] and frame[["colour", "size"]].isna().all().all()  # no baselines: NaN
