"""The FAB class is in lymphoid-cell morphology, measured in micrometres from rendered pixels as an analyst would."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.synth.check import CellFeatures, glass_level, measure_cell
from allmtl_spark.synth.smear import SmearParams, render_cell_crop, render_slide

pytestmark = pytest.mark.unit
N_PER_CLASS = 24


@pytest.fixture(scope="module")
def stats() -> dict[str, list[CellFeatures]]:
    params = SmearParams()  # every scale of the default range: the features are physical
    out = {}
    for kind in ("normal", "L1", "L2", "L3"):
        crops = [render_cell_crop(np.random.default_rng([11, i]), 30.0, kind, params) for i in range(N_PER_CLASS)]
        out[kind] = [measure_cell(c.image, c.mask, c.pixel_size_um, glass_level(c.image)) for c in crops]
    return out


def _mean(stats: dict[str, list[CellFeatures]], kind: str, field: str) -> float:
    return float(np.mean([getattr(s, field) for s in stats[kind]]))


def test_cell_size_follows_fab_class_in_square_micrometres(stats):
    area = {k: _mean(stats, k, "cell_area_um2") for k in stats}
    assert 40 < area["normal"] < 80  # 7-10 um across
    assert area["L1"] > area["normal"] * 1.4  # L1: about twice a small lymphocyte
    assert area["L2"] > area["L1"] * 1.4 and area["L3"] > area["L1"] * 1.3  # L2, L3: large
    nucleus = {k: _mean(stats, k, "nucleus_area_um2") for k in stats}
    assert min(nucleus, key=nucleus.get) == "normal"


def test_mature_lymphocytes_and_l1_have_little_cytoplasm(stats):
    nc = {k: _mean(stats, k, "nucleus_cell_ratio") for k in stats}
    assert min(nc["normal"], nc["L1"]) > max(nc["L2"], nc["L3"]) + 0.05


def test_l2_nuclei_are_irregular(stats):
    irregular = {k: _mean(stats, k, "nucleus_irregularity") for k in stats}
    assert irregular["L2"] > 1.5 * max(irregular[k] for k in ("normal", "L1", "L3"))


def test_l3_cytoplasm_has_vacuoles(stats):
    assert np.mean([s.vacuoles >= 2 for s in stats["L3"]]) > 0.7
    for kind in ("normal", "L1", "L2"):
        assert _mean(stats, kind, "vacuoles") < 0.6, kind


def test_other_white_cells_are_drawn_with_their_own_look():
    # Neutrophils' lobed nuclei are far more irregular than a lymphocyte's; eosinophils are orange-red, not blue.
    params = SmearParams(
        pixel_size_um=(0.12, 0.12),
        white_cells_per_slide=(1, 1),
        other_white_cells_per_slide=(3, 3),
        other_white_cell_mix={"neutrophil": 1.0, "eosinophil": 1.0},
    )
    irregular, colour = {"neutrophil": [], "normal": []}, {"eosinophil": [], "normal": []}
    for seed in range(6):
        s = render_slide(np.random.default_rng(seed), 640, 480, "normal", params)
        glass = glass_level(s.image)
        for i, c in enumerate(s.cells):
            mask = s.labels == i + 1
            if c.kind in irregular:
                irregular[c.kind].append(measure_cell(s.image, mask, s.pixel_size_um, glass).nucleus_irregularity)
            if c.kind in colour:
                rgb = s.image[mask].astype(float).mean(0)
                colour[c.kind].append(rgb[0] - rgb[2])  # red minus blue
    assert np.mean(irregular["neutrophil"]) > np.mean(irregular["normal"]) + 0.1
    assert np.mean(colour["eosinophil"]) > np.mean(colour["normal"]) + 30
