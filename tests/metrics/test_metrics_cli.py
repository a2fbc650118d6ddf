"""``stats compare`` and ``stats metrics`` on temporary files: outputs parse and match the library."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from allmtl_spark.metrics.classification import (
    compute_bootstrap_ci,
    compute_classification_metrics,
    compute_metrics_from_confusion,
)
from allmtl_spark.metrics.cli import add_stats_parser
from allmtl_spark.metrics.stats import compare_scores

pytestmark = pytest.mark.unit

A = [94.1, 95.3, 93.8, 96.0, 94.7, 95.9, 93.2, 94.9, 95.5, 94.4]
B = [89.9, 91.2, 90.4, 88.7, 90.9, 91.8, 89.1, 90.2, 92.0, 89.5]
NAMES = ["normal", "L1", "L2", "L3"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse ``argv`` as the console script would and run the chosen command."""
    parser = argparse.ArgumentParser(prog="allmtl")
    add_stats_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def samples(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("# multistage\n" + "\n".join(map(str, A)) + "\n\n")
    b.write_text("\n".join(map(str, B)) + "\n")
    return a, b


@pytest.fixture
def predictions(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    scores = rng.dirichlet(np.ones(4), 60)
    scores[np.arange(60), y] += 0.4
    scores = np.round(scores / scores.sum(axis=1, keepdims=True), 6)
    path = tmp_path / "predictions.csv"
    lines = ["y_true," + ",".join(f"score_{c}" for c in NAMES)]
    lines += [NAMES[t] + "," + ",".join(repr(float(v)) for v in row) for t, row in zip(y, scores, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path, y, scores


def test_compare_json_matches_library(samples, capsys):
    a, b = samples
    code, out, _ = run(
        ["stats", "compare", str(a), str(b), "--paired", "--test-train-ratio", "0.1111", "--json"], capsys
    )
    assert code == 0
    data = json.loads(out)
    expected = compare_scores(A, B, paired=True, test_train_ratio=0.1111)
    assert [t["name"] for t in data["tests"]] == [r.name for r in expected]
    for got, want in zip(data["tests"], expected, strict=True):
        assert got["statistic"] == pytest.approx(want.statistic, abs=1e-12)
        assert got["p_value"] == pytest.approx(want.p_value, abs=1e-12)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((want.ci_low, want.ci_high), abs=1e-12)
    assert data["a"]["n"] == 10 and data["a"]["mean"] == pytest.approx(np.mean(A))


def test_compare_text_prints_an_aligned_row_per_test(samples, capsys):
    a, b = samples
    code, out, _ = run(["stats", "compare", str(a), str(b), "--confidence", "0.9"], capsys)
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("test "))
    assert "90% CI low" in lines[header]
    welch = compare_scores(A, B, paired=False, confidence=0.9)[1]
    row = next(line for line in lines if line.startswith("Welch t"))
    assert len(row) == len(next(line for line in lines if line.startswith("Student t")))  # aligned columns
    assert f"{welch.statistic:.6g}" in row and f"{welch.ci_low:.6g}" in row and f"{welch.df:.6g}" in row


def test_compare_reads_a_csv_column(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("trial,accuracy\n" + "".join(f"{i},{v}\n" for i, v in enumerate(A)))
    b.write_text("trial,accuracy\n" + "".join(f"{i},{v}\n" for i, v in enumerate(B)))
    code, out, _ = run(["stats", "compare", str(a), str(b), "--column", "accuracy", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["tests"][0]["statistic"] == pytest.approx(compare_scores(A, B, paired=False)[0].statistic)


def test_compare_bad_line_names_file_and_line(samples, tmp_path, capsys):
    a, _ = samples
    bad = tmp_path / "bad.txt"
    bad.write_text("0.91\n0.92\nnot-a-number\n")
    code, out, err = run(["stats", "compare", str(a), str(bad)], capsys)
    assert code == 2 and out == ""
    assert f"{bad}:3" in err and "'not-a-number' is not a number" in err


def test_compare_csv_without_column_and_missing_column(tmp_path, samples, capsys):
    a, _ = samples
    table = tmp_path / "t.csv"
    table.write_text("trial,accuracy\n0,0.9\n1,0.8\n")
    code, _, err = run(["stats", "compare", str(table), str(table)], capsys)
    assert code == 2 and f"{table}:1" in err and "--column" in err
    code, _, err = run(["stats", "compare", str(table), str(table), "--column", "acc"], capsys)
    assert code == 2 and "no column 'acc'" in err and "accuracy" in err


def test_compare_reports_invalid_statistics_options(samples, tmp_path, capsys):
    a, b = samples
    code, _, err = run(["stats", "compare", str(a), str(b), "--test-train-ratio", "0.1"], capsys)
    assert code == 2 and "paired" in err
    short = tmp_path / "short.txt"
    short.write_text("0.9\n")
    code, _, err = run(["stats", "compare", str(a), str(short)], capsys)
    assert code == 2 and "at least 2 values" in err
    code, _, err = run(["stats", "compare", str(a), str(tmp_path / "missing.txt")], capsys)
    assert code == 2 and "missing.txt" in err and "cannot read" in err


def test_metrics_json_matches_library(predictions, capsys):
    path, y, scores = predictions
    code, out, _ = run(["stats", "metrics", str(path), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    report = compute_classification_metrics(y, scores, NAMES)
    assert data["class_names"] == NAMES
    assert data["accuracy"] == pytest.approx(report.accuracy)
    assert data["macro"]["f1"] == pytest.approx(report.macro.f1)
    assert data["per_class"]["L2"]["auc"] == pytest.approx(report.roc.auc["L2"])
    assert data["roc"]["macro"]["auc"] == pytest.approx(report.roc.macro.auc)
    assert data["confusion"]["counts"] == report.confusion.counts.tolist()
    assert data["bootstrap"] == {}


def test_metrics_text_and_bootstrap(predictions, capsys):
    path, y, scores = predictions
    code, out, _ = run(["stats", "metrics", str(path), "--bootstrap", "200", "--seed", "3"], capsys)
    assert code == 0
    report = compute_classification_metrics(y, scores, NAMES)
    assert f"accuracy: {report.accuracy:.6g}" in out
    l1_row = next(line for line in out.splitlines() if line.startswith("L1 "))
    assert f"{report.precision[1]:.6g}" in l1_row and f"{report.roc.auc['L1']:.6g}" in l1_row
    assert "confusion matrix" in out and "row percentages" in out
    ci = compute_bootstrap_ci(y, scores, n_resamples=200, seed=3)["auc"]
    auc_row = next(line for line in out.splitlines() if line.startswith("auc "))
    assert f"{ci.ci_low:.6g}" in auc_row and f"{ci.ci_high:.6g}" in auc_row


def test_metrics_from_labels_only_has_no_roc(tmp_path, capsys):
    path = tmp_path / "labels.csv"
    path.write_text("y_true,y_pred\nL1,L1\nL2,L1\nnormal,normal\nL1,L1\n")
    code, out, _ = run(["stats", "metrics", str(path), "--classes", "normal,L1,L2,L3", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["roc"] is None
    assert data["class_names"] == NAMES
    assert data["accuracy"] == pytest.approx(0.75)
    assert data["per_class"]["L3"]["support"] == 0  # --classes keeps a class absent from the file


def test_metrics_from_confusion_matrix(tmp_path, capsys):
    path = tmp_path / "confusion.csv"
    path.write_text(",normal,ALL\nnormal,10,2\nALL,3,15\n")
    code, out, _ = run(["stats", "metrics", str(path), "--confusion", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    expected = compute_metrics_from_confusion([[10, 2], [3, 15]], ["normal", "ALL"])
    assert data["class_names"] == ["normal", "ALL"]
    assert data["per_class"]["ALL"]["recall"] == pytest.approx(expected.recall[1]) == pytest.approx(15 / 18)
    assert data["weighted"]["f1"] == pytest.approx(expected.weighted.f1)
    plain = tmp_path / "plain.csv"
    plain.write_text("normal,ALL\n10,2\n3,15\n")
    code, out, _ = run(["stats", "metrics", str(plain), "--confusion", "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(25 / 30)


def test_headerless_confusion_matrix_takes_its_names_from_classes(tmp_path, capsys):
    path = tmp_path / "matrix.csv"
    path.write_text("10,2\n3,15\n")
    code, out, _ = run(["stats", "metrics", "--confusion", "--classes", "normal,ALL", str(path), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["class_names"] == ["normal", "ALL"] and data["accuracy"] == pytest.approx(25 / 30)
    assert data["per_class"]["ALL"]["recall"] == pytest.approx(15 / 18)
    code, _, err = run(["stats", "metrics", "--confusion", "--classes", "a,b,c", str(path)], capsys)
    assert code == 2 and "--classes gives 3 names" in err and "the matrix has 2 classes" in err
    code, _, err = run(["stats", "metrics", "--confusion", str(path)], capsys)
    assert code == 2 and "no header row of class names: name them with --classes" in err


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        ("y_true,score_a,score_b\na,0.2,0.8\nb,0.3,oops\n", [], ":3: score_b 'oops' is not a number"),
        ("y_true,score_a,score_b\na,0.2,0.8\nc,0.3,0.7\n", [], ":3: y_true 'c' is not one of the classes"),
        ("y_true,score_a,score_b\na,0.2\n", [], ":2: has 2 fields, the header has 3"),
        ("label,score_a,score_b\na,0.2,0.8\n", [], ":1: no 'y_true' column"),
        ("y_true,score_a,score_b\na,0.2,0.8\nb,0.3,0.7\n", ["--classes", "x,y"], "do not match"),
        ("a,b\n1,2\n3,-4\n", ["--confusion"], ":3: counts must be whole numbers"),
        ("a,b\n1,2\n", ["--confusion"], "needs a header row"),
    ],
)
def test_metrics_bad_files_exit_2_with_file_and_line(tmp_path, capsys, content, extra, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out, err = run(["stats", "metrics", str(path), *extra], capsys)
    assert code == 2 and out == ""
    assert str(path) in err and expected in err


def test_classes_before_the_file_never_swallow_it(tmp_path, capsys):
    """``--classes a,b,c FILE`` reads FILE; the space-separated form fails saying to use commas."""
    from allmtl_spark.cli import main

    path = tmp_path / "labels.csv"
    path.write_text("y_true,y_pred\nnormal,normal\nL1,L2\nL2,L2\n")
    assert main(["stats", "metrics", "--classes", "normal,L1,L2,L3", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["class_names"] == NAMES and data["n_samples"] == 3
    with pytest.raises(SystemExit) as exc:
        main(["stats", "metrics", "--classes", "normal", "L1", "L2", "L3", str(path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "--classes takes one value: separate several names with commas" in err and "normal,L1,L2,L3" in err


def test_stats_requires_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        run(["stats"], capsys)
    assert exc.value.code == 2
