"""``allmtl bench scale``: the red-cell pixel-size estimate timed on synthetic slides of known scale."""

from __future__ import annotations

import re

import pytest

from allmtl_spark.bench.scale import format_rows, run_bench_scale
from allmtl_spark.config.schema import SmearParams

pytestmark = pytest.mark.unit


def test_rows_hold_the_true_scale_the_estimate_and_both_times():
    params = SmearParams(pixel_size_um=(0.15, 0.16))
    rows = run_bench_scale(params, slides=2, repeats=2, width=640, height=480, seed=7, min_confidence=0.0)

    assert len(rows) == 2
    for true, estimate, confidence, wall, cpu in rows:
        assert 0.15 <= true <= 0.16 and 0.0 <= confidence <= 1.0
        assert estimate is not None and abs(estimate / true - 1) < 0.25  # min_confidence 0: every estimate kept
        assert wall > 0 and cpu >= 0
    text = format_rows(rows, 640, 480, 0.0)
    assert "2 synthetic 640x480 slides" in text and "(budget 50 ms)" in text
    assert re.search(r"confident \(>= 0\.0\): 2/2; \|error\| median [\d.]+%", text)


def test_not_confident_estimates_are_reported_as_such():
    rows = [(0.155, None, 0.1, 30.0, 29.0), (0.31, 0.3, 0.9, 40.0, 38.0)]
    text = format_rows(rows, 2592, 1944, 0.5)
    assert "0.1550 um/px -> not confident" in text and "0.3100 um/px -> 0.3000 (-3.2%)" in text
    assert "wall median 35.0 ms, worst 40.0 ms; CPU median 33.5 ms, worst 38.0 ms" in text
    assert "confident (>= 0.5): 1/2" in text


def test_the_command_prints_the_figures(capsys):
    from allmtl_spark.cli import main

    argv = ["bench", "scale", "--slides", "1", "--repeats", "1", "--width", "400", "--height", "300"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bench scale: 1 synthetic 400x300 slides" in out and "budget 50 ms" in out
