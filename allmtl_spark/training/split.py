"""Grouped, stratified splits decided before any augmentation (pure pandas/scikit-learn).

A group is a patient where the patient is known, else a slide: every image of a group lands in
one part, so no patient (and no augmented copy of a test image) is ever on both sides.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

PARTS = ("train", "val", "test")


def split_id(keys: list[str], settings: dict) -> str:
    """Stable id of a split: a hash of the sorted item keys and the split settings."""
    digest = hashlib.sha256(repr((sorted(keys), sorted(settings.items()))).encode()).hexdigest()
    return f"split-{digest[:12]}"


def assign_folds(groups: np.ndarray, labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) per item, grouped by ``groups`` and stratified by ``labels``.

    Args:
        groups: (n,) group key per item (patient hash or slide id).
        labels: (n,) class label per item.
        n_folds: number of folds; more than the number of groups is an error.
        seed: shuffling seed.

    Returns:
        (n,) int array of fold numbers.
    """
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ValueError(f"{n_groups} groups cannot make {n_folds} folds; lower the fold count or add data")
    folds = np.full(len(groups), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups)):
        folds[held] = fold
    return folds


def train_val_test(frame: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int) -> pd.Series:
    """Part (train / val / test) per row of ``frame`` (columns ``group``, ``label``).

    The test part is one fold of round(1 / test_fraction) grouped stratified folds; the
    validation part is carved the same way out of the rest.
    """
    parts = pd.Series("train", index=frame.index)
    test_folds = assign_folds(
        frame["group"].to_numpy(), frame["label"].to_numpy(), max(2, round(1 / test_fraction)), seed
    )
    parts[test_folds == 0] = "test"
    rest = frame[parts == "train"]
    val_folds = assign_folds(
        rest["group"].to_numpy(), rest["label"].to_numpy(), max(2, round((1 - test_fraction) / val_fraction)), seed + 1
    )
    parts.loc[rest.index[val_folds == 0]] = "val"
    return parts


def groups_on_both_sides(frame: pd.DataFrame, part_column: str = "part") -> set[str]:
    """Groups that appear in more than one part (must be empty for a valid split)."""
    counts = frame.groupby("group")[part_column].nunique()
    return set(counts[counts > 1].index)


def fold_parts(frame: pd.DataFrame, n_folds: int, fold: int, val_fraction: float, seed: int) -> pd.Series:
    """Parts for fold ``fold`` of ``n_folds`` grouped stratified folds: that fold is the test
    part, a grouped stratified slice of the others is validation, the rest is training."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is outside 0..{n_folds - 1}")
    folds = assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), n_folds, seed)
    parts = pd.Series(np.where(folds == fold, "test", "train"), index=frame.index)
    rest = frame[parts == "train"]
    val_folds = assign_folds(
        rest["group"].to_numpy(), rest["label"].to_numpy(), max(2, round((1 - 1 / n_folds) / val_fraction)), seed + 1
    )
    parts.loc[rest.index[val_folds == 0]] = "val"
    return parts
