"""Input checks shared by the metrics and statistics modules.

Every check raises ``ValueError`` whose message names the argument and says what is wrong, so a
caller (or the CLI) can show it as is.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

# A sample whose spread is below a few ulps of its magnitude is constant: its computed variance is
# rounding noise, and a t statistic divided by it is a huge meaningless number.
_ULPS = 8.0


def _first_bad(mask: np.ndarray, limit: int = 5) -> list[int]:
    return np.flatnonzero(mask)[:limit].tolist()


def as_finite_array(values, name: str, ndim: int) -> np.ndarray:
    """Convert ``values`` to a float64 array of the given rank with only finite entries.

    Args:
        values: array-like of numbers.
        name: argument name used in error messages.
        ndim: required number of dimensions (1 or 2).

    Returns:
        A float64 array of rank ``ndim``.

    Raises:
        ValueError: non-numeric values, wrong rank, empty, NaN or infinite entries.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must contain numbers only: {exc}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (NaN or infinite) at row(s) {rows[:5].tolist()}"
        )
    return arr


def as_sample(values, name: str, min_size: int = 2) -> np.ndarray:
    """A 1-D float64 sample of at least ``min_size`` finite numbers.

    Args:
        values: array-like of numbers, e.g. per-trial accuracies.
        name: argument name used in error messages.
        min_size: smallest allowed length (2: a sample variance needs two values).

    Returns:
        ``(n,)`` float64 array.
    """
    arr = as_finite_array(values, name, ndim=1)
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values to estimate a variance, got {arr.size}")
    return arr


def as_labels(values, name: str, n_classes: int | None = None) -> np.ndarray:
    """Integer class indices, checked to be whole numbers in ``[0, n_classes)``.

    Args:
        values: ``(n,)`` array-like of class indices (int, bool or integral floats).
        name: argument name used in error messages.
        n_classes: number of classes k; None skips the upper bound.

    Returns:
        ``(n,)`` int64 array.
    """
    arr = as_finite_array(values, name, ndim=1)
    fractional = arr != np.round(arr)
    if fractional.any():
        raise ValueError(f"{name} must hold integer class indices; non-integers at row(s) {_first_bad(fractional)}")
    labels = arr.astype(np.int64)
    upper = n_classes if n_classes is not None else np.iinfo(np.int64).max
    out_of_range = (labels < 0) | (labels >= upper)
    if out_of_range.any():
        values_seen = sorted(set(labels[out_of_range].tolist()))[:5]
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes}); found {values_seen} at row(s) "
            f"{_first_bad(out_of_range)}"
        )
    return labels


def check_same_length(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    """Raise unless both arrays have the same number of rows."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{first_name} and {second_name} must have the same length, got {first.shape[0]} and {second.shape[0]}"
        )


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` as a float after checking it lies strictly between 0 and 1."""
    if not (isinstance(confidence, numbers.Real) and 0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def check_class_names(class_names: Sequence[str] | None, n_classes: int) -> tuple[str, ...]:
    """Class names as a tuple of k distinct strings; None gives ``("0", "1", ...)``."""
    if class_names is None:
        return tuple(str(i) for i in range(n_classes))
    names = tuple(str(name) for name in class_names)
    if len(names) != n_classes:
        raise ValueError(f"class_names has {len(names)} names but there are {n_classes} classes: {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {list(names)}")
    return names


def is_constant(values: np.ndarray) -> bool:
    """True when the spread of ``values`` is within rounding error of their magnitude."""
    scale = float(np.max(np.abs(values)))
    return float(np.ptp(values)) <= _ULPS * np.finfo(np.float64).eps * scale


def is_zero(values: np.ndarray, reference_scale: float) -> bool:
    """True when every value is within rounding error of zero, relative to ``reference_scale``."""
    return float(np.max(np.abs(values))) <= _ULPS * np.finfo(np.float64).eps * reference_scale
