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
    out[top:top + new_h, left:left + new_w] = resized
    return out


def montage(crops: list[np.ndarray], grid: int, size: int) -> np.ndarray:
    """Tile up to ``grid * grid`` cell crops (row-major, in the given order) into one square image.

    Args:
        crops: square HxWx3 uint8 RGB crops (cells centred on black); extra crops are ignored,
            missing ones leave black tiles.
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
