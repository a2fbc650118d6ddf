"""What the stage-3 classifier sees of a slide (pure numpy/OpenCV).

``isolated``: the segmented slide (white cells on black) letterboxed into a square, the paper's
literal reading. ``montage``: the slide's largest isolated white cells tiled in a grid, so each
cell keeps enough pixels for its morphology at the backbones' input sizes (on a 2592x1944
ALL-IDB1 slide resized whole to 299 px a white cell is about ten pixels wide).
"""

from __future__ import annotations

import cv2
import numpy as np


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio into a black ``size`` x ``size`` square.

    Args:
        image: HxWx3 uint8 RGB.
        size: output side in pixels.

    Returns:
        size x size x 3 uint8 RGB, the image centred.
    """
    height, width = image.shape[:2]
    factor = size / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def cell_extent(crop: np.ndarray) -> int:
    """Side of the smallest square, centred on the crop centre, holding every non-black pixel."""
    ys, xs = np.nonzero(crop.max(axis=2) if crop.ndim == 3 else crop)
    if len(xs) == 0:
        return 1
    cy, cx = (crop.shape[0] - 1) / 2.0, (crop.shape[1] - 1) / 2.0
    half = max(np.abs(xs - cx).max(), np.abs(ys - cy).max())
    return int(np.ceil(2 * half + 1))


def centre_square(crop: np.ndarray, side: int) -> np.ndarray:
    """The centred ``side`` x ``side`` part of a crop (padded with black if the crop is smaller)."""
    height, width = crop.shape[:2]
    pad = max(0, (side - min(height, width) + 1) // 2)
    if pad:
        crop = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        height, width = crop.shape[:2]
    top, left = (height - side) // 2, (width - side) // 2
    return crop[top : top + side, left : left + side]


def zoom_cells(crops: list[np.ndarray], margin: float = 1.1) -> list[np.ndarray]:
    """Centre-crop isolated cell crops to a common side: the largest cell's extent times ``margin``.

    One side for all crops of a slide keeps the cells' relative sizes (blasts are larger than
    mature lymphocytes) while the largest fills its tile, whatever the microscope's magnification.
    """
    if not crops:
        return []
    side = max(2, int(max(cell_extent(c) for c in crops) * margin))
    return [centre_square(c, side) for c in crops]


def cell_tiles(crops: list[np.ndarray], side: int | None) -> list[np.ndarray]:
    """The cells' tiles before resizing: a fixed ``side`` (pixels of the crops) or, None, :func:`zoom_cells`.

    A fixed side shows every cell at one physical scale when the crops share one pixel size (the
    segmenter's working resolution): a 15 um blast then fills twice the width of a 7.5 um lymphocyte
    on every slide. :func:`zoom_cells` makes each slide's largest cell fill its tile, which keeps sizes
    only relative to the other cells of the same slide.
    """
    if side is None:
        return zoom_cells(crops)
    if side < 2:
        raise ValueError(f"a cell tile needs a side of at least 2 pixels, got {side}")
    return [centre_square(c, side) for c in crops]


def montage(crops: list[np.ndarray], grid: int, size: int) -> np.ndarray:
    """Tile up to ``grid * grid`` cell crops (row-major, in the given order) into one square image.

    Args:
        crops: square HxWx3 uint8 RGB crops (cells centred on black); extra crops are ignored,
            missing ones leave black tiles. Cut them to their tiles first (``cell_tiles``).
        grid: tiles per side.
        size: output side in pixels.

    Returns:
        size x size x 3 uint8 RGB.
    """
    out = np.zeros((size, size, 3), np.uint8)
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    for index, crop in enumerate(crops[: grid * grid]):
        row, col = divmod(index, grid)
        y0, y1, x0, x1 = edges[row], edges[row + 1], edges[col], edges[col + 1]
        out[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def decode_png(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> HxWx3 uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("image bytes cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def cell_view(crop: np.ndarray, size: int) -> np.ndarray:
    """A single-cell crop resized to the classifier input (stage 2)."""
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def centre_on_black(tile: np.ndarray, size: int) -> np.ndarray:
    """Place an HxWx3 tile (no larger than ``size``) in the centre of a black ``size`` square."""
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - tile.shape[0]) // 2, (size - tile.shape[1]) // 2
    out[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return out
