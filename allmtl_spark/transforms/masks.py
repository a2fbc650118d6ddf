"""Mask post-processing, per-cell records and crops, and detection/overlap scores.

Masks are HxW uint8 with values 0/255 (any non-zero value is read as foreground). Label images are
HxW int32, 0 for background and 1..n for cells. Coordinates are (x, y) = (column, row) in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from allmtl_spark.transforms.color import check_mask, to_mask


@dataclass(frozen=True)
class CellRecord:
    """One connected cell region.

    Attributes:
        label: its value in the label image (1..n).
        bbox: ``(x, y, w, h)`` in pixels, x/y of the top-left corner.
        centroid: ``(x, y)`` mean pixel position, float.
        area: number of pixels.
    """

    label: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of detected against true cell positions.

    ``recall`` is 1.0 when there is nothing to find and ``precision`` is 1.0 when nothing was
    reported (no miss and no false alarm, respectively), so an empty healthy slide scores perfectly.
    """

    tp: int
    fp: int
    fn: int
    recall: float
    precision: float


def _check_2d(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ValueError(f"{name} must be an HxW array, got shape {getattr(mask, 'shape', None)}")
    return mask != 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by foreground (a pale nucleus centre, a vacuole).

    Args:
        mask: HxW mask, non-zero = foreground.

    Returns:
        HxW uint8 mask, 0/255.
    """
    return to_mask(ndimage.binary_fill_holes(_check_2d(mask)))


def label_components(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Label the connected foreground regions of a mask in raster order.

    Args:
        mask: HxW mask, non-zero = foreground.
        connectivity: 4 or 8.

    Returns:
        HxW int32 label image, 0 = background, 1..n = components.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    _, labels = cv2.connectedComponents(_check_2d(mask).astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    return labels


def remove_small_objects(mask: np.ndarray, min_area: int, connectivity: int = 8) -> np.ndarray:
    """Drop connected components with fewer than ``min_area`` pixels (platelets, stain specks, noise).

    Args:
        mask: HxW mask, non-zero = foreground.
        min_area: smallest area kept, in pixels (components with area >= min_area stay).
        connectivity: 4 or 8.

    Returns:
        HxW uint8 mask, 0/255.
    """
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    labels = label_components(mask, connectivity)
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    return to_mask(keep[labels])


def _flood(relief: np.ndarray, markers: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Marker-controlled watershed by immersion on one connected region.

    The water rises one relief level at a time; at each level every basin grows (8-connected, one
    pixel per step) into the region's pixels at or below that level. A pixel reached by two basins in
    the same step becomes the dividing line (0), as OpenCV's watershed marks it -1.
    """
    labels = markers.copy()
    unset = np.iinfo(np.int32).max
    for level in np.unique(relief[region]):
        allowed = region & (relief <= level)
        while True:
            highest = ndimage.grey_dilation(labels, size=(3, 3))
            lowest = ndimage.grey_erosion(np.where(labels > 0, labels, unset), size=(3, 3))
            new = allowed & (labels == 0) & (highest > 0)
            if not new.any():
                break
            labels[new] = np.where(lowest[new] == highest[new], highest[new], -1)
    labels = np.maximum(labels, 0)
    # Two pixels labelled in the same step can still touch diagonally: cut them too, so that the
    # cells stay apart under 8-connectivity and `labels > 0` re-labels into the same cells.
    highest = ndimage.grey_dilation(labels, size=(3, 3))
    lowest = ndimage.grey_erosion(np.where(labels > 0, labels, unset), size=(3, 3))
    labels[(labels > 0) & (lowest != highest)] = 0
    return labels


def split_touching(mask: np.ndarray, min_distance: int = 5, min_radius: float = 2.0) -> np.ndarray:
    """Split touching round cells: distance transform, one marker per local maximum, watershed.

    Each cell's centre is a maximum of the distance to the background; flooding the inverted
    distance from those markers puts the border along the neck between two overlapping cells.
    Components with a single marker are left whole, so the cost is only paid on clumps.

    Args:
        mask: HxW mask, non-zero = foreground.
        min_distance: maxima closer than this (pixels) merge into one marker; about half the smallest
            cell radius: larger values under-split, smaller ones over-split irregular cells.
        min_radius: maxima whose distance value (the inscribed radius, pixels) is below this are
            ignored, so thin protrusions get no marker of their own.

    Returns:
        HxW int32 label image: 0 = background and the thin dividing lines between split cells,
        1..n = cells. Split cells do not touch, even diagonally.
    """
    if min_distance < 1 or min_radius < 0:
        raise ValueError(f"need min_distance >= 1 and min_radius >= 0, got {min_distance}, {min_radius}")
    components = label_components(mask)
    fg = components > 0
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 5)
    peaks = (dist == ndimage.maximum_filter(dist, size=2 * min_distance + 1)) & (dist >= min_radius) & fg
    # The maxima of one cell can form a plateau or a short ridge: merge those within min_distance.
    peaks = cv2.dilate(peaks.astype(np.uint8), np.ones((min_distance, min_distance), np.uint8)).astype(bool) & fg
    markers, _ = ndimage.label(peaks, structure=np.ones((3, 3)))
    relief = np.rint(dist.max() - dist).astype(np.int32)  # 1-px levels: enough to find the neck
    out = np.zeros(fg.shape, np.int32)
    next_label = 1
    for index, window in enumerate(ndimage.find_objects(components), start=1):
        region = components[window] == index
        cells = _split_component(relief[window], markers[window], region)
        out[window][region] = np.where(cells[region] > 0, cells[region] + next_label - 1, 0)
        next_label += int(cells.max())
    return out


def _split_component(relief: np.ndarray, markers: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Labels 1..k for one connected component with k markers (k <= 1: the whole component is cell 1)."""
    values = np.where(region, markers, 0)
    ids = np.union1d(0, values)  # sorted, starts with 0
    if len(ids) <= 2:
        return region.astype(np.int32)
    local = np.searchsorted(ids, values).astype(np.int32)  # markers renumbered 1..k, 0 = none
    return _flood(relief, local, region)


def cell_records(labels: np.ndarray) -> list[CellRecord]:
    """Describe each labelled cell.

    Args:
        labels: HxW integer label image, 0 = background.

    Returns:
        One :class:`CellRecord` per non-empty label, sorted by label.
    """
    if not isinstance(labels, np.ndarray) or labels.ndim != 2:
        raise ValueError(f"labels must be an HxW integer array, got shape {getattr(labels, 'shape', None)}")
    records = []
    for index, window in enumerate(ndimage.find_objects(labels.astype(np.int32)), start=1):
        if window is None:
            continue
        ys, xs = np.nonzero(labels[window] == index)
        rows, cols = window
        bbox = (cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        centroid = (float(xs.mean() + cols.start), float(ys.mean() + rows.start))
        records.append(CellRecord(label=index, bbox=bbox, centroid=centroid, area=int(xs.size)))
    return records


def crop_cell(
    image: np.ndarray, centroid: tuple[float, float], size: int = 257, fill: int | Sequence[int] = 0
) -> np.ndarray:
    """Cut a size x size window centred on a cell, padding with ``fill`` where it leaves the image.

    The centroid, rounded half-up, lands on pixel ``(size // 2, size // 2)`` of the crop (the exact
    centre for odd sizes such as ALL-IDB2's 257).

    Args:
        image: HxW or HxWxC array (HxWx3 uint8 RGB in the pipeline).
        centroid: ``(x, y)`` in image pixels.
        size: crop side, pixels.
        fill: padding value, a scalar or one value per channel.

    Returns:
        size x size (x C) array of the image's dtype.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    out = np.empty((size, size) + image.shape[2:], image.dtype)
    out[...] = fill
    x0 = math.floor(centroid[0] + 0.5) - size // 2
    y0 = math.floor(centroid[1] + 0.5) - size // 2
    src_x, src_y = slice(max(x0, 0), min(x0 + size, image.shape[1])), slice(max(y0, 0), min(y0 + size, image.shape[0]))
    if src_x.start < src_x.stop and src_y.start < src_y.stop:
        out[src_y.start - y0 : src_y.stop - y0, src_x.start - x0 : src_x.stop - x0] = image[src_y, src_x]
    return out


def extract_cells(
    image: np.ndarray,
    mask: np.ndarray,
    crop_size: int = 257,
    min_area: int = 50,
    max_area: int | None = None,
    close_holes: bool = True,
    split: bool = True,
    min_distance: int = 5,
    min_radius: float = 2.0,
    isolate: bool = False,
    fill: int | Sequence[int] = 0,
) -> tuple[list[CellRecord], np.ndarray]:
    """Find the cells of a mask and cut one centred crop per cell.

    Steps: fill holes, drop specks below ``min_area``, optionally split touching cells
    (:func:`split_touching`), then describe and crop each cell.

    Args:
        image: HxWx3 uint8 RGB (any HxW or HxWxC array works).
        mask: HxW mask of cells, non-zero = foreground.
        crop_size: side of each crop, pixels.
        min_area: cells (after splitting) smaller than this many pixels are dropped.
        max_area: cells larger than this are dropped (clumps, smudges); None keeps all.
        close_holes: fill enclosed holes first.
        split: separate touching cells by watershed.
        min_distance: see :func:`split_touching`.
        min_radius: see :func:`split_touching`.
        isolate: black out (``fill``) everything in a crop that is not the cell itself.
        fill: padding value at image borders (and outside the cell with ``isolate``).

    Returns:
        ``(records, crops)``: records sorted by label; crops ``(n, crop_size, crop_size, C)`` of the
        image's dtype, row i belonging to ``records[i]``.
    """
    fg = check_mask(mask, image.shape)
    cleaned = remove_small_objects(fill_holes(fg) if close_holes else to_mask(fg), min_area)
    labels = split_touching(cleaned, min_distance, min_radius) if split else label_components(cleaned)
    records = [r for r in cell_records(labels) if r.area >= min_area and (max_area is None or r.area <= max_area)]
    crops = np.empty((len(records), crop_size, crop_size) + image.shape[2:], image.dtype)
    for i, record in enumerate(records):
        crops[i] = crop_cell(image, record.centroid, crop_size, fill)
        if isolate:
            crops[i][crop_cell(labels, record.centroid, crop_size, 0) != record.label] = fill
    return records, crops


def match_detections(
    found_xy: Sequence[Sequence[float]] | np.ndarray, truth_xy: Sequence[Sequence[float]] | np.ndarray, radius: float
) -> MatchResult:
    """Match detected to true cell centres one-to-one (Hungarian) and count hits.

    The assignment first maximises the number of pairs at distance <= ``radius``, then minimises
    their total distance; a pair farther apart than ``radius`` never counts as a hit.

    Args:
        found_xy: (n, 2) detected centres, (x, y) pixels.
        truth_xy: (m, 2) annotated centres (an ALL-IDB1 ``.xyc`` file), (x, y) pixels.
        radius: largest centre distance, pixels, that still counts as the same cell.

    Returns:
        :class:`MatchResult` with tp, fp = n - tp, fn = m - tp, recall, precision.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    found = np.asarray(found_xy, np.float64).reshape(-1, 2)
    truth = np.asarray(truth_xy, np.float64).reshape(-1, 2)
    tp = 0
    if len(found) and len(truth):
        dist = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=2)
        # A penalty above any sum of valid distances makes every extra valid pair worth more.
        penalty = radius * (min(dist.shape) + 1) + 1.0
        rows, cols = linear_sum_assignment(np.where(dist <= radius, dist, penalty))
        tp = int(np.count_nonzero(dist[rows, cols] <= radius))
    fp, fn = len(found) - tp, len(truth) - tp
    recall = tp / (tp + fn) if tp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    return MatchResult(tp=tp, fp=fp, fn=fn, recall=recall, precision=precision)


def _overlap(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[int, int, int]:
    a, b = _check_2d(mask_a, "mask_a"), _check_2d(mask_b, "mask_b")
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice overlap 2|A and B| / (|A| + |B|) of two HxW masks (non-zero = foreground).

    Two empty masks agree perfectly: dice = 1.0 (a healthy slide with no blast, found as none).
    """
    inter, area_a, area_b = _overlap(mask_a, mask_b)
    return 1.0 if area_a + area_b == 0 else 2.0 * inter / (area_a + area_b)


def iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Intersection over union |A and B| / |A or B| of two HxW masks; two empty masks give 1.0."""
    inter, area_a, area_b = _overlap(mask_a, mask_b)
    union = area_a + area_b - inter
    return 1.0 if union == 0 else inter / union
