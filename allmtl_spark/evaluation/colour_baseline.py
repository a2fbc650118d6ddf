"""A colour-only baseline: how well can a classifier do from colour alone, without shape or size?

Per-channel colour histograms of each item's pixels (an item is one image or several, e.g. a
slide's cell crops; optionally only the pixels inside masks) feed a multinomial logistic
regression (scikit-learn; its regularisation chosen on each training side only), scored by
stratified k-fold cross-validation with the items grouped by patient, so no patient is on both
sides of a split. A deep model that scores no better than
this has learned nothing colour cannot tell; a data set on which it scores high gives its class
away in colour. Pure numpy + scikit-learn: no Spark, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Images = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class CrossValidatedAccuracy:
    """Accuracy of a classifier under patient-grouped, stratified k-fold cross-validation.

    Attributes:
        accuracy: mean of the fold accuracies (over every fold of every repeat).
        accuracy_std: standard deviation of the fold accuracies (the spread between folds).
        accuracy_min, accuracy_max: the worst and best fold.
        fold_accuracies: every fold's accuracy, repeat after repeat.
        chance: accuracy of always answering the most frequent class.
        n_items, n_groups, n_classes: what was scored.
        folds, repeats: the cross-validation used.
    """

    accuracy: float
    accuracy_std: float
    accuracy_min: float
    accuracy_max: float
    fold_accuracies: tuple[float, ...]
    chance: float
    n_items: int
    n_groups: int
    n_classes: int
    folds: int
    repeats: int

    def format(self, name: str) -> str:
        """One line: ``name: 0.412 +- 0.061 (folds 0.31-0.52; chance 0.50; 240 items, 120 patients, 5-fold x 2)``."""
        return (
            f"{name}: {self.accuracy:.3f} +- {self.accuracy_std:.3f} "
            f"(folds {self.accuracy_min:.2f}-{self.accuracy_max:.2f}; chance {self.chance:.2f}; "
            f"{self.n_items} items, {self.n_groups} patients, {self.folds}-fold x {self.repeats})"
        )


def colour_histograms(
    images: Sequence[Images], masks: Sequence[Images | None] | None = None, bins: int = 16
) -> np.ndarray:
    """Per-channel colour histograms of each item, normalised to sum to 1 per channel.

    Args:
        images: one entry per item: an HxWx3 uint8 image, or a sequence of them (e.g. a slide's
            cell crops, pooled into one histogram).
        masks: None (every pixel counts), or one entry per item shaped like ``images``: HxW
            arrays, nonzero where a pixel counts (e.g. the cells), or None for that item.
        bins: histogram bins per channel over 0..255.

    Returns:
        float64 (n_items, 3 * bins): channel 0's bins, then channel 1's, then channel 2's. An
        item with no counted pixel gets zeros.
    """
    if bins < 2 or bins > 256:
        raise ValueError(f"bins must be in 2..256, got {bins}")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"masks has {len(masks)} entries for {len(images)} items")
    out = np.zeros((len(images), 3 * bins), np.float64)
    for i, item in enumerate(images):
        parts = [item] if isinstance(item, np.ndarray) else list(item)
        item_masks = masks[i] if masks is not None else None
        if item_masks is None:
            mask_parts = [None] * len(parts)
        else:
            mask_parts = [item_masks] if isinstance(item_masks, np.ndarray) else list(item_masks)
        if len(mask_parts) != len(parts):
            raise ValueError(f"item {i}: {len(mask_parts)} masks for {len(parts)} images")
        counts = np.zeros((3, bins), np.float64)
        for image, mask in zip(parts, mask_parts, strict=True):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"item {i}: images must be HxWx3, got shape {image.shape}")
            pixels = image.reshape(-1, 3) if mask is None else image[np.asarray(mask) > 0]
            if mask is not None and np.asarray(mask).shape != image.shape[:2]:
                raise ValueError(f"item {i}: mask shape {np.asarray(mask).shape} differs from image {image.shape[:2]}")
            index = (pixels.astype(np.int64) * bins) // 256
            for c in range(3):
                counts[c] += np.bincount(index[:, c], minlength=bins)
        totals = counts.sum(axis=1, keepdims=True)
        out[i] = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).ravel()
    return out


REGULARISATION_GRID = (0.01, 0.1, 1.0, 10.0)


def compute_grouped_cv_accuracy(
    features: np.ndarray,
    labels: Sequence,
    groups: Sequence,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    regularisation: float | None = None,
) -> CrossValidatedAccuracy:
    """Accuracy of a standardised multinomial logistic regression under patient-grouped stratified k-fold CV.

    Uses scikit-learn's ``StratifiedGroupKFold`` (every group on one side of each split, class
    shares kept as far as the groups allow) and ``LogisticRegression`` after a ``StandardScaler``
    fitted on the training side only. The regularisation strength is either fixed or chosen per
    outer fold by an inner 3-fold grouped CV on that fold's training side only (``GridSearchCV``
    over ``REGULARISATION_GRID``, accuracy), so the test side never picks it; with too few groups
    to tune (an inner training side of one class) it stays at 1.

    Args:
        features: float (n_items, n_features).
        labels: n_items class labels (any hashable values).
        groups: n_items group ids (patients); pass unique ids per item to ignore grouping.
        folds: k.
        repeats: times the k-fold is repeated with a different shuffle (seed, seed + 1, ...).
        seed: shuffle seed of the first repeat.
        regularisation: sklearn's inverse regularisation strength ``C``; None chooses it (above).

    Returns:
        A ``CrossValidatedAccuracy``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    g = np.asarray(groups)
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(g):
        raise ValueError(f"features {x.shape}, labels {y.shape} and groups {g.shape} must agree on the items")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("need at least two classes")
    n_groups = len(np.unique(g))
    if folds < 2 or n_groups < folds:
        raise ValueError(f"folds must be in 2..{n_groups} (the number of groups), got {folds}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    scores = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for train, test in splitter.split(x, y, g):
            if len(np.unique(y[train])) < 2:
                continue  # a fold whose training side has one class cannot train a classifier
            c = 1.0 if regularisation is None else regularisation
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
            inner = []
            if regularisation is None and len(np.unique(g[train])) >= 3:
                inner = list(GroupKFold(n_splits=3).split(x[train], y[train], g[train]))
            # Too few groups to tune (an inner training side with one class): the default C.
            if inner and all(len(np.unique(y[train][fit])) >= 2 for fit, _ in inner):
                model = GridSearchCV(model, {"logisticregression__C": list(REGULARISATION_GRID)}, cv=inner)
            model.fit(x[train], y[train])
            scores.append(float(np.mean(model.predict(x[test]) == y[test])))
    if not scores:
        raise ValueError("no fold had two classes on its training side")
    fold = np.array(scores)
    return CrossValidatedAccuracy(
        accuracy=float(fold.mean()),
        accuracy_std=float(fold.std(ddof=1)) if len(fold) > 1 else 0.0,
        accuracy_min=float(fold.min()),
        accuracy_max=float(fold.max()),
        fold_accuracies=tuple(scores),
        chance=float(counts.max() / counts.sum()),
        n_items=len(y),
        n_groups=n_groups,
        n_classes=len(classes),
        folds=folds,
        repeats=repeats,
    )


def compute_colour_baseline(
    images: Sequence[Images],
    labels: Sequence,
    groups: Sequence,
    masks: Sequence[Images | None] | None = None,
    bins: int = 16,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    regularisation: float | None = None,
) -> CrossValidatedAccuracy:
    """Colour-only accuracy: per-channel histograms (``colour_histograms``) + logistic regression, grouped CV.

    Args:
        images: one entry per item, an HxWx3 uint8 image or a sequence of them (pooled).
        labels: n_items class labels.
        groups: n_items patient ids (items of one patient stay on one side of every split).
        masks: optional masks per item (see ``colour_histograms``); for cells isolated on a black
            backdrop pass ``interior(image)`` so neither the backdrop (whose share tells the cell
            size) nor the cells' rims blended with it (whose share does too) count.
        bins: histogram bins per channel.
        folds, repeats, seed: the cross-validation (see ``compute_grouped_cv_accuracy``).
        regularisation: fixed ``C``, or None to choose it on each training side.

    Returns:
        A ``CrossValidatedAccuracy``.
    """
    return compute_grouped_cv_accuracy(
        colour_histograms(images, masks, bins),
        labels,
        groups,
        folds=folds,
        repeats=repeats,
        seed=seed,
        regularisation=regularisation,
    )


def nonblack(image: np.ndarray) -> np.ndarray:
    """HxW bool mask of the pixels that are not pure black (the backdrop of isolated cells)."""
    return np.asarray(image).max(axis=2) > 0


def interior(image: np.ndarray, margin: int = 1) -> np.ndarray:
    """HxW bool mask of the non-black pixels at least ``margin`` pixels inside their cell.

    Resizing blends a cell's outermost pixels with the black backdrop. Their share of the cell is its
    perimeter over its area, so a histogram that counts them tells a small cell from a large one of the
    same colour (``allmtl synth --check`` on the demo's montages: rims in, 4-class accuracy 0.629; rims
    out, 0.479, where always answering the majority class scores 0.50). Leaving them out keeps the
    histogram about colour.
    """
    import cv2

    mask = nonblack(image).astype(np.uint8)
    if margin <= 0:
        return mask > 0
    return cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8), borderValue=0) > 0
