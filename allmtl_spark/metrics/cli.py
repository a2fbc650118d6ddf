"""``allmtl stats compare`` and ``allmtl stats metrics``: the metrics layer on files, for the console script.

The console script calls ``add_stats_parser(subparsers)`` and then ``args.func(args)``, which returns
the exit code: 0 on success, 2 when an input file or an argument is wrong (the message, naming the
file and line, goes to stderr). ``python -m allmtl_spark.metrics.cli stats ...`` runs it alone.

File formats:

- ``compare A B``: one number per line (blank lines and ``#`` comments skipped), or with
  ``--column NAME`` a CSV with a header row, of which column NAME is read.
- ``metrics PREDICTIONS.csv``: a header row with ``y_true`` and one ``score_<class>`` column per
  class (an optional ``y_pred`` column overrides the argmax), or ``y_true,y_pred`` only (no ROC).
  Labels are class names or class indices ``0..k-1``.
- ``metrics --confusion MATRIX.csv``: a header row of the k class names, then k rows of k counts
  (rows true class, columns predicted); a leading column of row names (as pandas writes) is allowed.
  Without a header row (k rows of k counts only), ``--classes A,B,...`` names the k classes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from allmtl_spark.metrics.classification import (
    ClassificationReport,
    compute_bootstrap_ci,
    compute_classification_metrics,
    compute_metrics_from_confusion,
)
from allmtl_spark.metrics.stats import TestResult, compare_scores

EXIT_OK, EXIT_INPUT_ERROR = 0, 2
SCORE_PREFIX = "score_"


class InputFileError(ValueError):
    """A file cannot be used; the message names the file and, where it applies, the line."""

    def __init__(self, path: Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def add_stats_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``stats`` command, with ``compare`` and ``metrics`` subcommands, to a CLI.

    Args:
        subparsers: the object returned by ``parser.add_subparsers()`` of the main CLI.

    Returns:
        The ``stats`` parser. Each subcommand sets ``func`` (namespace -> int exit code).
    """
    stats = subparsers.add_parser(
        "stats", help="significance tests and classification metrics on files", description=__doc__.split("\n")[0]
    )
    commands = stats.add_subparsers(dest="stats_command", metavar="{compare,metrics}", required=True)
    _add_compare_parser(commands)
    _add_metrics_parser(commands)
    return stats


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare two samples of per-trial scores with t-tests",
        description="Student, Welch, and with --paired the paired and corrected resampled t-tests of A - B.",
    )
    parser.add_argument("a", metavar="A", type=Path, help="scores of model A: one number per line, or a CSV")
    parser.add_argument("b", metavar="B", type=Path, help="scores of model B, same format")
    parser.add_argument("--paired", action="store_true", help="line i of A and of B come from the same trial/fold")
    parser.add_argument(
        "--test-train-ratio",
        type=float,
        default=None,
        metavar="R",
        help="n_test/n_train of one split (1/(k-1) for k-fold CV); adds the Nadeau-Bengio test (needs --paired)",
    )
    parser.add_argument("--column", default=None, metavar="NAME", help="read column NAME of CSV files with a header")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_compare)


def _add_metrics_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "metrics",
        help="accuracy, precision, recall, specificity, F1, confusion matrix, ROC/AUC",
        description="All classification metrics of a predictions CSV (or of a confusion matrix with --confusion).",
    )
    parser.add_argument("predictions", metavar="PREDICTIONS.csv", type=Path, help="y_true + score_<class> columns")
    parser.add_argument(
        "--confusion",
        action="store_true",
        help="the file is a confusion matrix (a header row of class names, or --classes)",
    )
    parser.add_argument(
        "--classes",
        type=comma_list,
        default=None,
        metavar="A,B,...",
        help="class names in index order, comma separated (e.g. normal,L1,L2,L3); "
        "with --confusion they name a matrix without a header row",
    )
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="add percentile CIs from N resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the bootstrap CIs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run_metrics)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _parse_number(path: Path, line: int, text: str, what: str = "value") -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputFileError(path, f"{what} {text!r} is not a number", line) from None
    if not math.isfinite(value):
        raise InputFileError(path, f"{what} {text!r} is not a finite number", line)
    return value


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """CSV rows with their 1-based line numbers, blank rows skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"cannot read: {exc}") from None
    return [(line, row) for line, row in rows if any(row)]


def read_numbers(path: Path, column: str | None = None) -> np.ndarray:
    """Read a sample of scores.

    Args:
        path: a file of one number per line (blank and ``#`` lines skipped), or a CSV with a header.
        column: the CSV column to read; None for the one-number-per-line format.

    Returns:
        ``(n,)`` float64 values.

    Raises:
        InputFileError: naming the file and line of the first bad value.
    """
    if column is not None:
        return _read_column(path, column)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read: {exc}") from None
    values = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if "," in text or "\t" in text or ";" in text:
            raise InputFileError(path, f"{text!r} holds several fields; for a CSV pass --column NAME", number)
        values.append(_parse_number(path, number, text))
    if not values:
        raise InputFileError(path, "no numbers found")
    return np.array(values)


def _read_column(path: Path, column: str) -> np.ndarray:
    rows = _read_rows(path)
    if not rows:
        raise InputFileError(path, "the file is empty")
    header_line, header = rows[0]
    if column not in header:
        raise InputFileError(path, f"no column {column!r}; the header has {header}", header_line)
    position = header.index(column)
    values = []
    for line, row in rows[1:]:
        if position >= len(row) or not row[position]:
            raise InputFileError(path, f"column {column!r} is empty", line)
        values.append(_parse_number(path, line, row[position], f"{column}"))
    if not values:
        raise InputFileError(path, f"column {column!r} has no values")
    return np.array(values)


# Options taking several values (one comma-separated argument each), with an example for error messages.
LIST_OPTIONS = ("--classes",)
LIST_EXAMPLES = {"--classes": "--classes normal,L1,L2,L3"}


def comma_list(text: str) -> list[str]:
    """argparse type of an option with several values: one argument, comma separated (``a,b,c``).

    One argument, never ``nargs="+"``, so the option cannot swallow the positionals after it.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def unrecognized_hint(argv: Sequence[str], extras: Sequence[str]) -> str:
    """The ``unrecognized arguments`` message, saying to use commas when a list option was space separated."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    listed = [option for option in LIST_OPTIONS if option in argv]
    if listed:
        example = LIST_EXAMPLES[listed[0]]
        message += f"; {listed[0]} takes one value: separate several names with commas (e.g. {example})"
    return message


def _class_list(classes: Sequence[str] | None) -> list[str] | None:
    """``--classes a,b`` (and a list ``["a", "b"]`` from Python) gives ``["a", "b"]``."""
    if classes is None:
        return None
    return [name.strip() for item in classes for name in item.split(",") if name.strip()]


def _label_index(path: Path, line: int, label: str, names: list[str], column: str) -> int:
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < len(names):
        return int(label)
    raise InputFileError(
        path, f"{column} {label!r} is not one of the classes {names} (nor an index 0..{len(names) - 1})", line
    )


def _default_label_classes(labels: list[str]) -> list[str]:
    unique = set(labels)
    if all(label.isdigit() for label in unique):
        return [str(i) for i in range(max(int(label) for label in unique) + 1)]
    return sorted(unique)


def read_predictions(path: Path, classes: Sequence[str] | None = None) -> dict:
    """Read a predictions CSV.

    Args:
        path: CSV with a header: ``y_true`` and ``score_<class>`` columns (optional ``y_pred``), or
            ``y_true,y_pred``.
        classes: class names in index order; with score columns they must be the same set as the
            ``score_`` suffixes (and give their order); with labels only, every label must be one.

    Returns:
        ``{"y_true": (n,) int64, "scores": (n, k) float64 or None, "y_pred": (n,) int64 or None,
        "class_names": [k names]}``.
    """
    rows = _read_rows(path)
    if len(rows) < 2:
        raise InputFileError(path, "needs a header row and at least one data row")
    header_line, header = rows[0]
    if "y_true" not in header:
        raise InputFileError(path, f"no 'y_true' column; the header has {header}", header_line)
    score_columns = [name for name in header if name.startswith(SCORE_PREFIX)]
    if not score_columns and "y_pred" not in header:
        raise InputFileError(path, "needs score_<class> columns or a y_pred column", header_line)
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise InputFileError(path, f"has {len(row)} fields, the header has {len(header)}", line)
    names = _class_list(classes)
    if score_columns:
        names = _score_class_names(path, header_line, score_columns, names)
    elif names is None:
        names = _default_label_classes([row[header.index(c)] for _, row in rows[1:] for c in ("y_true", "y_pred")])
    return _parse_prediction_rows(path, header, rows[1:], names, bool(score_columns))


def _score_class_names(path: Path, line: int, score_columns: list[str], names: list[str] | None) -> list[str]:
    found = [column[len(SCORE_PREFIX) :] for column in score_columns]
    if names is None:
        return found
    if sorted(names) != sorted(found):
        raise InputFileError(path, f"--classes {names} do not match the score columns' classes {found}", line)
    return names


def _parse_prediction_rows(path: Path, header: list[str], rows, names: list[str], with_scores: bool) -> dict:
    truth_at = header.index("y_true")
    pred_at = header.index("y_pred") if "y_pred" in header else None
    score_at = [header.index(SCORE_PREFIX + name) for name in names] if with_scores else []
    y_true, y_pred, scores = [], [], []
    for line, row in rows:
        y_true.append(_label_index(path, line, row[truth_at], names, "y_true"))
        if pred_at is not None:
            y_pred.append(_label_index(path, line, row[pred_at], names, "y_pred"))
        scores.append([_parse_number(path, line, row[i], header[i]) for i in score_at])
    return {
        "y_true": np.array(y_true, dtype=np.int64),
        "y_pred": np.array(y_pred, dtype=np.int64) if pred_at is not None else None,
        "scores": np.array(scores, dtype=np.float64) if with_scores else None,
        "class_names": names,
    }


def read_confusion(path: Path, classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a confusion-matrix CSV.

    Args:
        path: a header row of k class names, then k rows of k counts (rows true class). The rows may
            start with their class name, in header order, with an empty or any corner cell. Without a
            header (k rows of k counts), ``classes`` must name the k classes.
        classes: class names overriding the header's (same count).

    Returns:
        ``((k, k) int64 counts, k class names)``.
    """
    rows = _read_rows(path)
    override = _class_list(classes)
    if len(rows) >= 2 and len(rows) == len(rows[0][1]) and all(_is_number(cell) for cell in rows[0][1]):
        return _read_headerless_confusion(path, rows, override)
    if len(rows) < 3:
        raise InputFileError(path, "needs a header row of class names and at least 2 rows of counts")
    (header_line, header), body = rows[0], rows[1:]
    labelled = not _is_number(body[0][1][0])
    names = header[1:] if labelled and len(header) == len(body[0][1]) else header
    if len(body) != len(names):
        raise InputFileError(
            path, f"has {len(names)} classes in the header but {len(body)} rows of counts", header_line
        )
    counts = [_confusion_row(path, line, row, names, i, labelled) for i, (line, row) in enumerate(body)]
    if override is not None and len(override) != len(names):
        raise InputFileError(path, f"--classes gives {len(override)} names but the matrix has {len(names)} classes")
    return np.array(counts, dtype=np.int64), override or names


def _read_headerless_confusion(path: Path, rows, names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """k rows of k counts and no header: ``--classes`` names the classes, in row order."""
    k = len(rows)
    if names is None:
        raise InputFileError(
            path, f"has {k} rows of {k} counts and no header row of class names: name them with --classes A,B,..."
        )
    if len(names) != k:
        raise InputFileError(path, f"--classes gives {len(names)} names {names} but the matrix has {k} classes")
    counts = [_confusion_row(path, line, row, names, i, labelled=False) for i, (line, row) in enumerate(rows)]
    return np.array(counts, dtype=np.int64), names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _confusion_row(path: Path, line: int, row: list[str], names: list[str], index: int, labelled: bool) -> list[int]:
    if labelled:
        if row[0] != names[index]:
            raise InputFileError(path, f"row name {row[0]!r} should be {names[index]!r} (header order)", line)
        row = row[1:]
    if len(row) != len(names):
        raise InputFileError(path, f"has {len(row)} counts, expected {len(names)} (one per class)", line)
    counts = [_parse_number(path, line, cell, "count") for cell in row]
    if any(count < 0 or count != int(count) for count in counts):
        raise InputFileError(path, f"counts must be whole numbers >= 0, got {row}", line)
    return [int(count) for count in counts]


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _fmt(value: float | int | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.{digits}g}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align columns with two spaces between them: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        return "  ".join([first, *(str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _describe(path: Path, values: np.ndarray) -> dict:
    sd = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return {"file": str(path), "n": int(values.size), "mean": float(values.mean()), "sd": sd}


def _compare_text(results: list[TestResult], a: dict, b: dict, confidence: float) -> str:
    level = f"{100 * confidence:g}%"
    lines = [
        f"{label}: {d['file']}  n={d['n']}  mean={_fmt(d['mean'])}  sd={_fmt(d['sd'])}"
        for label, d in (("A", a), ("B", b))
    ]
    lines.append(f"difference A - B of the means: {_fmt(a['mean'] - b['mean'])}")
    header = ["test", "statistic", "df", "p-value", "mean diff", f"{level} CI low", f"{level} CI high", "effect size"]
    rows = [
        [
            r.name,
            _fmt(r.statistic),
            _fmt(r.df),
            _fmt(r.p_value, 4),
            _fmt(r.mean_difference),
            _fmt(r.ci_low),
            _fmt(r.ci_high),
            f"{r.effect_size_name}={_fmt(r.effect_size, 4)}",
        ]
        for r in results
    ]
    lines += ["", format_table(header, rows)]
    notes = [f"- {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def _metrics_table(report: ClassificationReport) -> str:
    aucs = report.roc.auc if report.roc is not None else {}
    header = ["class", "support", "precision", "recall", "specificity", "f1", "auc"]
    rows = [
        [name, str(int(report.support[i]))]
        + [_fmt(values[i]) for values in (report.precision, report.recall, report.specificity, report.f1)]
        + [_fmt(aucs.get(name))]
        for i, name in enumerate(report.class_names)
    ]
    for kind in ("macro", "micro", "weighted"):
        avg = getattr(report, kind)
        # AUC has micro and macro averages only; a support-weighted AUC is not reported.
        curve_auc = getattr(report.roc, kind).auc if report.roc is not None and kind != "weighted" else None
        rows.append([kind, ""] + [_fmt(v) for v in (avg.precision, avg.recall, avg.specificity, avg.f1, curve_auc)])
    return format_table(header, rows)


def _confusion_tables(report: ClassificationReport) -> list[str]:
    names = list(report.class_names)
    counts, percent = report.confusion.counts, report.confusion.row_percent
    return [
        "confusion matrix (rows: true class, columns: predicted class)",
        format_table(["", *names], [[n, *(str(int(c)) for c in counts[i])] for i, n in enumerate(names)]),
        "",
        "row percentages",
        format_table(["", *names], [[n, *(f"{p:.1f}" for p in percent[i])] for i, n in enumerate(names)]),
    ]


def _interval_table(intervals: dict) -> list[str]:
    if not intervals:
        return []
    first = next(iter(intervals.values()))
    kind = "stratified" if first.stratified else "not stratified"
    level = f"{100 * first.confidence:g}%"
    title = f"{level} bootstrap CIs (percentile, {first.n_resamples} resamples, {kind}, seed {first.seed})"
    rows = [[ci.metric, _fmt(ci.estimate), _fmt(ci.ci_low), _fmt(ci.ci_high)] for ci in intervals.values()]
    return ["", title, format_table(["metric", "estimate", "CI low", "CI high"], rows)]


def _metrics_text(report: ClassificationReport, source: Path, intervals: dict) -> str:
    lines = [f"{source}: {report.n_samples} cases, {len(report.class_names)} classes"]
    lines += [f"accuracy: {_fmt(report.accuracy)}", "", _metrics_table(report), ""]
    lines += _confusion_tables(report) + _interval_table(intervals)
    notes = list(report.notes) + [f"{ci.metric}: {ci.note}" for ci in intervals.values() if ci.note]
    return "\n".join(lines + (["", "notes:", *(f"- {note}" for note in notes)] if notes else []))


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_INPUT_ERROR


def run_compare(args: argparse.Namespace) -> int:
    """``stats compare``: read A and B, run ``compare_scores``, print a table or JSON. Returns the exit code."""
    try:
        a = read_numbers(args.a, args.column)
        b = read_numbers(args.b, args.column)
        results = compare_scores(a, b, args.paired, args.test_train_ratio, confidence=args.confidence)
    except ValueError as exc:  # InputFileError included: bad files and bad samples are both input errors
        return _fail(str(exc))
    summary_a, summary_b = _describe(args.a, a), _describe(args.b, b)
    if args.json:
        payload = {
            "a": summary_a,
            "b": summary_b,
            "paired": args.paired,
            "test_train_ratio": args.test_train_ratio,
            "confidence": args.confidence,
            "tests": [result.to_dict() for result in results],
        }
        print(json.dumps(_json_safe(payload), indent=2, allow_nan=False))
    else:
        print(_compare_text(results, summary_a, summary_b, args.confidence))
    return EXIT_OK


def _json_safe(value):
    """Replace NaN/inf floats anywhere in a nested structure with None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _load_report(args: argparse.Namespace) -> tuple[ClassificationReport, dict]:
    """The report and the case data behind it (``y_true``, ``y_pred``, ``scores``, ``class_names``)."""
    if not args.confusion:
        data = read_predictions(args.predictions, args.classes)
        report = compute_classification_metrics(
            data["y_true"], data["scores"], data["class_names"], y_pred=data["y_pred"]
        )
        return report, data
    counts, names = read_confusion(args.predictions, args.classes)
    # The matrix counts the cases: expanding it back to label pairs lets the bootstrap resample them.
    codes = np.repeat(np.arange(counts.size), counts.ravel())
    data = {"y_true": codes // len(names), "y_pred": codes % len(names), "scores": None, "class_names": names}
    return compute_metrics_from_confusion(counts, names), data


def run_metrics(args: argparse.Namespace) -> int:
    """``stats metrics``: read predictions or a confusion matrix and print every metric. Returns the exit code."""
    try:
        report, data = _load_report(args)
        intervals = {}
        if args.bootstrap:
            intervals = compute_bootstrap_ci(
                data["y_true"],
                data["scores"],
                y_pred=data["y_pred"],
                class_names=data["class_names"],
                n_resamples=args.bootstrap,
                confidence=args.confidence,
                seed=args.seed,
            )
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        payload = {"file": str(args.predictions), **report.to_dict()}
        payload["bootstrap"] = {name: ci.to_dict() for name, ci in intervals.items()}
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(_metrics_text(report, args.predictions, intervals))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stats`` command alone: ``python -m allmtl_spark.metrics.cli stats compare a.txt b.txt``."""
    parser = argparse.ArgumentParser(prog="allmtl")
    add_stats_parser(parser.add_subparsers(dest="command", required=True))
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(unrecognized_hint(argv, extras))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
