"""The FAB class is carried by white-cell morphology, measured from rendered crops like an image analyst would."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from allmtl_spark.synth.smear import SmearParams, SyntheticSlide, render_cell_crop

N_PER_CLASS = 30


@dataclass(frozen=True)
class CellStats:
    area: float  # white-cell pixels (mask)
    nc_ratio: float  # nucleus area / cell area
    solidity: float  # nucleus area / convex hull area: below 1 for irregular, cleft nuclei
    chromatin_cv: float  # coefficient of variation of the green channel inside the nucleus
    vacuoles: int  # bright holes in the cytoplasm
    nucleoli: int  # pale spots inside the nucleus


def _kernel(size: int) -> np.ndarray:
    return np.ones((size, size), np.uint8)


def _largest_filled(binary: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(binary.shape, np.uint8)
    if contours:
        cv2.drawContours(out, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return out.astype(bool)


def _spots(region: np.ndarray, bright: np.ndarray) -> int:
    n, _, stats, _ = cv2.connectedComponentsWithStats((region & bright).astype(np.uint8), connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= 3).sum())


def measure(crop: SyntheticSlide) -> CellStats:
    """Morphology of the centred cell, from the RGB image and the cell mask only."""
    cell = crop.mask > 0
    gray = cv2.cvtColor(crop.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    smooth = cv2.GaussianBlur(crop.image, (0, 0), 1.5).astype(np.float32)
    background = ~cell & (gray > np.percentile(gray[~cell], 80))
    # Optical density against the slide's own background: nuclear stain absorbs green more than red,
    # basophilic cytoplasm red more than green, so their difference splits nucleus from cytoplasm.
    od = -np.log((smooth + 1.0) / (np.median(smooth[background], axis=0) + 1.0))
    inner = cv2.erode(cell.astype(np.uint8), _kernel(5)).astype(bool)
    nucleus = inner & (od[..., 1] - od[..., 0] > 0.06)
    nucleus = _largest_filled(cv2.morphologyEx(nucleus.astype(np.uint8), cv2.MORPH_OPEN, _kernel(3)))
    contours, _ = cv2.findContours(nucleus.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull_area = cv2.contourArea(cv2.convexHull(contours[0]))
    core = cv2.erode(nucleus.astype(np.uint8), _kernel(5)).astype(bool)
    green = crop.image[..., 1].astype(np.float32)
    bg_level = float(np.median(gray[background]))
    nuc_level = float(np.median(gray[core]))
    ring = inner & ~cv2.dilate(nucleus.astype(np.uint8), _kernel(5)).astype(bool)
    vacuoles = 0
    if ring.sum() > 20:
        cyto_level = float(np.median(gray[ring]))
        vacuoles = _spots(ring, gray > cyto_level + 0.5 * (bg_level - cyto_level))
    return CellStats(
        area=float(cell.sum()),
        nc_ratio=float(nucleus.sum() / cell.sum()),
        solidity=float(nucleus.sum() / max(hull_area, 1.0)),
        chromatin_cv=float(green[core].std() / green[core].mean()),
        vacuoles=vacuoles,
        nucleoli=_spots(core, gray > nuc_level + 0.35 * (bg_level - nuc_level)),
    )


@pytest.fixture(scope="module")
def stats() -> dict[str, list[CellStats]]:
    params = SmearParams()
    return {
        kind: [measure(render_cell_crop(np.random.default_rng([11, i]), 257, kind, params)) for i in range(N_PER_CLASS)]
        for kind in ("normal", "L1", "L2", "L3")
    }


def _mean(stats: dict[str, list[CellStats]], kind: str, field: str) -> float:
    return float(np.mean([getattr(s, field) for s in stats[kind]]))


@pytest.mark.unit
def test_cell_size_follows_fab_class(stats):
    area = {k: _mean(stats, k, "area") for k in stats}
    assert area["L2"] > area["L1"] * 1.4  # L2: large blasts
    assert area["L3"] > area["L1"] * 1.2  # L3: medium to large
    assert area["L1"] > area["normal"] * 1.15  # L1: small blasts, still above a mature lymphocyte
    assert min(area, key=area.get) == "normal"


@pytest.mark.unit
def test_nucleus_to_cell_ratio_highest_for_mature_lymphocytes(stats):
    nc = {k: _mean(stats, k, "nc_ratio") for k in stats}
    assert max(nc, key=nc.get) == "normal"  # thin rim of cytoplasm
    assert nc["L1"] > nc["L2"] + 0.08 and nc["L1"] > nc["L3"] + 0.08  # scant cytoplasm vs more cytoplasm


@pytest.mark.unit
def test_l2_nuclei_are_irregular(stats):
    assert _mean(stats, "L2", "solidity") < _mean(stats, "L1", "solidity") - 0.015
    irregular = np.mean([s.solidity < 0.99 for s in stats["L2"]])
    assert irregular > 0.5
    assert np.mean([s.solidity < 0.99 for s in stats["L1"]]) < 0.15


@pytest.mark.unit
def test_mature_chromatin_is_clumped_and_l1_fine(stats):
    assert _mean(stats, "normal", "chromatin_cv") > 2.0 * _mean(stats, "L1", "chromatin_cv")


@pytest.mark.unit
def test_l3_cytoplasm_has_vacuoles(stats):
    assert np.mean([s.vacuoles >= 2 for s in stats["L3"]]) > 0.8
    for kind in ("normal", "L1", "L2"):
        assert _mean(stats, kind, "vacuoles") < 0.5, kind


@pytest.mark.unit
def test_blasts_with_nucleoli(stats):
    normal = _mean(stats, "normal", "nucleoli")  # clumped chromatin leaves a few pale gaps, not nucleoli
    assert normal < 0.5
    assert _mean(stats, "L2", "nucleoli") > max(1.5, 4 * normal)  # prominent nucleoli
    assert _mean(stats, "L3", "nucleoli") > max(2.0, 4 * normal)  # 2-3 nucleoli
