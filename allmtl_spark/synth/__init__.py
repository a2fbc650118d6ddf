"""Procedural blood smears that stand in for ALL-IDB (distributed on request only).

``render_slide`` / ``render_cell_crop`` draw one image in memory at a physical scale (micrometres
per pixel drawn per slide); ``write_dataset`` writes the ALL-IDB1 / ALL-IDB2 folder layouts, a
manifest and ground-truth boxes, with the crops cut out of the slides. Pure numpy / OpenCV.
"""

from allmtl_spark.synth.dataset import SynthSummary, write_dataset
from allmtl_spark.synth.smear import (
    CellRecord,
    Patient,
    SmearParams,
    SyntheticSlide,
    draw_patient,
    render_cell_crop,
    render_slide,
)

__all__ = [
    "CellRecord",
    "Patient",
    "SmearParams",
    "SynthSummary",
    "SyntheticSlide",
    "draw_patient",
    "render_cell_crop",
    "render_slide",
    "write_dataset",
]
