import numpy as np
import pandas as pd
import pytest

from allmtl_spark.config.schema import ScoreConfig
from allmtl_spark.scoring.aggregates import (
    comparison_rows,
    count_rows,
    labelled_rows,
    previous_version,
    stage_counts,
    summary_lines,
)

pytestmark = pytest.mark.unit
CLASSES = ["normal", "L1", "L2", "L3"]


def _frame(predicted, truth, run="r1", site="a", day="2026-11-01", version="v1", seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        probs = np.full(4, 0.05)
        probs[CLASSES.index(p)] = 0.85
        probs = probs + rng.uniform(0, 0.01, 4)
        probs /= probs.sum()
        rows.append(
            {
                "content_sha256": f"s{i}",
                "scoring_run_id": run,
                "site": site,
                "scored_at": pd.Timestamp(day),
                "predicted_class": p,
                "probabilities": probs,
                "p_leukemia": 1 - probs[0],
                "predicted_leukemia": p != "normal",
                "label_fab": t,
                "label_binary": int(t != "normal"),
                "model_version": version,
                "task": "fab4",
            }
        )
    return pd.DataFrame(rows)


def _spark_frame(spark, frame: pd.DataFrame):
    return spark.createDataFrame(frame.assign(probabilities=frame["probabilities"].apply(list)))


@pytest.mark.spark
def test_counts_per_run_day_and_site(spark):
    frame = pd.concat(
        [
            _frame(["normal", "L1", "L1"], ["normal", "L1", "L2"]),
            _frame(["L3"], ["L3"], run="r0", site="b", day="2026-10-31"),
        ],
        ignore_index=True,
    )
    rows = pd.DataFrame(count_rows(stage_counts(_spark_frame(spark, frame), "r1"), CLASSES))
    run = rows[(rows["scope"] == "run") & (rows["metric"] == "count")].set_index("class_name")["value"]
    assert run.to_dict() == {"normal": 1, "L1": 2, "L2": 0, "L3": 0}
    day = rows[(rows["scope"] == "day") & (rows["scope_value"] == "2026-10-31") & (rows["metric"] == "count")]
    assert day.set_index("class_name")["value"]["L3"] == 1
    assert set(rows[rows["scope"] == "site"]["scope_value"]) == {"a", "b"}
    leukemia = rows[rows["metric"] == "leukemia_count"].set_index(["scope", "scope_value"])
    assert leukemia.loc[("run", "r1"), "value"] == 2 and leukemia.loc[("run", "r1"), "n"] == 3


def test_labelled_metrics_match_hand_counts():
    frame = _frame(["normal", "L1", "L1", "L2", "L3", "normal"], ["normal", "L1", "L2", "L2", "L3", "L1"])
    rows = pd.DataFrame(labelled_rows(frame, CLASSES, ScoreConfig(bootstrap_resamples=50)))
    get = rows.set_index(["metric", "class_name"])["value"]
    assert get[("accuracy", "")] == pytest.approx(4 / 6)
    assert get[("recall", "L1")] == pytest.approx(1 / 2) and get[("precision", "L1")] == pytest.approx(1 / 2)
    assert get[("confusion", "L2/L1")] == 1 and get[("confusion", "L1/normal")] == 1
    assert get[("binary_accuracy", "")] == pytest.approx(5 / 6)  # only the L1 slide called normal is wrong
    acc = rows[rows["metric"] == "accuracy"].iloc[0]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]


def test_binary_labels_alone_still_give_normal_vs_leukemia_metrics():
    # ALL-IDB1 names carry normal / ALL only: no FAB class for the 4-class model's stage-wise metrics
    predicted = ["normal", "L1", "L2", "normal", "L3", "normal"]
    truth = ["normal", "L2", "normal", "L1", "L3", "normal"]
    frame = _frame(predicted, truth).assign(label_fab=None)
    rows = pd.DataFrame(labelled_rows(frame, CLASSES, ScoreConfig(bootstrap_resamples=50)))
    assert "accuracy" not in set(rows["metric"])  # no FAB label, no 4-class accuracy
    binary = rows[rows["metric"] == "binary_accuracy"].iloc[0]
    assert binary["value"] == pytest.approx(4 / 6)  # slides 2 (L2 on a normal) and 3 (normal on an L1) wrong
    assert binary["n"] == 6 and binary["ci_low"] <= binary["value"] <= binary["ci_high"]
    sensitivity = rows[rows["metric"] == "sensitivity"].iloc[0]
    assert sensitivity["value"] == pytest.approx(2 / 3)


def test_an_all_normal_archive_gives_specificity_and_says_why_the_rest_is_undefined():
    # the archive of the issue: every slide normal, most called leukemia; "specificity 0" for class normal
    # (it has no negatives) and no normal-vs-leukemia view at all were wrong
    predicted = ["L1", "L3", "normal", "L3", "L1", "normal", "L2", "normal"]
    frame = _frame(predicted, ["normal"] * 8)
    rows = pd.DataFrame(labelled_rows(frame, CLASSES, ScoreConfig(bootstrap_resamples=50)))
    get = rows.set_index(["metric", "class_name"])
    specificity = get.loc[("specificity", "leukemia")]
    assert specificity["value"] == pytest.approx(3 / 8) and specificity["n"] == 8
    assert 0 < specificity["ci_low"] < 3 / 8 < specificity["ci_high"] < 1  # exact binomial interval
    assert get.loc[("binary_accuracy", "")]["value"] == pytest.approx(3 / 8)
    for metric, class_name in (("sensitivity", "leukemia"), ("binary_auc", ""), ("specificity", "normal")):
        row = get.loc[(metric, class_name)]
        assert pd.isna(row["value"]) and pd.isna(row["ci_low"]), metric
        assert "every labelled slide" in row["undefined_reason"], metric
    assert get.loc[("recall", "L1")]["undefined_reason"] == "no labelled slide of this class"
    assert pd.isna(get.loc[("recall", "normal")]["undefined_reason"])  # defined: 3 of 8 normals called normal
    assert get.loc[("binary_confusion", "normal/leukemia")]["value"] == 5
    assert get.loc[("binary_confusion", "normal/normal")]["value"] == 3


def test_summary_lines_say_why_a_headline_is_undefined():
    frame = _frame(["L1", "normal", "normal"], ["normal"] * 3)
    table = pd.DataFrame(labelled_rows(frame, CLASSES, ScoreConfig(bootstrap_resamples=20)))
    lines = summary_lines(table)
    assert any(line.startswith("specificity (normal called normal): 0.667 [") for line in lines)
    assert "normal vs leukemia AUC: undefined (every labelled slide is normal (3): an AUC needs both classes)" in lines


@pytest.mark.spark
def test_comparison_with_previous_version(spark):
    truth = ["normal", "L1", "L2", "L3"] * 5
    current = _frame(truth, truth, version="v2", day="2026-11-02")
    previous = _frame(["normal"] * 20, truth, version="v1", seed=1)
    pairs = current.merge(previous, on="content_sha256", suffixes=("", "_prev"))
    rows = pd.DataFrame(comparison_rows(pairs, "v1", ScoreConfig(bootstrap_resamples=200)))
    get = rows.set_index("metric")["value"]
    assert get["only_current_correct"] == 15 and get["only_previous_correct"] == 0
    assert get["mcnemar_p"] < 0.001
    assert get["auc_difference"] > 0
    both = pd.concat([current, previous, _frame(["L1"], ["L1"], version="v0", day="2026-10-01")], ignore_index=True)
    assert previous_version(_spark_frame(spark, both), "v2", "fab4") == "v1"  # the newest other version
    assert previous_version(_spark_frame(spark, current), "v2", "fab4") is None


@pytest.mark.spark
def test_the_bounded_sample_is_seeded_and_sorts_on_a_computed_key_not_an_expression(spark):
    """Ordered by the SHA-256 expression, Spark's top-k re-hashed at every comparison (14x slower at 50,000 rows)."""
    import hashlib

    from allmtl_spark.scoring.aggregates import _bounded

    frame = spark.createDataFrame([(f"slide-{i}", i) for i in range(60)], "content_sha256 string, n int")
    sample, total = _bounded(frame, 10, seed=7)

    expected = sorted(range(60), key=lambda i: hashlib.sha256(f"slide-{i}|7".encode()).hexdigest())[:10]
    assert total == 60 and sample.columns == ["content_sha256", "n"]
    assert sorted(r["n"] for r in sample.collect()) == sorted(expected)
    plan = sample._jdf.queryExecution().executedPlan().toString()  # noqa: SLF001 - the physical plan
    top_k = next(line for line in plan.splitlines() if "TakeOrderedAndProject" in line)
    assert "orderBy=[_sample_order" in top_k and "sha2(" not in top_k.split("output=")[0]
    assert _bounded(frame, 60, seed=7) == (frame, 60)  # at most cap rows: the frame itself
