"""`allmtl synth` and `allmtl synth --check` from the command line."""

from __future__ import annotations

import re

import pytest

from allmtl_spark.cli import EXIT_BAD_CONFIG, main

pytestmark = pytest.mark.unit
SMALL = [
    "--set",
    "synth.n_slides=16",
    "--set",
    "synth.slide_width=320",
    "--set",
    "synth.slide_height=240",
    "--set",
    "synth.workers=1",
]


def test_synth_writes_the_data_set_and_says_what(tmp_path, capsys):
    assert main(["synth", *SMALL, "--set", "synth.n_cells=8", "--set", f"synth.output={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "slides: 16" in out and "cells:  8" in out and "white-cell boxes" in out
    assert (tmp_path / "manifest.csv").exists() and (tmp_path / "boxes.csv").exists()


def test_synth_check_prints_colour_and_morphology_figures_and_writes_nothing(tmp_path, capsys):
    crops = ["--set", "synth.n_cells=16", "--set", "synth.cell_crop_size_um=26"]
    args = ["synth", "--check", "--folds", "2", "--repeats", "1", *SMALL, *crops, "--set", f"synth.output={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in (
        "colour only, 4 classes",
        "morphology (um), 4 classes",
        "colour only, binary",
        "morphology (um), binary",
        "colour only, crops",
        "morphology (um), crops",
    ):
        assert re.search(re.escape(name) + r"\s*: 0\.\d{3} \+- 0\.\d{3} .*2-fold x 1", out), name
    assert "nearest colour neighbour" in out and "the 16 crops (stage 2: blast vs lymphocyte)" in out
    assert not any(tmp_path.iterdir())


def test_a_removed_pixel_key_is_a_configuration_error(capsys):
    assert main(["synth", "--set", "synth.rbc_diameter_px=[38, 62]"]) == EXIT_BAD_CONFIG
    assert "synth.rbc_diameter_px was removed: use synth.pixel_size_um" in capsys.readouterr().err
