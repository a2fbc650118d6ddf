"""The evaluation report: paper-shaped tables (CSV + HTML), PNG figures, and one self-contained index.html.

Pure functions on the frames of ``aggregate.EvaluationResults``: no Spark. ``write_report`` lays out
the folder::

    <folder>/index.html          every table and figure (PNGs inlined as base64 data URIs)
    <folder>/tables/*.csv        every table, numbers unrounded
    <folder>/figures/*.png       every figure
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from allmtl_spark.evaluation.aggregate import (
    AVERAGES,
    CLASSICAL,
    MTL,
    PER_CLASS,
    POOLED_FOLD,
    EvaluationResults,
    case_report,
    per_trial_scores,
)
from allmtl_spark.evaluation.baselines import BASELINE_APPROACHES
from allmtl_spark.evaluation.figures import plot_confusion, plot_fold_comparison, plot_roc

APPROACH_ORDER = (*BASELINE_APPROACHES, CLASSICAL, MTL)  # the shape-blind baselines first: floors the models must clear
TASK_TITLES = {"binary": "Normal vs leukemia (binary detection)", "fab4": "Normal / L1 / L2 / L3 (4-class FAB)"}


@dataclass
class Section:
    """One part of the HTML page: a title, explanatory HTML, tables and figures (in that order)."""

    title: str
    text: str = ""  # trusted HTML written by this module
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, PNG path)


# ------------------------------------------------------------------------------------- tables


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by backbone, task, then classical before multistage."""
    keys = [c for c in ("task", "backbone") if c in frame]
    if "approach" in frame:
        frame = frame.assign(_a=frame["approach"].map({a: i for i, a in enumerate(APPROACH_ORDER)}))
        keys.append("_a")
    return frame.sort_values(keys, kind="stable").drop(columns="_a", errors="ignore").reset_index(drop=True)


def _stat(summary: pd.DataFrame, metric: str, class_name: str = "") -> pd.DataFrame:
    rows = summary[(summary["metric"] == metric) & (summary["class_name"] == class_name)]
    return rows.set_index(["backbone", "task", "approach"])[["mean", "sd"]]


def accuracy_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Headline table: per task, backbone and approach, accuracy, macro F1 and macro AUC over trials.

    Returns:
        Columns task, backbone, approach, n_trials, then ``<metric>`` (mean over trials of the
        folds-pooled value) and ``<metric>_sd`` for accuracy, macro_f1, macro_auc, and the mean/SD of
        the per-fold accuracy (``fold_accuracy``, ``fold_accuracy_sd``).
    """
    acc = summary[(summary["metric"] == "accuracy") & (summary["class_name"] == "")]
    table = acc[["task", "backbone", "approach", "n_trials"]].copy().set_index(["backbone", "task", "approach"])
    for metric in ("accuracy", "macro_f1", "macro_auc"):
        stats = _stat(summary, metric)
        table[metric], table[f"{metric}_sd"] = stats["mean"], stats["sd"]
    folds = acc.set_index(["backbone", "task", "approach"])
    table["fold_accuracy"], table["fold_accuracy_sd"] = folds["fold_mean"], folds["fold_sd"]
    return _order(table.reset_index())


def detection_table(summary: pd.DataFrame, positive: str, task: str = "binary") -> pd.DataFrame:
    """The paper's detection table: per backbone and approach, metrics of the positive (leukemia) class.

    Args:
        summary: ``summarize_metrics`` output.
        positive: the positive class name (``ALL``).
        task: the binary task.

    Returns:
        Columns backbone, approach, n_trials, accuracy, precision, recall (sensitivity), specificity,
        f1, auc, each with a ``_sd`` column (over trials).
    """
    acc = summary[(summary["task"] == task) & (summary["metric"] == "accuracy") & (summary["class_name"] == "")]
    table = acc[["backbone", "task", "approach", "n_trials"]].set_index(["backbone", "task", "approach"])
    for metric in ("accuracy", *PER_CLASS, "auc"):
        stats = _stat(summary, metric, "" if metric == "accuracy" else positive)
        table[metric], table[f"{metric}_sd"] = stats["mean"], stats["sd"]
    return _order(table.reset_index()).drop(columns="task")


def multiclass_table(summary: pd.DataFrame, class_names: Sequence[str], task: str = "fab4") -> pd.DataFrame:
    """The paper's 4-class table: per backbone, approach and class (then the averages) the metrics.

    Returns:
        Columns backbone, approach, class, precision, recall, specificity, f1, auc, each with ``_sd``;
        ``class`` runs over the class names, then ``macro avg``, ``micro avg``, ``weighted avg``
        (the weighted average has no AUC).
    """
    rows = []
    part = summary[summary["task"] == task]
    for (backbone, approach), group in part.groupby(["backbone", "approach"], sort=False):
        index = group.set_index(["metric", "class_name"])
        for label, keys in _multiclass_keys(class_names):
            row = {"backbone": backbone, "approach": approach, "class": label}
            for column, key in keys.items():
                hit = index.loc[key] if key in index.index else None
                row[column] = hit["mean"] if hit is not None else math.nan
                row[f"{column}_sd"] = hit["sd"] if hit is not None else math.nan
            rows.append(row)
    columns = ["backbone", "approach", "class"] + [c for m in (*PER_CLASS, "auc") for c in (m, f"{m}_sd")]
    frame = pd.DataFrame(rows, columns=columns)
    return _order(frame) if not frame.empty else frame


def _multiclass_keys(class_names: Sequence[str]):
    for name in class_names:
        yield name, {m: (m, name) for m in (*PER_CLASS, "auc")}
    for kind in AVERAGES:
        keys = {m: (f"{kind}_{m}", "") for m in PER_CLASS}
        if kind != "weighted":
            keys["auc"] = (f"{kind}_auc", "")
        yield f"{kind} avg", keys


def confusion_table(metrics: pd.DataFrame, task: str, class_names: Sequence[str]) -> pd.DataFrame:
    """Confusion matrices summed over trials (each trial's folds pooled: every slide once per trial).

    Returns:
        Columns backbone, approach, true, then ``<predicted class>`` counts and ``<predicted class> %``
        row percentages.
    """
    rows = metrics[(metrics["task"] == task) & (metrics["fold"] == POOLED_FOLD) & (metrics["metric"] == "confusion")]
    rows = rows.assign(true=rows["class_name"].str.split("/").str[0], pred=rows["class_name"].str.split("/").str[1])
    counts = rows.pivot_table(index=["backbone", "approach", "true"], columns="pred", values="value", aggfunc="sum")
    counts = counts.reindex(columns=list(class_names)).fillna(0).astype(int)
    totals = counts.sum(axis=1).replace(0, np.nan)
    percent = counts.div(totals, axis=0).mul(100).fillna(0.0).add_suffix(" %")
    table = pd.concat([counts, percent], axis=1).reset_index()
    table.columns.name = None
    table["_c"] = table["true"].map({name: i for i, name in enumerate(class_names)})
    return _order(table.sort_values("_c", kind="stable")).drop(columns="_c")


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The evaluated folds: trial, fold, split sizes, models and training time."""
    columns = [
        "trial",
        "fold",
        "task",
        "backbone",
        "approach",
        "n_train",
        "n_val",
        "n_test",
        "seconds",
        "model_id",
        "split_id",
    ]
    return runs[columns].sort_values(["trial", "fold", "task", "backbone", "approach"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------- HTML


def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: ``X`` and ``X_sd`` columns merged into ``mean ± sd`` (3 decimals), other floats at 4
    significant digits, NaN as a dash, None as empty, text HTML-escaped."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if column.endswith("_sd") and column[:-3] in frame:
            continue
        sd = frame.get(f"{column}_sd")
        if sd is None:
            out[column] = [_format_cell(v) for v in frame[column]]
            continue
        out[column] = [
            _format_cell(m) if not (isinstance(s, float) and math.isfinite(s)) else f"{m:.3f} ± {s:.3f}"
            for m, s in zip(frame[column], sd, strict=True)
        ]
    return out


def table_html(frame: pd.DataFrame, caption: str) -> str:
    """An HTML table (cells escaped) with a caption."""
    shown = display_frame(frame)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False))
    if shown.empty:
        body = f'<tr><td colspan="{max(1, len(shown.columns))}">(no rows)</td></tr>'
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def png_data_uri(path: str) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def figure_html(path: str, caption: str) -> str:
    """A figure with the PNG inlined as a data URI (the page needs no other file)."""
    name = html.escape(os.path.basename(path))
    return (
        f'<figure><img src="{png_data_uri(path)}" alt="{name}" data-file="{name}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.85em}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:.5em;vertical-align:top}
figcaption{font-size:.8em;color:#555;max-width:600px}img{max-width:100%;border:1px solid #eee}
.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.5em 1em}dt{font-weight:600;margin-top:.6em}
"""


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """One self-contained HTML page: every section's text, tables and figures (PNGs inlined).

    Args:
        title: page title.
        sections: the sections in order.
        subtitle: HTML under the title.

    Returns:
        The HTML document.
    """
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{subtitle}",
    ]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    parts.append(f"<nav><ol>{toc}</ol></nav>")
    for i, section in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>{section.text}')
        parts += [table_html(frame, caption) for caption, frame in section.tables]
        parts += [figure_html(path, caption) for caption, path in section.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


STATISTICS_HTML = """
<dl>
<dt>Metrics</dt><dd>Accuracy is the share of slides classified correctly. Per class (one-vs-rest): precision
(positive predictive value), recall (sensitivity), specificity and F1 (harmonic mean of precision and recall).
<em>Macro</em> averages weigh every class equally, <em>micro</em> averages pool the counts (for single-label
predictions micro precision = recall = F1 = accuracy), <em>weighted</em> averages weigh classes by their support.
AUC is the area under the one-vs-rest ROC curve; the micro ROC pools every (slide, class) pair, the macro ROC
averages the per-class curves.</dd>
<dt>Cross-validation</dt><dd>Slides are split into k folds, grouped by patient (or slide) and stratified by class,
before any augmentation; each fold's models are tested on slides they never saw. A trial repeats the k folds with
its own split and augmentation seed; "folds pooled" values use every slide once per trial. Per-fold values are
noisier (few test slides) than per-trial values.</dd>
<dt>Independent t-tests (Student, Welch)</dt><dd>Compare two independent samples of scores. Student assumes equal
variances (the paper's test over 10 trials); Welch does not. Here both approaches are trained and tested on the same
splits, so the samples are <em>paired</em>: the independent tests ignore that and are shown for comparison with
the paper.</dd>
<dt>Paired t-test</dt><dd>Tests the mean of the per-fold (or per-trial) differences multistage - classical. Right
when each pair shares its data split, but it assumes the differences are independent; in cross-validation the
training sets overlap, so its variance is too small and it finds "significant" differences too often
(Dietterich 1998).</dd>
<dt>Nadeau-Bengio corrected resampled t-test</dt><dd>The test to use for repeated k-fold cross-validation: it
inflates the variance of the mean difference from s&sup2;/J to (1/J + n_test/n_train) s&sup2; for the correlation
between folds (Nadeau &amp; Bengio 2003), with J = trials x folds and n_test/n_train the measured fold sizes.</dd>
<dt>McNemar's test</dt><dd>Compares the two classifiers case by case on the same test slides: only discordant
slides count (one model right, the other wrong); exact binomial below 25 discordant slides, else chi-square with
continuity correction. Use it for one split (here: each trial, folds pooled); it asks whether the two models err on
this data at different rates, not how they would do with other training data.</dd>
<dt>AUC difference (paired bootstrap)</dt><dd>Resamples the test slides with replacement (within each class) and
scores both models on the same resample, keeping the correlation between them; the interval is the percentile
interval of the AUC differences and the p-value inverts it.</dd>
<dt>Effect sizes and confidence intervals</dt><dd>A p-value says whether a difference is distinguishable from
noise, not how large it is. The mean difference with its confidence interval gives the plausible size of the gain;
Cohen's d (pooled SD, independent tests) and d_z (mean difference / SD of the differences, paired tests) put it in
units of spread. A small p with a tiny effect is not a practical gain; a large p with a wide interval is
inconclusive (too few folds or trials), not evidence of no difference. With many comparisons some small p-values
arise by chance: read them together (or apply a Holm correction).</dd>
<dt>Bootstrap confidence intervals</dt><dd>Percentile intervals from resampling each trial's test slides (within
each class): how much a metric would move with another sample of slides of the same kind.</dd>
</dl>
"""


# ---------------------------------------------------------------------------- figures + page


def _slug(*parts: str) -> str:
    return "_".join(str(p).lower().replace(" ", "-").replace("/", "-") for p in parts)


def model_figures(results: EvaluationResults, folder: str) -> dict[str, list[tuple[str, str]]]:
    """ROC and confusion PNGs per task, backbone and approach, from every trial's predictions pooled.

    Returns:
        task -> [(caption, path)] (ROC figures first, then confusion heatmaps).
    """
    rocs: dict[str, list[tuple[str, str]]] = {}
    confusions: dict[str, list[tuple[str, str]]] = {}
    predictions = results.predictions
    groups = _order(predictions[["task", "backbone", "approach"]].drop_duplicates())
    n_trials = predictions["trial"].nunique()
    for task, backbone, approach in groups[["task", "backbone", "approach"]].itertuples(index=False):
        cases = predictions[
            (predictions["task"] == task)
            & (predictions["backbone"] == backbone)
            & (predictions["approach"] == approach)
        ]
        report = case_report(cases, results.class_names[task])
        label, stem = f"{backbone} {approach} {task}", _slug(task, backbone, approach)
        where = f"test folds pooled over {n_trials} trial(s), {len(cases)} predictions"
        roc = plot_roc(report.roc, os.path.join(folder, f"roc_{stem}.png"), f"ROC: {label}")
        rocs.setdefault(task, []).append((f"ROC: {label} ({where})", roc))
        conf = plot_confusion(report.confusion, os.path.join(folder, f"confusion_{stem}.png"), f"confusion: {label}")
        confusions.setdefault(task, []).append((f"Confusion matrix: {label} ({where}); left counts, right row %", conf))
    figures = {task: rocs[task] + confusions[task] for task in rocs}
    return figures


def calibration_figures(
    results: EvaluationResults, folder: str, bins: int = 15
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Expected calibration error before and after temperature scaling, per task, backbone and approach.

    Each fold model's test cases are scaled with that model's own temperature (fitted on its validation
    part at registration); cases of models without one stay raw. Returns the table and the reliability figures.
    """
    from allmtl_spark.evaluation.figures import plot_reliability
    from allmtl_spark.metrics.calibration import apply_temperature, compute_reliability

    predictions = results.predictions
    if "temperature" not in predictions or predictions["temperature"].isna().all():
        return pd.DataFrame(), []
    rows, figures = [], []
    groups = _order(predictions[["task", "backbone", "approach"]].drop_duplicates())
    for task, backbone, approach in groups[["task", "backbone", "approach"]].itertuples(index=False):
        cases = predictions[
            (predictions["task"] == task)
            & (predictions["backbone"] == backbone)
            & (predictions["approach"] == approach)
        ]
        raw = np.stack([np.asarray(s, dtype=float) for s in cases["scores"]])
        calibrated = np.stack(
            [
                apply_temperature(row, t) if np.isfinite(t) else row
                for row, t in zip(raw, cases["temperature"].to_numpy(float), strict=True)
            ]
        )
        labels = cases["label"].to_numpy(int)
        before, after = compute_reliability(labels, raw, bins), compute_reliability(labels, calibrated, bins)
        temps = cases.drop_duplicates(["trial", "fold"])["temperature"]  # one model per trial and fold
        rows.append(
            {
                "task": task,
                "backbone": backbone,
                "approach": approach,
                "test cases": len(cases),
                "models": len(temps),
                "temperature (mean over models)": float(temps.mean()),
                "ECE raw": before.ece,
                "ECE calibrated": after.ece,
            }
        )
        label = f"{backbone} {approach} {task}"
        path = os.path.join(folder, f"reliability_{_slug(task, backbone, approach)}.png")
        plot_reliability({"raw": before, "calibrated": after}, path, f"reliability: {label}")
        figures.append((f"Reliability: {label} (test folds pooled, {len(cases)} cases, {bins} bins)", path))
    return pd.DataFrame(rows), figures


def comparison_panels(
    results: EvaluationResults, metric: str = "accuracy"
) -> dict[str, tuple[pd.DataFrame, str, float | None]]:
    """``plot_fold_comparison``'s panels: per backbone/task, each test fold's baseline, classical and mtl scores.

    A frame has one row per trial x fold where both deep approaches were scored (columns ``trial``,
    ``fold``, one per shape-blind baseline (``colour``, ``size``), ``classical``, ``mtl``; a baseline's
    column is NaN where it is missing).

    Each baseline has a backbone of its own (``inner-histogram+logreg``, ``area+logreg``); it joins every deep
    backbone's panel of its task, fold by fold. Under each panel's title goes the headline test; the
    reference line is the share of the task's most frequent class among its test cases.
    """
    metrics = results.metrics
    rows = metrics[(metrics["fold"] != POOLED_FOLD) & (metrics["metric"] == metric) & (metrics["class_name"] == "")]
    floors = {
        approach: rows[rows["approach"] == approach].set_index(["task", "trial", "fold"])["value"]
        for approach in BASELINE_APPROACHES
    }
    deep = rows[rows["approach"].isin([MTL, CLASSICAL])]
    panels = {}
    for (backbone, task), group in deep.groupby(["backbone", "task"], sort=True):
        wide = group.pivot_table(index=["trial", "fold"], columns="approach", values="value")
        wide = wide.reindex(columns=[CLASSICAL, MTL]).dropna()  # folds with both approaches, as the test pairs them
        if wide.empty:
            continue
        for position, (approach, values) in enumerate(floors.items()):
            wide.insert(position, approach, [values.get((task, trial, fold), math.nan) for trial, fold in wide.index])
        subtitle = _headline_line(results.headline, backbone, task)
        panels[f"{backbone} / {task}"] = (wide.reset_index(), subtitle, _majority_share(results, task))
    return panels


def _majority_share(results: EvaluationResults, task: str) -> float | None:
    """Accuracy of always calling the task's most frequent class, over its test cases (each case once)."""
    cases = results.predictions[results.predictions["task"] == task].drop_duplicates("content_sha256")
    return float(cases["label"].value_counts(normalize=True).max()) if len(cases) else None


def comparison_figure(results: EvaluationResults, folder: str, metric: str = "accuracy") -> tuple[str, str] | None:
    """The report's headline figure: each test fold's baseline and model scores (``comparison_panels``)."""
    panels = comparison_panels(results, metric)
    if not panels:
        return None
    path = plot_fold_comparison(panels, os.path.join(folder, f"folds_{metric}.png"), metric)
    caption = (
        f"{metric} of every test fold (grey lines join one fold's models, scored on the same slides); "
        "diamonds are means with their SD over the folds; the dotted line is what always answering the most "
        "frequent class scores"
    )
    return caption, path


def _headline_line(headline: pd.DataFrame, backbone: str, task: str) -> str:
    """The headline test of one panel (difference, its CI, p-value; two lines), from the headline table."""
    row = headline[(headline["backbone"] == backbone) & (headline["task"] == task)]
    if row.empty or not math.isfinite(float(row.iloc[0]["ci_low"])):
        return "multistage - classical: not tested"
    r = row.iloc[0]
    return (
        f"multistage - classical {r['mean_difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]\n"
        f"Nadeau-Bengio corrected t: p = {r['p_value']:.2f}"
    )


def curve_figures(histories: Mapping[str, Mapping[str, dict]], folder: str) -> list[tuple[str, str]]:
    """Training curves (``training/curves.py``): one figure per entry, one row of loss/accuracy panels per stage.

    Args:
        histories: figure label (``trial 0 fold 1``) -> {stage key: Keras history dict}.
        folder: where the PNGs go.

    Returns:
        [(caption, path)] in the order of ``histories``.
    """
    from allmtl_spark.training.curves import plot_training_curves

    figures = []
    for label, panels in histories.items():
        if panels:
            path = plot_training_curves(
                dict(panels), os.path.join(folder, f"training_curves_{_slug(label)}.png"), f"{label}: training curves"
            )
            figures.append((f"{label}: loss and accuracy per epoch (solid training, dashed validation)", path))
    return figures


def headline_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each approach (the shape-blind baselines included) over every fold of every trial: mean ± SD, J."""
    acc = summary[(summary["metric"] == "accuracy") & (summary["class_name"] == "")]
    table = acc[["task", "approach", "backbone", "n_folds", "fold_mean", "fold_sd"]].rename(
        columns={"n_folds": "folds_x_trials", "fold_mean": "accuracy", "fold_sd": "accuracy_sd"}
    )
    order = table["approach"].map({a: i for i, a in enumerate(APPROACH_ORDER)})
    return table.assign(_a=order).sort_values(["task", "_a", "backbone"]).drop(columns="_a").reset_index(drop=True)


def build_tables(results: EvaluationResults) -> dict[str, tuple[str, pd.DataFrame]]:
    """Every table of the report: file stem -> (caption, frame)."""
    tables = {
        "headline": (
            "Multistage minus classical accuracy over trials x folds: mean difference, its Nadeau-Bengio corrected "
            "CI and p, and the smallest difference this design detects with 80% power",
            results.headline,
        ),
        "headline_accuracy": (
            "Accuracy per fold (mean ± SD over trials x folds): colour-only and size-only baselines, classical, "
            "multistage",
            headline_accuracy(results.summary),
        ),
        "summary": (
            "Accuracy, macro F1 and macro AUC: mean ± SD over trials (each trial's folds pooled); "
            "fold_accuracy over every fold",
            accuracy_table(results.summary),
        ),
    }
    if "binary" in results.class_names:
        positive = results.class_names["binary"][-1]
        tables["detection_binary"] = (
            f"Detection metrics per backbone (positive class {positive}), mean ± SD over trials",
            detection_table(results.summary, positive),
        )
    if "fab4" in results.class_names:
        tables["metrics_fab4"] = (
            "4-class metrics per backbone and class, mean ± SD over trials",
            multiclass_table(results.summary, results.class_names["fab4"]),
        )
    for task, names in results.class_names.items():
        tables[f"confusion_{task}"] = (
            f"Confusion matrices, {task}: counts summed over trials, rows true class",
            confusion_table(results.metrics, task, names),
        )
    tables["per_trial_accuracy"] = (
        "Accuracy per trial (folds pooled): classical vs multistage",
        per_trial_scores(results.metrics, "accuracy"),
    )
    tables["tests_t"] = (
        "t-tests, multistage - classical (fold level: J = trials x folds pairs; trial level: one pair per trial)",
        results.comparisons,
    )
    tables["tests_mcnemar"] = ("McNemar's test per trial on the same test slides (folds pooled)", results.mcnemar)
    tables["tests_auc"] = (
        "Macro AUC difference, multistage - classical: paired bootstrap per trial",
        results.auc_tests,
    )
    tables["bootstrap_ci"] = ("Bootstrap confidence intervals per model and trial (folds pooled)", results.bootstrap)
    tables["runs"] = ("Evaluated folds: split sizes (slides), training time, models", runs_table(results.runs))
    return tables


def write_tables(tables: Mapping[str, tuple[str, pd.DataFrame]], folder: str) -> dict[str, str]:
    """Write each table as ``<folder>/<stem>.csv``; returns stem -> path."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for stem, (_, frame) in tables.items():
        paths[stem] = os.path.join(folder, f"{stem}.csv")
        frame.to_csv(paths[stem], index=False)
    return paths


HEADLINE_HTML = """
<p>This is the comparison the evaluation exists for. Every slide is tested once per trial by models that
never saw it, its patient, or (in stage 2) a cell cut from it; each fold trains its own stage 2 on the cells of
its training side. The difference is read over all <em>trials x folds</em> with the Nadeau-Bengio corrected
resampled t-test, which allows for the overlap of the folds' training sets. A confidence interval that
includes 0 means the runs do not show a difference, not that there is none: the last column says how large
a true difference would have to be for this design (its number of folds, trials and slides, and the spread
seen between folds) to find it 4 times out of 5. Single train/test splits (the <code>allmtl train</code> job, one
trial's folds) are examples of what one run gives; runs with the same settings part ways by several points.</p>
<p>The two shape-blind baselines are logistic regressions on simple features of exactly the images the
classifiers see, fitted on each fold's training side and tested on the same slides: <em>colour-only</em> reads
per-channel colour histograms of the cells' inner pixels (the black backdrop and the cells' rims blended with
it left out, as their share tells cell size), <em>size-only</em> reads how much of each montage tile its cell
covers and nothing else (with <code>train.cell_tile_um</code> set, each cell's area; see the settings above). A
deep model that does not clear them has learnt nothing that colour or cell size alone does not
tell.</p>
"""


def _sections(
    results: EvaluationResults,
    t: Mapping[str, tuple[str, pd.DataFrame]],
    figures,
    comparison_plot,
    curves,
    header: str,
    calibration: tuple[pd.DataFrame, list[tuple[str, str]]] | None = None,
) -> list[Section]:
    sections = [
        Section(
            "Headline: multistage vs classical over repeated cross-validation",
            HEADLINE_HTML + header,
            [t["headline"], t["headline_accuracy"]],
            [comparison_plot] if comparison_plot else [],
        ),
        Section("Summary", "", [t["summary"]]),
    ]
    for task in results.class_names:
        section = Section(TASK_TITLES.get(task, task))
        stem = "detection_binary" if task == "binary" else f"metrics_{task}"
        section.tables = [t[s] for s in (stem, f"confusion_{task}") if s in t]
        section.figures = figures.get(task, [])
        sections.append(section)
    ratio = ", ".join(f"{task}: {value:.3f}" for task, value in results.test_train_ratio.items())
    text = (
        f"<p>Differences are multistage minus classical. Nadeau-Bengio n_test/n_train per task: {ratio or '–'}. "
        "For repeated cross-validation read the Nadeau-Bengio row; McNemar and the AUC test compare the two "
        "models case by case within a trial.</p>"
    )
    if results.predictions["trial"].nunique() < 2:
        text += (
            '<p class="note">One trial only: the trial-level t-tests need at least two trials (set '
            "evaluate.trials); the fold-level tests use the folds.</p>"
        )
    sections.append(
        Section(
            "Classical vs multistage transfer learning",
            text,
            [t[s] for s in ("per_trial_accuracy", "tests_t", "tests_mcnemar", "tests_auc", "bootstrap_ci")],
        )
    )
    if calibration is not None and not calibration[0].empty:
        sections.append(
            Section(
                "Calibration: expected calibration error before and after temperature scaling",
                "<p>Each fold model's temperature was fitted on the validation part of its training side (never its "
                "test fold) by minimising the negative log-likelihood; the ECE bins the test cases by their top-class "
                "probability and averages |accuracy - confidence|, weighted by the cases per bin.</p>",
                [("ECE on the test folds, raw and calibrated", calibration[0])],
                calibration[1],
            )
        )
    sections.append(Section("About the statistics: which test when", STATISTICS_HTML))
    if curves:
        sections.append(Section("Training curves", "", [], curves))
    sections.append(Section("Evaluated folds", "", [t["runs"]]))
    return sections


def write_report(
    results: EvaluationResults,
    folder: str,
    title: str,
    settings: Mapping[str, object],
    histories: Mapping[str, Mapping[str, dict]] | None = None,
) -> str:
    """Write the tables (CSV), figures (PNG) and the self-contained ``index.html``.

    Args:
        results: the computed evaluation.
        folder: report folder (created).
        title: page title.
        settings: key -> value shown under the title (eval id, folds, trials, seeds ...).
        histories: figure label -> {stage key: Keras history}, for the training-curve figures.

    Returns:
        The path of ``index.html``.
    """
    figure_dir = os.path.join(folder, "figures")
    os.makedirs(figure_dir, exist_ok=True)
    tables = build_tables(results)
    write_tables(tables, os.path.join(folder, "tables"))
    figures = model_figures(results, figure_dir)
    comparison_plot = comparison_figure(results, figure_dir)
    curves = curve_figures(histories or {}, figure_dir)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    items = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in settings.items())
    header = f"<p>Generated {created}.</p><ul>{items}</ul>"
    calibration = calibration_figures(results, figure_dir)
    if not calibration[0].empty:
        calibration[0].to_csv(os.path.join(folder, "tables", "calibration.csv"), index=False)
    page = render_html(title, _sections(results, tables, figures, comparison_plot, curves, header, calibration))
    path = os.path.join(folder, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path
