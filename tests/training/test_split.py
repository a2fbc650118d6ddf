import numpy as np
import pandas as pd
import pytest

from allmtl_spark.training.split import assign_folds, groups_on_both_sides, split_id, train_val_test

pytestmark = pytest.mark.unit


def _frame(n_groups=40, per_group=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["normal", "L1", "L2", "L3"], size=n_groups)
    rows = [
        {"key": f"k{g}-{i}", "group": f"patient{g}", "label": labels[g]}
        for g in range(n_groups)
        for i in range(per_group)
    ]
    return pd.DataFrame(rows)


def test_no_group_on_two_sides_and_every_part_used():
    frame = _frame()
    frame["part"] = train_val_test(frame, test_fraction=0.25, val_fraction=0.15, seed=1).to_numpy()
    assert groups_on_both_sides(frame) == set()
    assert set(frame["part"]) == {"train", "val", "test"}
    share = frame["part"].value_counts(normalize=True)
    assert 0.15 < share["test"] < 0.35 and 0.05 < share["val"] < 0.25


def test_split_is_stratified_each_class_in_test():
    frame = _frame(n_groups=80)
    frame["part"] = train_val_test(frame, 0.25, 0.15, seed=3).to_numpy()
    assert set(frame[frame["part"] == "test"]["label"]) == {"normal", "L1", "L2", "L3"}


def test_folds_grouped_and_deterministic():
    frame = _frame()
    folds = assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), 5, seed=7)
    again = assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), 5, seed=7)
    assert (folds == again).all() and set(folds) == set(range(5))
    frame["fold"] = folds
    assert groups_on_both_sides(frame, "fold") == set()


def test_too_few_groups_is_a_clear_error():
    frame = _frame(n_groups=3)
    with pytest.raises(ValueError, match="3 groups cannot make 5 folds"):
        assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), 5, seed=0)


def test_split_id_depends_on_keys_and_settings_not_order():
    assert split_id(["a", "b"], {"seed": 1}) == split_id(["b", "a"], {"seed": 1})
    assert split_id(["a", "b"], {"seed": 1}) != split_id(["a", "b"], {"seed": 2})
    assert split_id(["a", "b"], {"seed": 1}) != split_id(["a", "c"], {"seed": 1})
