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
    with pytest.raises(ValueError, match=r"3 groups \(patients, or slides without one\) cannot make 5 folds; change "):
        assign_folds(frame["group"].to_numpy(), frame["label"].to_numpy(), 5, seed=0)


def test_split_id_depends_on_keys_and_settings_not_order():
    assert split_id(["a", "b"], {"seed": 1}) == split_id(["b", "a"], {"seed": 1})
    assert split_id(["a", "b"], {"seed": 1}) != split_id(["a", "b"], {"seed": 2})
    assert split_id(["a", "b"], {"seed": 1}) != split_id(["a", "c"], {"seed": 1})


# ------------------------------------------------------------------ cross-stage overlap (issue 16)

from allmtl_spark.errors import LeakageError  # noqa: E402
from allmtl_spark.training.split import check_stage_overlap, linked, stage2_allowed  # noqa: E402


def _slides():
    # Stage-3 split of six slides of four patients (p3 has two slides, both held out).
    return pd.DataFrame(
        {
            "key": ["s1", "s2", "s3", "s4", "s5", "s6"],
            "item_id": ["Im1", "Im2", "Im3", "Im4", "Im5", "Im6"],
            "group": ["p1", "p2", "p3", "p3", "p4", "slide:Im6"],
            "patient": ["p1", "p2", "p3", "p3", "p4", None],
            "label": ["normal", "L1", "L2", "L2", "L3", "normal"],
            "part": ["train", "train", "test", "test", "val", "train"],
        }
    )


def _cells(rows):
    frame = pd.DataFrame(rows, columns=["key", "group", "patient", "source_slide", "source_slide_id", "part"])
    return frame.astype(object).where(frame.notna(), None)


def test_stage2_keeps_only_cells_of_training_side_slides_and_patients():
    cells = _cells(
        [
            ("c1", "p1", "p1", "s1", "Im1", "train"),  # training-side slide: allowed
            ("c2", "p3", "p3", None, None, "train"),  # patient held out: blocked
            ("c3", "x", None, "s5", None, "train"),  # cut from a validation slide: blocked
            ("c4", "y", None, None, "Im3", "train"),  # named (by id) from a test slide: blocked
            ("c5", "z", "p9", None, None, "train"),  # a patient stage 3 never sees: allowed
            ("c6", "cell:c6", None, None, None, "train"),  # nothing known: allowed here, not "linked"
        ]
    )
    assert stage2_allowed(cells, _slides()).tolist() == [True, False, False, False, True, True]
    assert linked(cells).tolist() == [True, True, True, True, True, False]


def test_overlap_check_passes_a_clean_run_and_records_what_it_checked():
    cells = _cells([("c1", "p1", "p1", "s1", "Im1", "train"), ("c5", "p9", "p9", None, None, "val")])
    record = check_stage_overlap(_slides(), cells)
    assert record.startswith("passed: 6 slides, 2 stage-2 cells (1 with their source slide, 2 with a patient)")
    assert "3 stage-3 validation/test slides" in record


def test_overlap_check_fires_on_a_cell_of_a_test_slide():
    cells = _cells([("c1", "p1", "p1", "s1", "Im1", "train"), ("bad", "q", None, "s4", "Im4", "train")])
    with pytest.raises(LeakageError, match=r"1 cell\(s\) of stage-3 validation/test slides .*'bad'"):
        check_stage_overlap(_slides(), cells)


def test_overlap_check_fires_on_a_held_out_patient_and_on_groups_on_two_sides():
    with pytest.raises(LeakageError, match="stage 2 would train"):
        check_stage_overlap(_slides(), _cells([("c2", "p4", "p4", None, None, "val")]))
    broken = _slides().assign(part=["train", "train", "test", "train", "val", "train"])  # p3 on both sides
    with pytest.raises(LeakageError, match=r"stage-3 split puts group\(s\) \['p3'\] on two sides"):
        check_stage_overlap(broken, None)
    cells = _cells([("c1", "p1", "p1", "s1", None, "train"), ("c7", "p1", "p1", "s1", None, "test")])
    with pytest.raises(LeakageError, match=r"stage-2 split puts group\(s\) \['p1'\]"):
        check_stage_overlap(_slides(), cells)


def _labelled_slides(n: int, fab: bool, start: int = 0) -> pd.DataFrame:
    classes = ("normal", "L1", "L2", "L3")
    rows = []
    for i in range(start, start + n):
        label = classes[(i // 2) % 4]
        rows.append(
            {
                "key": f"k{i:03d}",
                "item_id": f"s{i}",
                "group": f"p{i // 2}",
                "patient": f"p{i // 2}",
                "label_fab": label if fab else None,
                "label_binary": float(label != "normal"),
            }
        )
    return pd.DataFrame(rows)


def test_slides_no_planned_task_can_use_do_not_move_the_split():
    from allmtl_spark.training.datasets import slides_for_tasks

    labelled = _labelled_slides(48, fab=True)
    binary_only = _labelled_slides(24, fab=False, start=48)  # a scored ALL-IDB1 archive: names give normal/ALL
    everything = pd.concat([labelled, binary_only], ignore_index=True)

    fab4 = slides_for_tasks(everything, ("fab4",))
    assert list(fab4["key"]) == list(labelled["key"]) and list(fab4.columns)[-1] == "label"
    alone = train_val_test(slides_for_tasks(labelled, ("fab4",)), 0.25, 0.15, seed=3)
    assert train_val_test(fab4, 0.25, 0.15, seed=3).tolist() == alone.tolist()
    # Counting the binary-only slides in, as the split once did, moves the 4-class slides between parts.
    both = slides_for_tasks(everything, ("binary", "fab4"))
    assert len(both) == 72 and set(both["label"][48:]) == {"normal", "ALL"} and both["label"][2] == "L1"
    assert train_val_test(both, 0.25, 0.15, seed=3)[:48].tolist() != alone.tolist()
