"""Procedural blood smears that stand in for ALL-IDB (distributed on request only).

``render_slide`` / ``render_cell_crop`` draw one image in memory; ``write_dataset`` writes the
ALL-IDB1 / ALL-IDB2 folder layouts and a manifest. Pure numpy / OpenCV.
"""

from allmtl_spark.synth.dataset import SynthSummary, write_dataset
from allmtl_spark.synth.smear import CellRecord, SmearParams, SyntheticSlide, render_cell_crop, render_slide

__all__ = [
    "CellRecord",
    "SmearParams",
    "SynthSummary",
    "SyntheticSlide",
    "render_cell_crop",
    "render_slide",
    "write_dataset",
]
