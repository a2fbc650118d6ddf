"""Evaluation figures as PNG files: ROC curves, confusion-matrix heatmaps, the per-fold comparison.

Pure matplotlib (Agg backend) on the small dataclasses of ``allmtl_spark.metrics`` and pandas frames.
Every function writes one PNG whose pixel size is its figure size in inches times ``DPI`` (no tight
bounding box, so the size is known in advance) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # headless servers and Spark drivers have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from allmtl_spark.evaluation.baselines import BASELINES  # noqa: E402
from allmtl_spark.metrics import ConfusionMatrix, RocResult  # noqa: E402

DPI = 100
ROC_SIZE = (6.0, 5.0)  # inches: 600 x 500 px
CONFUSION_SIZE = (9.0, 4.0)  # two panels: 900 x 400 px
COMPARISON_PANEL = (4.5, 3.5)  # one backbone/task panel of the per-fold comparison
COMPARISON_COLUMNS = 3  # panels per row
SERIES = (("classical", "classical TL", "tab:orange"), ("mtl", "multistage TL", "tab:blue"))
# The shape-blind baselines (evaluation/baselines.py), drawn before the deep models: the floors they must clear.
_BASELINE_COLOURS = ("tab:grey", "tab:brown", "tab:olive", "tab:pink")
BASELINE_SERIES = tuple((b.approach, b.label, colour) for b, colour in zip(BASELINES, _BASELINE_COLOURS, strict=False))


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _auc_label(name: str, auc: float) -> str:
    return f"{name} (AUC {auc:.3f})" if math.isfinite(auc) else f"{name} (AUC undefined)"


def plot_roc(roc: RocResult, path: str, title: str = "") -> str:
    """One-vs-rest ROC curve per class with the micro (dotted) and macro (dashed) averages.

    Args:
        roc: the curves (``compute_roc`` / ``ClassificationReport.roc``); undefined curves are skipped.
        path: PNG file to write (``ROC_SIZE`` x ``DPI`` pixels).
        title: axes title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=ROC_SIZE)
    binary = len(roc.per_class) == 2
    # A binary task's two one-vs-rest curves are mirror images: draw the positive class only.
    curves = roc.per_class[1:] if binary else roc.per_class
    for curve in curves:
        if curve.fpr.size:
            ax.plot(curve.fpr, curve.tpr, lw=1.6, label=_auc_label(curve.name, curve.auc))
    if not binary:
        for curve, style in ((roc.micro, ":"), (roc.macro, "--")):
            if curve.fpr.size:
                ax.plot(
                    curve.fpr,
                    curve.tpr,
                    style,
                    lw=2.2,
                    color="black" if style == "--" else "grey",
                    label=_auc_label(f"{curve.name}-average", curve.auc),
                )
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=1, label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="false-positive rate (1 - specificity)",
        ylabel="true-positive rate (sensitivity)",
        title=title,
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _heatmap(ax, values: np.ndarray, names: tuple[str, ...], text: list[list[str]], title: str) -> None:
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-9))
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    ax.title.set_fontsize(9)
    limit = values.max() / 2 if values.size else 0
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                text[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="white" if values[i, j] > limit else "black",
            )


def plot_confusion(confusion: ConfusionMatrix, path: str, title: str = "") -> str:
    """Confusion-matrix heatmaps side by side: counts, and row percentages (recall on the diagonal).

    Args:
        confusion: counts (rows true class, columns predicted) and row percentages.
        path: PNG file to write (``CONFUSION_SIZE`` x ``DPI`` pixels).
        title: figure title.

    Returns:
        ``path``.
    """
    counts, percent, names = confusion.counts, confusion.row_percent, confusion.class_names
    fig, (left, right) = plt.subplots(1, 2, figsize=CONFUSION_SIZE)
    _heatmap(left, counts.astype(float), names, [[str(int(v)) for v in row] for row in counts], "counts")
    _heatmap(right, percent, names, [[f"{v:.1f}%" for v in row] for row in percent], "row %")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _comparison_grid(n_panels: int) -> tuple[int, int]:
    """(columns, rows) of the comparison's panels: ``COMPARISON_COLUMNS`` a row, at least one of each."""
    return min(COMPARISON_COLUMNS, max(1, n_panels)), max(1, math.ceil(n_panels / COMPARISON_COLUMNS))


def comparison_size(n_panels: int) -> tuple[int, int]:
    """Pixel size (width, height) of ``plot_fold_comparison`` with ``n_panels`` panels."""
    columns, rows = _comparison_grid(n_panels)
    return round(COMPARISON_PANEL[0] * columns * DPI), round(COMPARISON_PANEL[1] * rows * DPI)


def plot_fold_comparison(
    panels: Mapping[str, tuple[pd.DataFrame, str, float | None]], path: str, metric: str = "accuracy"
) -> str:
    """Each test fold's score of the shape-blind floors, classical and multistage TL, one panel per backbone/task.

    A grey line joins one fold's scores (the same test slides), so a reader sees whether the
    approaches differ fold by fold or only on average; a marker with a bar gives each approach's mean
    and SD over the folds. The axis runs from 0 to 1 in every panel, so differences keep their size, and
    a dotted line marks what always calling the most frequent class would score.

    Args:
        panels: panel title -> (frame with columns ``trial``, ``fold``, ``classical``, ``mtl`` and any of
            the baselines ``colour`` and ``size``, one row per trial x fold, NaN where an approach was not
            evaluated; lines under the title, e.g. the corrected test of the difference; the
            majority-class score or None).
        path: PNG file to write (``comparison_size(len(panels))`` pixels).
        metric: the score's name, for the axis label.

    Returns:
        ``path``.
    """
    width, height = comparison_size(len(panels))
    columns, rows = _comparison_grid(len(panels))
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    series = (*BASELINE_SERIES, *SERIES)
    for ax, (title, (frame, subtitle, majority)) in zip(axes.ravel(), panels.items(), strict=False):
        shown = [(c, label, colour) for c, label, colour in series if c in frame and frame[c].notna().any()]
        values = frame[[column for column, _, _ in shown]].to_numpy(dtype=float)
        x = np.arange(len(shown))
        for fold in values:
            ax.plot(x, fold, "-", color="0.75", lw=0.8, zorder=1)
        for i, (_, _, colour) in enumerate(shown):
            fold_values = values[:, i]
            ax.scatter(np.full(fold_values.shape, i), fold_values, s=12, color=colour, alpha=0.6, zorder=2)
            mean = np.nanmean(fold_values)
            sd = np.nanstd(fold_values, ddof=1) if len(fold_values) > 1 else 0.0
            ax.errorbar(i + 0.12, mean, yerr=sd, fmt="D", color=colour, ms=6, capsize=3, zorder=3)
            ax.annotate(f"{mean:.3f}", (i + 0.2, mean), fontsize=7, va="center")
        if majority is not None:
            ax.axhline(majority, color="0.4", ls=":", lw=1)
            ax.annotate("majority class", (-0.35, majority + 0.015), fontsize=7, color="0.4")
        ax.set_xticks(x, [label for _, label, _ in shown], fontsize=8)
        ax.set_xlim(-0.4, len(shown) - 0.4)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"{metric} per test fold")
        trials, folds = frame["trial"].nunique(), frame["fold"].nunique()
        design = f"{folds} folds" if trials == 1 else f"{trials} trials x {folds} folds"
        ax.set_title(f"{title} ({design})\n{subtitle}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


RELIABILITY_SIZE = (9.0, 4.0)  # two panels: 900 x 400 px


def plot_reliability(panels: Mapping[str, object], path: str, title: str = "") -> str:
    """Reliability diagrams side by side (``metrics.calibration.Reliability`` per panel title): accuracy per
    confidence bin against the diagonal, bar width the bin, the ECE in the panel title."""
    fig, axes = plt.subplots(1, len(panels), figsize=RELIABILITY_SIZE, squeeze=False)
    for ax, (name, diagram) in zip(axes[0], panels.items(), strict=True):
        edges = np.asarray(diagram.edges)
        filled = np.asarray(diagram.count) > 0
        ax.bar(
            edges[:-1][filled],
            np.asarray(diagram.accuracy)[filled],
            width=np.diff(edges)[filled],
            align="edge",
            edgecolor="black",
            color="tab:blue",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {diagram.ece:.3f}")
        ax.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
