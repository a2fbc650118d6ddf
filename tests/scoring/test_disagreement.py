"""The slide classifier against the cell classifier: when the two contradict each other."""

from __future__ import annotations

import pytest

from allmtl_spark.scoring.pipeline import LEUKEMIA_WITHOUT_BLASTS, NORMAL_WITH_BLASTS, slide_cell_disagreement

pytestmark = pytest.mark.unit


def test_the_issue_s_two_cases_disagree():
    # one white cell, no blast, called L3 at P(leukemia) 0.92-0.96
    assert slide_cell_disagreement(True, 1, 0) == LEUKEMIA_WITHOUT_BLASTS
    # called normal at 0.82 with 7 of 12 cells called blasts
    assert slide_cell_disagreement(False, 12, 7) == NORMAL_WITH_BLASTS


def test_agreement_and_no_cell_model_are_not_flagged():
    assert slide_cell_disagreement(True, 12, 7) is None
    assert slide_cell_disagreement(False, 12, 6) is None  # half is not most
    assert slide_cell_disagreement(False, 12, 0) is None
    assert slide_cell_disagreement(True, 5, None) is None  # no cell model: nothing to compare
    assert slide_cell_disagreement(True, 0, 0) is None


def test_thresholds_are_configurable():
    assert slide_cell_disagreement(True, 12, 2, min_blasts=3) == LEUKEMIA_WITHOUT_BLASTS
    assert slide_cell_disagreement(True, 12, 0, min_blasts=0) is None
    assert slide_cell_disagreement(False, 12, 3, max_blast_pct=20.0) == NORMAL_WITH_BLASTS
