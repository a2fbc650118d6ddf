"""The figures `allmtl review --ood-site` prints: how well the review flag separates unusual slides."""

import pytest

from allmtl_spark.scoring.review import held_out_flag_lines, separation_lines

pytestmark = pytest.mark.unit


def test_auroc_and_flag_rates_out_vs_in_distribution():
    is_out = [False, False, False, True, True]
    score = [0.1, 0.5, 0.2, 0.4, 0.9]  # one in-distribution slide (0.5) above an unusual one (0.4)
    flagged = [False, True, False, False, True]

    (line,) = separation_lines(is_out, score, flagged, "scored slides only")

    assert line.startswith("  scored slides only: ")
    assert "distribution 0.833" in line  # 5 of the 6 (out, in) pairs ordered right
    assert "in distribution 1/3 = 0.333 (95 % CI 0.008-0.906)" in line and "out of distribution 1/2 = 0.500" in line


def test_no_figures_without_both_kinds_of_slide():
    assert separation_lines([False, False], [0.1, 0.2], [False, True], "every slide") == []


def test_the_held_out_test_part_flag_rate_is_printed_with_its_interval():
    (line,) = held_out_flag_lines({"test_ood_flagged": 2.0, "test_ood_n": 60.0, "test_n": 60.0})
    assert "held-out test part (60 slides" in line and "2/60 = 0.033 (95 % CI 0.004-0.115)" in line
    assert held_out_flag_lines({"test_n": 60.0}) == []  # a model registered before the figure was measured
