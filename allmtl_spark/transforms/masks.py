"""Mask post-processing, per-cell records and crops, and detection/overlap scores.

Masks are HxW uint8 with values 0/255 (any non-zero value is read as foreground). Label images are
HxW int32, 0 for background and 1..n for cells. Coordinates are (x, y) = (column, row) in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    ``found_matched[i]`` says whether detection ``i`` is one of the ``tp`` pairs (not compared by ``==``).
    """

    tp: int
    fp: int
    fn: int
    recall: float
    precision: float
    found_matched: tuple[bool, ...] = field(default=(), compare=False)


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
    # A flood of the background from a one-pixel frame (4-connected, as scipy's binary_fill_holes):
    # whatever background it cannot reach is a hole. OpenCV's flood fill is several times faster
    # than the morphological reconstruction on a whole slide.
    framed = cv2.copyMakeBorder(_check_2d(mask).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(framed, None, (0, 0), 2, flags=4)
    return to_mask(framed[1:-1, 1:-1] != 2)


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


def _seed_markers(
    fg: np.ndarray, dist: np.ndarray, min_distance: int, min_radius: float, seed_fraction: float
) -> np.ndarray:
    """Watershed markers: one disc per distance-transform peak, its radius ``seed_fraction`` of the peak's depth.

    Peaks closer than ``min_distance`` (a plateau or short ridge of one cell) merge into one marker.
    A seed disc scaled to its cell's inscribed radius puts the equal-distance line between two seeds
    near the neck of two overlapping cells of unequal size (a fixed-size seed would put it midway
    between the centres, inside the smaller cell). A component without a peak gets its deepest pixel.
    """
    window = np.ones((2 * min_distance + 1, 2 * min_distance + 1), np.uint8)
    peaks = (dist == cv2.dilate(dist, window)) & (dist >= min_radius) & fg  # dilate = maximum filter
    grouped = cv2.dilate(peaks.astype(np.uint8), np.ones((min_distance, min_distance), np.uint8)).astype(bool) & fg
    groups, n = ndimage.label(grouped, structure=np.ones((3, 3)))
    markers = np.zeros(fg.shape, np.int32)
    ys, xs = np.nonzero(peaks)
    owner = groups[ys, xs]
    # Centres from the undilated peaks (an even dilation kernel would shift them half a pixel).
    count = np.maximum(np.bincount(owner, minlength=n + 1), 1)
    cx, cy = np.bincount(owner, xs, n + 1) / count, np.bincount(owner, ys, n + 1) / count
    depth = np.zeros(n + 1)
    np.maximum.at(depth, owner, dist[ys, xs])
    for label in range(1, n + 1):
        radius = max(1, int(round(seed_fraction * depth[label])))
        cv2.circle(markers, (int(round(cx[label])), int(round(cy[label]))), radius, label, -1)
    markers[~fg] = 0
    components = label_components(fg)
    seeded = np.zeros(int(components.max()) + 1, bool)
    seeded[components[markers > 0]] = True
    for component in np.flatnonzero(~seeded[1:]) + 1:  # thin or tiny components: seed their deepest pixel
        rows, cols = ndimage.find_objects(components == component)[0]
        local = np.where(components[rows, cols] == component, dist[rows, cols], -1.0)
        y, x = np.unravel_index(np.argmax(local), local.shape)
        n += 1
        markers[rows.start + y, cols.start + x] = n
    return markers


def split_touching(
    mask: np.ndarray, min_distance: int = 5, min_radius: float = 2.0, seed_fraction: float = 0.7
) -> np.ndarray:
    """Split touching round cells: distance transform, one marker per local maximum, OpenCV watershed.

    Each cell's centre is a maximum of the distance to the background and becomes a seed disc
    (:func:`_seed_markers`); ``cv2.watershed`` then grows the seeds through the mask only (the
    background is a 255 wall in its relief, so it is flooded last) and marks the pixels where two
    seeds meet. Inside the mask the relief is flat, so the flood is a breadth-first growth and the
    line falls where the fronts of two seeds meet; seeds scaled to each cell's size put that line
    at the neck. A component with one seed stays whole, every pixel kept.

    Args:
        mask: HxW mask, non-zero = foreground.
        min_distance: maxima closer than this (pixels) merge into one marker; about half the smallest
            cell radius: larger values under-split, smaller ones over-split irregular cells.
        min_radius: maxima whose distance value (the inscribed radius, pixels) is below this are
            ignored, so thin protrusions get no marker of their own.
        seed_fraction: seed disc radius as a fraction of the cell's inscribed radius, in (0, 1].

    Returns:
        HxW int32 label image: 0 = background and the thin dividing lines between split cells,
        1..n = cells numbered in raster order of their first pixel. Split cells do not touch, even
        diagonally.
    """
    if min_distance < 1 or min_radius < 0:
        raise ValueError(f"need min_distance >= 1 and min_radius >= 0, got {min_distance}, {min_radius}")
    if not 0.0 < seed_fraction <= 1.0:
        raise ValueError(f"seed_fraction must be in (0, 1], got {seed_fraction}")
    fg = _check_2d(mask)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 5)
    markers = _seed_markers(fg, dist, min_distance, min_radius, seed_fraction)
    relief = np.where(fg, 0, 255).astype(np.uint8)
    flooded = _watershed(relief, markers)
    labels = np.where(fg & (flooded > 0), flooded, 0).astype(np.int32)
    # Pixels of two cells can still touch diagonally across the line: cut them, so the cells stay
    # apart under 8-connectivity and `labels > 0` re-labels into the same cells.
    unset = np.iinfo(np.int32).max
    highest = ndimage.grey_dilation(labels, size=(3, 3))
    lowest = ndimage.grey_erosion(np.where(labels > 0, labels, unset), size=(3, 3))
    labels[(labels > 0) & (lowest != highest)] = 0
    return _renumber(labels)


def _watershed(relief: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """``cv2.watershed`` on a grey relief, with a 1-pixel frame (OpenCV marks the image border as a line)."""
    framed = cv2.copyMakeBorder(np.ascontiguousarray(relief), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
    labels = cv2.copyMakeBorder(np.ascontiguousarray(markers), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.watershed(cv2.cvtColor(framed, cv2.COLOR_GRAY2BGR), labels)
    return labels[1:-1, 1:-1]


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel 1..n in raster order of each label's first pixel (0 stays 0)."""
    firsts = []
    for label, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            rows, cols = found
            top = labels[rows.start, cols] == label  # the label's first row holds its first pixel
            firsts.append((rows.start, cols.start + int(np.argmax(top)), label))
    lookup = np.zeros(max((f[2] for f in firsts), default=0) + 1, np.int32)
    for new, (_, _, label) in enumerate(sorted(firsts), start=1):
        lookup[label] = new
    return lookup[labels]


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
    matched = np.zeros(len(found), bool)
    if len(found) and len(truth):
        dist = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=2)
        # A penalty above any sum of valid distances makes every extra valid pair worth more.
        penalty = radius * (min(dist.shape) + 1) + 1.0
        rows, cols = linear_sum_assignment(np.where(dist <= radius, dist, penalty))
        hits = dist[rows, cols] <= radius
        tp = int(np.count_nonzero(hits))
        matched[rows[hits]] = True
    fp, fn = len(found) - tp, len(truth) - tp
    recall = tp / (tp + fn) if tp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    return MatchResult(
        tp=tp, fp=fp, fn=fn, recall=recall, precision=precision, found_matched=tuple(bool(m) for m in matched)
    )


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
