"""Training examples: the pure functions that turn stored images into classifier inputs.

Stage 2 sees single cells (ALL-IDB2-like crops), isolated on black like the cells stage 3 sees.
Stage 3 sees a slide through ``views``: a montage of its isolated white cells or the whole
isolated slide. Augmented copies are made here, after the split, for the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.training.augment import AugmentParams, augment_image, copy_rng
from allmtl_spark.training.views import cell_tiles, cell_view, centre_on_black, decode_png, letterbox, montage
from allmtl_spark.transforms.isolate import isolate_cells
from allmtl_spark.transforms.roi import adaptive_roi_mask

TASK_CLASSES = {
    "cell_binary": ("normal", "blast"),
    "cell_fab4": ("normal", "L1", "L2", "L3"),
    "binary": ("normal", "ALL"),
    "fab4": ("normal", "L1", "L2", "L3"),
}


@dataclass(frozen=True)
class ViewSpec:
    """How to build one classifier input."""

    kind: str  # cell | montage | isolated
    size: int
    grid: int = 2
    isolate: bool = True  # cells: keep only the central white cell, on black
    # cell / montage: side of a cell's tile in the crops' pixels (train.cell_tile_um at the crops' pixel
    # size), so every cell keeps its physical size; None: each slide's largest cell fills its tile.
    tile_px: int | None = None


def central_cell_mask(image: np.ndarray) -> np.ndarray:
    """Mask (HxW uint8 0/255) of the white-cell region nearest the image centre.

    ALL-IDB2 crops hold one centred white cell among red cells; the adaptive stain ROI finds
    white-cell regions, and the one nearest the centre is the crop's cell.
    """
    roi = adaptive_roi_mask(image)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats((roi > 0).astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.full(image.shape[:2], 255, np.uint8)  # nothing found: keep the whole crop
    centre = np.array(image.shape[1::-1], float) / 2.0
    distances = np.linalg.norm(centroids[1:] - centre, axis=1) - np.sqrt(stats[1:, cv2.CC_STAT_AREA])
    keep = 1 + int(np.argmin(distances))
    return np.where(labels == keep, 255, 0).astype(np.uint8)


def build_view(
    sources: list[bytes], spec: ViewSpec, rng: np.random.Generator | None, params: AugmentParams | None
) -> np.ndarray:
    """Decode ``sources`` (PNG/JPEG/TIFF bytes) and build one classifier input; see :func:`view_from_images`."""
    return view_from_images([decode_png(data) for data in sources], spec, rng, params)


def view_from_images(
    images: list[np.ndarray], spec: ViewSpec, rng: np.random.Generator | None, params: AugmentParams | None
) -> np.ndarray:
    """Build one classifier input, augmented when ``rng`` is given.

    Args:
        images: HxWx3 uint8 RGB. cell: [crop]; montage: cell crops, largest cell first; isolated: [slide].
        spec: the view.
        rng: None for the original (validation, test, scoring, copy 0); a copy's generator otherwise.
        params: augmentation ranges (needed with ``rng``).

    Returns:
        spec.size x spec.size x 3 uint8 RGB.
    """
    if spec.kind == "cell":
        crop = images[0]
        if spec.isolate:
            crop = isolate_cells(crop, central_cell_mask(crop))
        crop = cell_tiles([crop], spec.tile_px)[0]
        # The cell gets the pixel size of one montage tile, centred on black: stage 2 then sees
        # cells at the scale stage 3 sees them (features learnt at another scale transfer poorly).
        out = centre_on_black(cell_view(crop, spec.size // spec.grid), spec.size)
        return augment_image(out, rng, params) if rng is not None else out
    if spec.kind == "montage":
        tiles = cell_tiles(images[: spec.grid * spec.grid], spec.tile_px)
        if rng is not None:
            tiles = [augment_image(t, rng, params) for t in tiles]
            tiles = [tiles[i] for i in rng.permutation(len(tiles))]
        return montage(tiles, spec.grid, spec.size)
    if spec.kind == "isolated":
        out = letterbox(images[0], spec.size)
        return augment_image(out, rng, params) if rng is not None else out
    raise ValueError(f"unknown view kind {spec.kind!r}; expected cell, montage or isolated")


def example_image(sources: list[bytes], spec: ViewSpec, key: str, copy: int, seed: int, params: AugmentParams) -> bytes:
    """Raw uint8 bytes (size*size*3) of copy ``copy`` of one example; copy 0 is the original."""
    rng = copy_rng(seed, key, copy) if copy > 0 else None
    return build_view(sources, spec, rng, params).tobytes()
