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


def assign_folds(
    groups: np.ndarray, labels: np.ndarray, n_folds: int, seed: int, set_by: str = "the fold count"
) -> np.ndarray:
    """Fold number (0..n_folds-1) per item, grouped by ``groups`` and stratified by ``labels``.

    Args:
        groups: (n,) group key per item (patient hash or slide id).
        labels: (n,) class label per item.
        n_folds: number of folds; more than the number of groups is an error.
        seed: shuffling seed.
        set_by: the setting that decided ``n_folds``, named in the error.

    Returns:
        (n,) int array of fold numbers.
    """
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ValueError(
            f"{n_groups} groups (patients, or slides without one) cannot make {n_folds} folds; "
            f"change {set_by} or add data"
        )
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
        frame["group"].to_numpy(),
        frame["label"].to_numpy(),
        max(2, round(1 / test_fraction)),
        seed,
        f"train.split.test_fraction ({test_fraction})",
    )
    parts[test_folds == 0] = "test"
    rest = frame[parts == "train"]
    val_folds = assign_folds(
        rest["group"].to_numpy(),
        rest["label"].to_numpy(),
        max(2, round((1 - test_fraction) / val_fraction)),
        seed + 1,
        f"train.split.val_fraction ({val_fraction}; the validation part is cut from the {len(set(rest['group']))} "
        "groups left after the test part)",
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
    folds = assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), n_folds, seed, "evaluate.folds")
    parts = pd.Series(np.where(folds == fold, "test", "train"), index=frame.index)
    rest = frame[parts == "train"]
    val_folds = assign_folds(
        rest["group"].to_numpy(),
        rest["label"].to_numpy(),
        max(2, round((1 - 1 / n_folds) / val_fraction)),
        seed + 1,
        f"train.split.val_fraction ({val_fraction})",
    )
    parts.loc[rest.index[val_folds == 0]] = "val"
    return parts


HELD_OUT = ("val", "test")


def stage2_allowed(cells: pd.DataFrame, slides: pd.DataFrame) -> pd.Series:
    """Which single cells stage 2 may use: none of a stage-3 validation or test slide or patient.

    ALL-IDB2's crops are cut out of ALL-IDB1's slides: a stage-2 model trained on a cell of a slide
    that stage 3 later tests on has seen that slide. A cell is allowed when neither its source slide
    (by content hash or slide id) nor its patient is on the held-out side of the stage-3 split.

    Args:
        cells: columns ``patient`` (hash or None), ``source_slide`` (content hash or None) and
            ``source_slide_id`` (slide id or None).
        slides: the stage-3 split: ``key`` (content hash), ``item_id`` (slide id), ``patient`` and ``part``.

    Returns:
        Boolean series aligned with ``cells``.
    """
    held = slides[slides["part"].isin(HELD_OUT)]
    keys, ids = set(held["key"]), set(held["item_id"])
    patients = set(held["patient"].dropna())
    blocked = cells["source_slide"].isin(keys) | cells["source_slide_id"].isin(ids) | cells["patient"].isin(patients)
    return ~blocked.fillna(False).astype(bool)


def linked(cells: pd.DataFrame) -> pd.Series:
    """Cells that carry a patient or a source slide (only those can be checked against the stage-3 split)."""
    return (cells["patient"].notna() | cells["source_slide"].notna() | cells["source_slide_id"].notna()).astype(bool)


def check_stage_overlap(slides: pd.DataFrame, cells: pd.DataFrame | None) -> str:
    """Assert that no group crosses sides or stages; returns the check's one-line record.

    Checks, before anything trains: (1) no stage-3 group (patient, else slide) on two parts of the
    slide split; (2) no stage-2 group on two parts of the cell split; (3) no cell used by stage 2 (any
    part) from a slide, or of a patient, that is on the validation or test side of stage 3.

    Args:
        slides: stage-3 split rows: ``key``, ``item_id``, ``group``, ``patient``, ``part``.
        cells: stage-2 split rows (the cells stage 2 uses): ``key``, ``group``, ``patient``,
            ``source_slide``, ``source_slide_id``, ``part``; None when no stage 2 runs.

    Returns:
        ``passed: ...`` with the counts checked.

    Raises:
        LeakageError: naming the first offending groups.
    """
    from allmtl_spark.errors import LeakageError

    crossing = groups_on_both_sides(slides)
    if crossing:
        raise LeakageError(f"stage-3 split puts group(s) {sorted(crossing)[:3]} on two sides; the split is broken")
    held = int(slides["part"].isin(HELD_OUT).sum())
    if cells is None or cells.empty:
        return f"passed: {len(slides)} slides, no group on two sides ({held} validation/test slides); no stage 2"
    crossing = groups_on_both_sides(cells)
    if crossing:
        raise LeakageError(f"stage-2 split puts group(s) {sorted(crossing)[:3]} on two sides; the split is broken")
    bad = cells[~stage2_allowed(cells, slides)]
    if not bad.empty:
        raise LeakageError(
            f"stage 2 would train on {len(bad)} cell(s) of stage-3 validation/test slides or patients "
            f"(e.g. {sorted(bad['key'])[:3]}): a multistage model would have seen its test slides. "
            "Stage 2 must use only cells whose slide and patient are on the stage-3 training side."
        )
    linked = int((cells["source_slide"].notna() | cells["source_slide_id"].notna()).sum())
    with_patient = int(cells["patient"].notna().sum())
    return (
        f"passed: {len(slides)} slides, {len(cells)} stage-2 cells ({linked} with their source slide, "
        f"{with_patient} with a patient); no group on two sides, no stage-2 cell of the {held} "
        "stage-3 validation/test slides or their patients"
    )
