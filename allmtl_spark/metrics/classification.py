"""Classification metrics from class labels and scores: numpy and scikit-learn, no Spark.

Conventions shared by every function here:

- ``y_true``: ``(n,)`` integer class indices in ``[0, k)``; ``class_names[i]`` names index ``i``.
- ``scores``: ``(n, k)`` float class scores, one row per case (usually softmax probabilities). A
  binary task may pass ``(n,)`` = P(class 1), which is expanded to the columns ``[1 - s, s]``.
- Predicted labels are the row argmax of the scores (a tie goes to the lower class index, as
  ``numpy.argmax``); ``(n,)`` binary scores use ``s >= threshold``. An explicit ``y_pred`` overrides.
- Zero division (documented, never a crash): a ratio whose denominator is zero is 0.0, like
  scikit-learn's ``zero_division=0``: precision of a class never predicted, recall of a class absent
  from ``y_true``, specificity when every case belongs to the class. The report's ``notes`` name
  each class concerned.
- AUC of a class absent from ``y_true`` (no positives) or making up all of it (no negatives) is
  undefined: NaN, an empty curve and a note; the macro AUC averages the defined classes only.
- Scores whose rows do not sum to 1 (logits, a sigmoid per class) are used as they are and noted.
  They are not renormalised: dividing each row by its own sum would change the per-class rankings
  the ROC curves are built from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    auc,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_curve,
)

from allmtl_spark.metrics import _bootstrap
from allmtl_spark.metrics._validate import (
    as_finite_array,
    as_labels,
    check_class_names,
    check_confidence,
    check_same_length,
)

# Softmax outputs in float32 sum to 1 within ~1e-6; anything further off is not a probability row.
_SUM_TOLERANCE = 1e-3
BOOTSTRAP_METRICS = ("accuracy", "macro_f1", "auc")


def _frozen(array: np.ndarray) -> np.ndarray:
    """Make an array read-only so that a frozen dataclass holding it is really immutable."""
    array.setflags(write=False)
    return array


def _json_number(value) -> float | int | None:
    """A JSON-safe scalar: NaN and infinities (not valid JSON) become None."""
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _json_list(array: np.ndarray) -> list:
    """A nested list of JSON-safe scalars from an array of any rank."""
    arr = np.asarray(array)
    if arr.ndim <= 1:
        return [_json_number(value) for value in arr.ravel()]
    return [_json_list(row) for row in arr]


@dataclass(frozen=True)
class AveragedMetrics:
    """Precision, recall, specificity and F1 averaged over classes one way (macro, micro or weighted)."""

    precision: float
    recall: float
    specificity: float
    f1: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: _json_number(getattr(self, k)) for k in ("precision", "recall", "specificity", "f1")}


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs.

    Attributes:
        class_names: the k class names, in index order.
        counts: ``(k, k)`` int64; row i = true class i, column j = predicted class j.
        row_percent: ``(k, k)`` float64; each row of ``counts`` as a percentage of its total (recall
            on the diagonal). The row of a class absent from ``y_true`` is all 0.0.
    """

    class_names: tuple[str, ...]
    counts: np.ndarray
    row_percent: np.ndarray

    def to_dict(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "counts": _json_list(self.counts),
            "row_percent": _json_list(self.row_percent),
        }


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve.

    Attributes:
        name: class name, ``"micro"`` or ``"macro"``.
        fpr: ``(m,)`` float64 false-positive rates, non-decreasing from 0 to 1; empty if undefined.
        tpr: ``(m,)`` float64 true-positive rates at the same points.
        thresholds: ``(m,)`` float64 score thresholds (the first is +inf, as scikit-learn); empty for
            the macro curve, which has no thresholds of its own.
        auc: area under the curve; NaN when undefined.
        note: why the curve is undefined, or "" when it is not.
    """

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "auc": _json_number(self.auc),
            "fpr": _json_list(self.fpr),
            "tpr": _json_list(self.tpr),
            "thresholds": _json_list(self.thresholds),
            "note": self.note,
        }


@dataclass(frozen=True)
class RocResult:
    """One-vs-rest ROC curves per class with their micro and macro averages.

    Attributes:
        class_names: the k class names.
        per_class: k curves in class-index order.
        micro: the curve of all (case, class) pairs pooled: one-hot ``y_true`` against all scores.
        macro: the mean of the defined per-class curves on the union of their FPR points. Its
            ``auc`` is the mean of the defined per-class AUCs (= scikit-learn's
            ``roc_auc_score(multi_class="ovr", average="macro")`` when all are defined) and equals
            the trapezoid area under ``macro.fpr, macro.tpr`` exactly.
        notes: one line per undefined class, and on score rows not summing to 1.
    """

    class_names: tuple[str, ...]
    per_class: tuple[RocCurve, ...]
    micro: RocCurve
    macro: RocCurve
    notes: tuple[str, ...] = ()

    @property
    def auc(self) -> dict[str, float]:
        """Per-class AUC by class name (NaN where undefined)."""
        return {curve.name: curve.auc for curve in self.per_class}

    def to_dict(self) -> dict:
        return {
            "per_class": {curve.name: curve.to_dict() for curve in self.per_class},
            "micro": self.micro.to_dict(),
            "macro": self.macro.to_dict(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ClassificationReport:
    """Every metric of one set of predictions.

    Attributes:
        class_names: the k class names, in index order.
        n_samples: number of cases n.
        accuracy: fraction of cases predicted correctly.
        precision, recall, specificity, f1: ``(k,)`` float64 per class (one-vs-rest).
        support: ``(k,)`` int64 number of true cases of each class.
        macro: unweighted mean over the k classes (absent classes count, with their 0.0 values, as
            in scikit-learn when ``labels`` lists every class).
        micro: pooled counts; precision = recall = F1 = accuracy for single-label predictions.
        weighted: mean weighted by ``support``.
        confusion: the confusion matrix.
        roc: ROC curves and AUCs, or None when only labels were given.
        notes: degenerate cases met (zero divisions, undefined AUCs, unnormalised scores).
    """

    class_names: tuple[str, ...]
    n_samples: int
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    specificity: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro: AveragedMetrics
    micro: AveragedMetrics
    weighted: AveragedMetrics
    confusion: ConfusionMatrix
    roc: RocResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{class_name: {"precision", "recall", "specificity", "f1", "support", "auc"}}``."""
        aucs = self.roc.auc if self.roc is not None else {}
        return {
            name: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "specificity": float(self.specificity[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
                "auc": float(aucs.get(name, math.nan)),
            }
            for i, name in enumerate(self.class_names)
        }

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; NaN and infinite numbers (undefined AUC, the +inf first ROC threshold)
        become None so that ``json.dumps(..., allow_nan=False)`` accepts it."""
        per_class = {
            name: {key: _json_number(value) for key, value in metrics.items()}
            for name, metrics in self.per_class().items()
        }
        return {
            "class_names": list(self.class_names),
            "n_samples": self.n_samples,
            "accuracy": _json_number(self.accuracy),
            "per_class": per_class,
            "macro": self.macro.to_dict(),
            "micro": self.micro.to_dict(),
            "weighted": self.weighted.to_dict(),
            "confusion": self.confusion.to_dict(),
            "roc": None if self.roc is None else self.roc.to_dict(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval of one metric.

    Attributes:
        metric: ``"accuracy"``, ``"macro_f1"`` or ``"auc"`` (macro one-vs-rest AUC).
        estimate: the metric on the full sample.
        ci_low, ci_high: the (1-c)/2 and (1+c)/2 quantiles of the resampled metric.
        confidence: the confidence level c.
        n_resamples: resamples drawn.
        n_valid: resamples on which the metric was defined (fewer only for AUC without
            stratification, when a resample lost every case of a class).
        stratified: whether each resample kept the class counts of ``y_true``.
        seed: seed of the generator.
        note: why resamples were discarded, or "".
    """

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int
    n_valid: int
    stratified: bool
    seed: int | None
    note: str = ""

    def to_dict(self) -> dict:
        return {key: _json_number(value) if isinstance(value, float) else value for key, value in asdict(self).items()}


def prepare_scores(scores, n_samples: int | None = None) -> tuple[np.ndarray, bool]:
    """Check class scores and return them as ``(n, k)``.

    Args:
        scores: ``(n, k)`` float scores, k >= 2; or ``(n,)`` binary P(class 1) in [0, 1].
        n_samples: expected n, or None.

    Returns:
        ``(scores_2d, was_1d)``: ``(n, k)`` float64 scores (``[1 - s, s]`` for 1-D input) and whether
        the input was 1-D.

    Raises:
        ValueError: wrong shape, non-finite values, fewer than 2 classes, 1-D scores outside [0, 1].
    """
    arr = np.asarray(scores)
    if arr.ndim == 1:
        probs = as_finite_array(arr, "scores", ndim=1)
        outside = (probs < 0.0) | (probs > 1.0)
        if outside.any():
            raise ValueError(
                "1-D scores must be probabilities of class 1 in [0, 1] (they are thresholded); found values "
                f"outside at row(s) {np.flatnonzero(outside)[:5].tolist()}. Pass an (n, 2) array for other scores"
            )
        matrix, was_1d = np.column_stack([1.0 - probs, probs]), True
    else:
        matrix, was_1d = as_finite_array(arr, "scores", ndim=2), False
        if matrix.shape[1] < 2:
            raise ValueError(f"scores need one column per class and at least 2 classes, got shape {matrix.shape}")
    if n_samples is not None and matrix.shape[0] != n_samples:
        raise ValueError(f"y_true and scores must have the same length, got {n_samples} and {matrix.shape[0]}")
    return matrix, was_1d


def predict_labels(scores_2d: np.ndarray, was_1d: bool, threshold: float = 0.5) -> np.ndarray:
    """Predicted class indices: ``s >= threshold`` for 1-D binary input, else the row argmax. ``(n,)`` int64."""
    if was_1d:
        return (scores_2d[:, 1] >= threshold).astype(np.int64)
    return np.argmax(scores_2d, axis=1).astype(np.int64)


def _score_notes(scores_2d: np.ndarray) -> list[str]:
    sums = scores_2d.sum(axis=1)
    deviation = float(np.max(np.abs(sums - 1.0)))
    if deviation > _SUM_TOLERANCE or scores_2d.min() < 0.0:
        return [
            f"score rows do not sum to 1 (largest deviation {deviation:.3g}) or hold negative values: used as "
            "unnormalised scores (argmax for labels, per-class ranking for ROC), not renormalised"
        ]
    return []


def compute_confusion(y_true, y_pred, class_names: Sequence[str]) -> ConfusionMatrix:
    """Confusion matrix with counts and row percentages.

    Args:
        y_true: ``(n,)`` int true class indices in ``[0, k)``.
        y_pred: ``(n,)`` int predicted class indices in ``[0, k)``.
        class_names: the k class names; k is taken from here.

    Returns:
        A ``ConfusionMatrix`` (rows true, columns predicted); rows of absent classes are 0 %.
    """
    names = check_class_names(class_names, len(class_names))
    k = len(names)
    truth = as_labels(y_true, "y_true", k)
    pred = as_labels(y_pred, "y_pred", k)
    check_same_length(truth, pred, "y_true", "y_pred")
    counts = confusion_matrix(truth, pred, labels=np.arange(k)).astype(np.int64)
    totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
    percent = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return ConfusionMatrix(class_names=names, counts=_frozen(counts), row_percent=_frozen(percent))


def _class_curve(name: str, positive: np.ndarray, scores: np.ndarray) -> RocCurve:
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        missing = "no true cases (absent from y_true)" if n_pos == 0 else "no negatives (every case is this class)"
        empty = _frozen(np.empty(0))
        note = f"class {name!r} has {missing}: AUC undefined (NaN), left out of the macro average"
        return RocCurve(name, empty, empty, empty, math.nan, note)
    fpr, tpr, thresholds = roc_curve(positive, scores)
    return RocCurve(name, _frozen(fpr), _frozen(tpr), _frozen(thresholds), float(auc(fpr, tpr)))


def _curve_limits(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPR just left and just right of each grid FPR on a piecewise-linear ROC curve.

    A ROC curve has vertical steps (several TPRs at one FPR). ``np.interp`` picks one arbitrary value
    there, which biases the area of an averaged curve; keeping both one-sided limits keeps it exact.
    """
    hi = np.searchsorted(fpr, grid, side="left")  # first point with fpr >= x
    lo = np.searchsorted(fpr, grid, side="right") - 1  # last point with fpr <= x
    on_point = lo >= hi
    span = fpr[hi] - fpr[lo]
    slope = np.divide(tpr[hi] - tpr[lo], span, out=np.zeros_like(span), where=span > 0)
    between = tpr[lo] + (grid - fpr[lo]) * slope
    return np.where(on_point, tpr[hi], between), np.where(on_point, tpr[lo], between)


def _macro_curve(curves: list[RocCurve]) -> RocCurve:
    if not curves:
        empty = _frozen(np.empty(0))
        return RocCurve("macro", empty, empty, empty, math.nan, "no class has a defined ROC curve")
    grid = np.unique(np.concatenate([curve.fpr for curve in curves]))
    limits = [_curve_limits(curve.fpr, curve.tpr, grid) for curve in curves]
    left = np.mean([lim[0] for lim in limits], axis=0)
    right = np.mean([lim[1] for lim in limits], axis=0)
    fpr = np.repeat(grid, 2)
    tpr = np.column_stack([left, right]).ravel()
    keep = np.ones(fpr.size, dtype=bool)
    keep[1:] = (np.diff(fpr) != 0) | (np.diff(tpr) != 0)  # drop repeated points where left == right
    macro_auc = float(np.mean([curve.auc for curve in curves]))
    return RocCurve("macro", _frozen(fpr[keep]), _frozen(tpr[keep]), _frozen(np.empty(0)), macro_auc)


def compute_roc(y_true, scores, class_names: Sequence[str] | None = None) -> RocResult:
    """One-vs-rest ROC curves and AUC per class, with micro and macro averages.

    Args:
        y_true: ``(n,)`` int true class indices in ``[0, k)``.
        scores: ``(n, k)`` float class scores, or ``(n,)`` binary P(class 1) in [0, 1].
        class_names: k names; None gives ``"0", "1", ...``.

    Returns:
        A ``RocResult``. Undefined per-class curves (class absent from ``y_true`` or covering all of
        it) have NaN AUC and a note, and are left out of the macro average; the micro curve is always
        defined (k >= 2 makes both one-hot values occur).
    """
    matrix, _ = prepare_scores(scores)
    k = matrix.shape[1]
    names = check_class_names(class_names, k)
    truth = as_labels(y_true, "y_true", k)
    check_same_length(truth, matrix, "y_true", "scores")
    onehot = truth[:, None] == np.arange(k)[None, :]
    per_class = tuple(_class_curve(names[c], onehot[:, c], matrix[:, c]) for c in range(k))
    fpr, tpr, thresholds = roc_curve(onehot.ravel(), matrix.ravel())
    micro = RocCurve("micro", _frozen(fpr), _frozen(tpr), _frozen(thresholds), float(auc(fpr, tpr)))
    macro = _macro_curve([curve for curve in per_class if not math.isnan(curve.auc)])
    notes = tuple(_score_notes(matrix)) + tuple(curve.note for curve in per_class if curve.note)
    return RocResult(names, per_class, micro, macro, notes)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    num = np.asarray(numerator, dtype=np.float64)
    return np.divide(num, denominator, out=np.zeros_like(num), where=np.asarray(denominator) > 0)


def _averages(truth: np.ndarray, pred: np.ndarray, k: int, specificity: np.ndarray, tn_fp: tuple) -> dict:
    labels = np.arange(k)
    support = np.bincount(truth, minlength=k)
    tn, fp = tn_fp
    spec = {
        "macro": float(specificity.mean()),
        "micro": float(_safe_ratio(tn.sum(), tn.sum() + fp.sum())),
        "weighted": float(np.average(specificity, weights=support)),
    }
    averages = {}
    for kind in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(truth, pred, labels=labels, average=kind, zero_division=0)
        averages[kind] = AveragedMetrics(float(p), float(r), spec[kind], float(f))
    return averages


def _zero_division_notes(names: tuple[str, ...], support, predicted, negatives) -> list[str]:
    notes = []
    for i, name in enumerate(names):
        if support[i] == 0:
            notes.append(f"class {name!r} is absent from y_true: recall is 0.0 (zero division), F1 is 0.0")
        if predicted[i] == 0:
            notes.append(f"class {name!r} is never predicted: precision is 0.0 (zero division)")
        if negatives[i] == 0:
            notes.append(f"every case is class {name!r}: specificity is 0.0 (zero division)")
    return notes


def _label_report(truth: np.ndarray, pred: np.ndarray, names: tuple[str, ...], roc: RocResult | None):
    k = len(names)
    labels = np.arange(k)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=labels, average=None, zero_division=0
    )
    per_class_cm = multilabel_confusion_matrix(truth, pred, labels=labels)  # (k, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp = per_class_cm[:, 0, 0], per_class_cm[:, 0, 1]
    specificity = _safe_ratio(tn, tn + fp)
    averages = _averages(truth, pred, k, specificity, (tn, fp))
    notes = _zero_division_notes(names, support, per_class_cm[:, :, 1].sum(axis=1), tn + fp)
    notes += list(roc.notes) if roc is not None else []
    return ClassificationReport(
        class_names=names,
        n_samples=int(truth.size),
        accuracy=float(accuracy_score(truth, pred)),
        precision=_frozen(precision.astype(np.float64)),
        recall=_frozen(recall.astype(np.float64)),
        specificity=_frozen(specificity),
        f1=_frozen(f1.astype(np.float64)),
        support=_frozen(support.astype(np.int64)),
        macro=averages["macro"],
        micro=averages["micro"],
        weighted=averages["weighted"],
        confusion=compute_confusion(truth, pred, names),
        roc=roc,
        notes=tuple(notes),
    )


def compute_classification_metrics(
    y_true,
    scores=None,
    class_names: Sequence[str] | None = None,
    *,
    y_pred=None,
    threshold: float = 0.5,
) -> ClassificationReport:
    """All classification metrics of one set of predictions.

    Args:
        y_true: ``(n,)`` int true class indices in ``[0, k)``.
        scores: ``(n, k)`` float class scores, or ``(n,)`` binary P(class 1) in [0, 1]; None when only
            labels are known (then ``y_pred`` and ``class_names`` are required and ``roc`` is None).
        class_names: the k class names; defaults to ``"0", "1", ...`` when scores give k.
        y_pred: ``(n,)`` int predicted class indices; None derives them from ``scores``.
        threshold: decision threshold for ``(n,)`` binary scores only.

    Returns:
        A ``ClassificationReport``; see the module docstring for the zero-division and undefined-AUC
        conventions, which are listed case by case in its ``notes``.

    Raises:
        ValueError: shapes or lengths disagree, labels out of range, non-finite scores, missing
            ``y_pred``/``class_names`` without scores.
    """
    as_labels(y_true, "y_true")  # shape and type first, so that errors name y_true rather than a length clash
    if scores is None:
        if y_pred is None or class_names is None:
            raise ValueError(
                "without scores, pass y_pred and class_names (the number of classes cannot be inferred from "
                "labels: a class may be absent)"
            )
        names = check_class_names(class_names, len(class_names))
        roc = None
    else:
        n = np.asarray(y_true).shape[0] if np.ndim(y_true) >= 1 else None
        matrix, was_1d = prepare_scores(scores, n)
        names = check_class_names(class_names, matrix.shape[1])
        roc = compute_roc(y_true, matrix, names)
        if y_pred is None:
            y_pred = predict_labels(matrix, was_1d, threshold)
    truth = as_labels(y_true, "y_true", len(names))
    pred = as_labels(y_pred, "y_pred", len(names))
    check_same_length(truth, pred, "y_true", "y_pred")
    return _label_report(truth, pred, names, roc)


def compute_metrics_from_confusion(counts, class_names: Sequence[str]) -> ClassificationReport:
    """All label metrics (no ROC) from a confusion matrix.

    Args:
        counts: ``(k, k)`` non-negative integer counts, rows true class, columns predicted class.
        class_names: the k class names.

    Returns:
        The same ``ClassificationReport`` as ``compute_classification_metrics`` on the cases the
        matrix counts (they are expanded back to label pairs), with ``roc`` None.
    """
    matrix = as_finite_array(counts, "confusion matrix", ndim=2)
    k = matrix.shape[0]
    if matrix.shape != (k, k) or k < 2:
        raise ValueError(f"confusion matrix must be square with at least 2 classes, got shape {matrix.shape}")
    if (matrix < 0).any() or (matrix != np.round(matrix)).any():
        raise ValueError("confusion matrix must hold non-negative whole counts")
    if matrix.sum() == 0:
        raise ValueError("confusion matrix counts no cases (all zero)")
    names = check_class_names(class_names, k)
    cells = matrix.astype(np.int64).ravel()
    codes = np.repeat(np.arange(k * k), cells)
    return _label_report(codes // k, codes % k, names, roc=None)


def _bootstrap_estimates(
    truth: np.ndarray, pred: np.ndarray, matrix: np.ndarray | None, metrics: tuple[str, ...], k: int
) -> tuple[dict[str, float], np.ndarray]:
    estimates: dict[str, float] = {}
    defined = np.arange(k)
    for metric in metrics:
        if metric == "accuracy":
            estimates[metric] = float(accuracy_score(truth, pred))
        elif metric == "macro_f1":
            estimates[metric] = float(f1_score(truth, pred, labels=np.arange(k), average="macro", zero_division=0))
        else:
            roc = compute_roc(truth, matrix)
            estimates[metric] = roc.macro.auc
            defined = np.array([c for c, curve in enumerate(roc.per_class) if not math.isnan(curve.auc)], dtype=int)
    return estimates, defined


def _resolve_bootstrap_metrics(metrics: Sequence[str] | None, have_scores: bool) -> tuple[str, ...]:
    if metrics is None:
        return BOOTSTRAP_METRICS if have_scores else BOOTSTRAP_METRICS[:2]
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in BOOTSTRAP_METRICS]
    if unknown or not chosen:
        raise ValueError(f"metrics must be a non-empty subset of {list(BOOTSTRAP_METRICS)}, got {list(chosen)}")
    if "auc" in chosen and not have_scores:
        raise ValueError("the AUC interval needs scores, not only y_pred")
    return chosen


def compute_bootstrap_ci(
    y_true,
    scores=None,
    *,
    y_pred=None,
    class_names: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    stratified: bool = True,
    seed: int | None = 0,
    threshold: float = 0.5,
) -> dict[str, BootstrapCI]:
    """Percentile bootstrap confidence intervals for accuracy, macro F1 and macro AUC.

    Cases are resampled with replacement (all metrics share the same resamples). Stratified
    resampling draws within each true class, so every resample keeps the class counts and the AUC
    stays defined; without it a resample may lose a rare class, and such resamples are left out of
    the AUC interval (counted in ``n_valid``, explained in ``note``).

    Args:
        y_true: ``(n,)`` int true class indices in ``[0, k)``.
        scores: ``(n, k)`` float class scores or ``(n,)`` binary P(class 1); None with ``y_pred``.
        y_pred: ``(n,)`` int predicted indices; None derives them from ``scores`` as in
            ``compute_classification_metrics``.
        class_names: gives k when ``scores`` is None (needed for the macro F1 over all classes).
        metrics: subset of ``("accuracy", "macro_f1", "auc")``; None = all the inputs allow.
        n_resamples: number of bootstrap resamples, >= 1.
        confidence: confidence level in (0, 1).
        stratified: resample within each true class.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same intervals.
        threshold: decision threshold for ``(n,)`` binary scores only.

    Returns:
        ``{metric: BootstrapCI}`` in the order of ``metrics``. ``auc`` is the macro one-vs-rest AUC
        over the classes whose AUC is defined on the full sample (for binary probabilities, the
        ordinary AUC).
    """
    confidence = check_confidence(confidence)
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    chosen = _resolve_bootstrap_metrics(metrics, scores is not None)
    if scores is None:
        if y_pred is None or class_names is None:
            raise ValueError("without scores, pass y_pred and class_names")
        matrix, k = None, len(class_names)
    else:
        matrix, was_1d = prepare_scores(scores, np.asarray(y_true).shape[0] if np.ndim(y_true) else None)
        k = matrix.shape[1]
        y_pred = predict_labels(matrix, was_1d, threshold) if y_pred is None else y_pred
    truth, pred = as_labels(y_true, "y_true", k), as_labels(y_pred, "y_pred", k)
    check_same_length(truth, pred, "y_true", "y_pred")
    estimates, auc_classes = _bootstrap_estimates(truth, pred, matrix, chosen, k)

    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {metric: [] for metric in chosen}
    correct = truth == pred
    for idx in _bootstrap.resample_index_batches(truth.size, int(n_resamples), rng, truth if stratified else None):
        if "accuracy" in draws:
            draws["accuracy"].append(_bootstrap.batch_accuracy(correct, idx))
        if "macro_f1" in draws:
            draws["macro_f1"].append(_bootstrap.batch_macro_f1(_bootstrap.batch_confusion(truth, pred, idx, k)))
        if "auc" in draws:
            draws["auc"].append(_bootstrap.batch_macro_auc(truth, matrix, idx, auc_classes))
    return {
        metric: _interval(metric, estimates[metric], np.concatenate(draws[metric]), confidence, stratified, seed)
        for metric in chosen
    }


def _interval(
    metric: str, estimate: float, values: np.ndarray, confidence: float, stratified: bool, seed
) -> BootstrapCI:
    valid = values[~np.isnan(values)]
    note = ""
    if valid.size < values.size:
        note = (
            f"{values.size - valid.size} of {values.size} resamples lost every case (or every non-case) of a class "
            "and were left out; use stratified=True to keep class counts"
        )
    low, high = _bootstrap.percentile_interval(valid, confidence) if valid.size else (math.nan, math.nan)
    return BootstrapCI(
        metric=metric,
        estimate=float(estimate),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        n_resamples=int(values.size),
        n_valid=int(valid.size),
        stratified=bool(stratified),
        seed=seed,
        note=note,
    )
