import pytest

from allmtl_spark.config import load_config
from allmtl_spark.training.stages import plan_stages

pytestmark = pytest.mark.unit


def test_mtl_starts_from_stage2_classical_from_configured_weights():
    cfg = load_config(None, ["train.backbones=[Xception]", "train.tasks=[binary, fab4]"]).train
    plans = {p.key: p for p in plan_stages(cfg)}
    assert list(plans)[0] == "stage2-cell_binary-xception"
    assert plans["stage3-fab4-mtl-xception"].init_from == "stage2-cell_binary-xception"
    assert plans["stage3-fab4-classical-xception"].init_from is None
    assert plans["stage3-binary-mtl-xception"].head == "dense"
    assert plans["stage2-cell_binary-xception"].head == "simple"
    assert plans["stage3-fab4-mtl-xception"].class_names == ("normal", "L1", "L2", "L3")


def test_classical_only_skips_stage2_and_budgets_match():
    cfg = load_config(None, ["train.approaches=[classical]", "train.tasks=[binary]"]).train
    plans = plan_stages(cfg)
    assert [p.key for p in plans] == ["stage3-binary-classical-inceptionv3"]
    both = plan_stages(load_config(None, ["train.tasks=[binary]"]).train)
    mtl, classical = both[1], both[2]
    assert mtl.schedule == classical.schedule  # same stage-3 budget: a fair comparison
