"""The README picture: one slide, its white-cell mask and its isolated cells side by side, plus the cell crops.

Drawn with matplotlib's Agg backend (no display needed). Images are HxWx3 uint8 RGB, masks HxW uint8 0/255.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def _save(fig, path: str, title: str, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> str:
    """Title, lay out, write ``path`` (folders created) and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=rect)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    return _save(fig, path, title)


# colours of detection_figure, RGB
FOUND, MISSED, PAIRED, EXTRA, OUTSIDE = (40, 170, 60), (220, 30, 30), (30, 90, 230), (255, 140, 0), (220, 0, 220)


def detection_figure(path: str, panels: Sequence[tuple], title: str = "", dpi: int = 110) -> str:
    """Write a PNG of slides with their boxes and detections marked: what was missed and what was false.

    Boxes found are drawn green, missed red; detections paired with a box blue, extra ones inside an
    already found box orange, those in no box magenta (filled discs, so they show on any background).

    Args:
        path: output PNG path (folders are created).
        panels: ``(image_rgb, match, boxes, centroids)`` per slide: the slide (HxWx3 uint8 RGB), its
            ``detection.SlideMatch``, its ``detection.Box`` list and its ``(x, y)`` detections (the
            indices of ``match`` refer to these two lists).
        title: figure title.
        dpi: output resolution.

    Returns:
        ``path``.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(panels)) or 1
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, 5.8 * rows + 0.6), dpi=dpi, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (image, match, boxes, centroids) in zip(axes.ravel(), panels, strict=False):
        picture = image.copy()
        thick = max(2, round(max(picture.shape[:2]) / 300))
        for indices, colour in ((match.found, FOUND), (match.missed, MISSED)):
            for i in indices:
                b = boxes[i]
                corner0 = (int(round(b.xmin)), int(round(b.ymin)))
                corner1 = (int(round(b.xmax)), int(round(b.ymax)))
                cv2.rectangle(picture, corner0, corner1, colour, thick)
        for indices, colour in ((match.paired, PAIRED), (match.duplicates, EXTRA), (match.outside, OUTSIDE)):
            for i in indices:
                x, y = centroids[i]
                cv2.circle(picture, (int(round(x)), int(round(y))), 2 * thick + 2, colour, -1)
        axis.imshow(picture)
        axis.set_title(
            f"{match.slide_id}: {len(match.missed)} missed, {len(match.duplicates)} extra in a cell, "
            f"{len(match.outside)} outside every box",
            fontsize=9,
        )
    fig.text(
        0.5,
        0.005,
        "boxes: green found, red missed; detections: blue paired, orange extra in a found box, magenta in no box",
        ha="center",
        fontsize=9,
    )
    return _save(fig, path, title, rect=(0, 0.03, 1, 1))


def stain_figure(
    path: str, slides: Sequence[tuple[str, np.ndarray]], methods: Sequence[str], title: str = "", dpi: int = 100
) -> str:
    """Write a PNG of colour normalisation before and after: one row per slide, the original then each method.

    Args:
        path: output PNG path (folders are created).
        slides: ``(label, image)`` per row, HxWx3 uint8 RGB (any size; shown as is).
        methods: names of ``transforms.stain.STAIN_NORMALIZATIONS`` for the columns after the original.
        title: figure title.
        dpi: output resolution.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from allmtl_spark.transforms.stain import normalize_colour

    columns = 1 + len(methods)
    fig, axes = plt.subplots(
        len(slides), columns, figsize=(3.6 * columns, 2.9 * len(slides) + 0.5), dpi=dpi, squeeze=False
    )
    for row, (label, image) in enumerate(slides):
        for column, method in enumerate(("original", *methods)):
            axis = axes[row, column]
            axis.imshow(image if method == "original" else normalize_colour(image, method))
            axis.set_title(f"{label}: {method}" if column == 0 else method, fontsize=9)
            axis.axis("off")
    return _save(fig, path, title)
