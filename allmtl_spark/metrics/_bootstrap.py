"""Vectorised bootstrap helpers: resample indices in batches and score every resample at once.

A resample is a row of case indices; a batch is a ``(B, n)`` int64 matrix. Scoring a batch with
numpy (bincount confusion matrices, rank-sum AUC) instead of calling scikit-learn B times keeps a
1,000-resample interval of a 4-class AUC under a second. The unit tests check each batch function
against scikit-learn on the same resamples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import rankdata

# Upper bound on B * n per batch: about 16 MB of int64 indices, plus the same again for the
# gathered scores, whatever the number of cases.
_MAX_BATCH_ELEMENTS = 2_000_000


def resample_index_batches(
    n: int, n_resamples: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Yield bootstrap resamples of ``range(n)`` in batches.

    Args:
        n: number of cases.
        n_resamples: total number of resamples to yield over all batches.
        rng: the seeded generator; the batch size depends only on ``n``, so a seed reproduces.
        strata: optional ``(n,)`` labels; when given each resample draws, with replacement, as many
            cases from each stratum as it holds (a stratified bootstrap keeps the class counts).

    Yields:
        ``(B, n)`` int64 arrays of case indices, ``B <= n_resamples``.
    """
    batch = max(1, _MAX_BATCH_ELEMENTS // max(n, 1))
    groups = None if strata is None else [np.flatnonzero(strata == value) for value in np.unique(strata)]
    done = 0
    while done < n_resamples:
        size = min(batch, n_resamples - done)
        if groups is None:
            yield rng.integers(0, n, size=(size, n))
        else:
            yield np.concatenate([group[rng.integers(0, group.size, size=(size, group.size))] for group in groups], 1)
        done += size


def batch_accuracy(correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Accuracy of each resample: ``(B,)`` float64 from a ``(n,)`` bool correctness vector."""
    return correct[idx].mean(axis=1)


def batch_confusion(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices of each resample: ``(B, k, k)`` int64, rows true class, columns predicted."""
    n_batch = idx.shape[0]
    cells = n_classes * n_classes
    # One bincount for the whole batch: offset each resample's cell codes into its own block.
    codes = y_true[idx] * n_classes + y_pred[idx] + np.arange(n_batch)[:, None] * cells
    return np.bincount(codes.ravel(), minlength=n_batch * cells).reshape(n_batch, n_classes, n_classes)


def batch_macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro F1 of each ``(k, k)`` confusion matrix in a ``(B, k, k)`` stack; 0/0 counts as 0.0.

    Matches ``sklearn.metrics.f1_score(average="macro", labels=range(k), zero_division=0)``.
    """
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    denominator = confusion.sum(axis=1) + confusion.sum(axis=2)  # (tp + fn) + (tp + fp)
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def batch_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row by the Mann-Whitney rank sum (ties count one half, as the ROC trapezoid).

    Args:
        positive: ``(B, n)`` bool, True for cases of the positive class.
        scores: ``(B, n)`` float64 scores for the positive class.

    Returns:
        ``(B,)`` float64; NaN for rows without positives or without negatives.
    """
    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = positive.shape[1] - n_pos
    u_stat = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1.0) / 2.0
    pairs = n_pos * n_neg
    return np.divide(u_stat, pairs, out=np.full_like(u_stat, np.nan), where=pairs > 0)


def batch_macro_auc(y_true: np.ndarray, scores: np.ndarray, idx: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest AUC over ``classes`` for each resample; NaN if any of them is undefined there.

    Args:
        y_true: ``(n,)`` int64 class indices.
        scores: ``(n, k)`` float64 class scores.
        idx: ``(B, n)`` resample indices.
        classes: the class indices to average (those whose AUC is defined on the full sample).

    Returns:
        ``(B,)`` float64.
    """
    if len(classes) == 0:
        return np.full(idx.shape[0], np.nan)
    labels = y_true[idx]
    per_class = [batch_auc(labels == c, scores[idx, c]) for c in classes]
    # A plain mean: a resample where a class loses all its positives gives NaN and is discarded,
    # rather than silently averaging fewer classes than the estimate did.
    return np.mean(per_class, axis=0)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval: the (1-c)/2 and (1+c)/2 quantiles (linear interpolation)."""
    low, high = np.quantile(values, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)
