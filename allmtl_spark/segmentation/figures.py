"""The README picture: one slide, its white-cell mask and its isolated cells side by side, plus the cell crops.

Drawn with matplotlib's Agg backend (no display needed). Images are HxWx3 uint8 RGB, masks HxW uint8 0/255.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def segmentation_figure(
    path: str,
    image_rgb: np.ndarray,
    mask: np.ndarray,
    isolated: np.ndarray,
    crops: Sequence[np.ndarray] = (),
    title: str = "",
    max_crops: int = 8,
    dpi: int = 110,
) -> str:
    """Write a PNG: slide | mask | isolated cells on the top row, up to ``max_crops`` crops below.

    Args:
        path: output PNG path (folders are created).
        image_rgb: the slide, HxWx3 uint8 RGB (any size; shown as is).
        mask: the white-cell mask, HxW uint8 0/255 (resized to the slide's aspect if needed).
        isolated: the isolated slide, HxWx3 uint8 RGB.
        crops: per-cell crops, each SxSx3 uint8 RGB.
        title: figure title.
        max_crops: how many crops to show.
        dpi: output resolution.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(crops)[:max_crops]
    fig = plt.figure(figsize=(15, 6.4 if shown else 4.2), dpi=dpi)
    outer = fig.add_gridspec(2 if shown else 1, 1, height_ratios=[3, 1] if shown else None)
    top = outer[0].subgridspec(1, 3)
    panels = (
        (image_rgb, "slide", None),
        (mask, "white-cell mask (post-processed)", "gray"),
        (isolated, "isolated cells (blue channel, black backdrop)", None),
    )
    for i, (picture, label, cmap) in enumerate(panels):
        axis = fig.add_subplot(top[0, i])
        axis.imshow(picture, cmap=cmap, vmin=0, vmax=255)
        axis.set_title(label, fontsize=10)
        axis.axis("off")
    if shown:
        bottom = outer[1].subgridspec(1, len(shown))
        for i, crop in enumerate(shown):
            axis = fig.add_subplot(bottom[0, i])
            axis.imshow(crop)
            axis.set_title(f"cell {i}", fontsize=8)
            axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
