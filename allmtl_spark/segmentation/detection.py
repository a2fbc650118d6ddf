"""Detections against ground-truth boxes: recall, precision and one-detection-per-cell precision (pure numpy).

A box is *found* when a detection's centroid lies in it. Each detection finds at most one box and each
box is found at most once: detections and the boxes holding their centroids are paired one to one
(the assignment that finds the most boxes, then the one whose centroids lie nearest the box centres).
What is left over:

- a *duplicate*: a detection inside a box that another detection already found (a cell cut in two, or
  a lobed nucleus counted per lobe);
- an *outside* detection: its centroid lies in no box (a red-cell rim, a platelet clump);
- a *miss*: a box no detection found.

``precision`` counts every detection inside a box as right (the share of detections that lie on a
white cell); ``one_per_cell_precision`` counts only the pairs (found boxes / detections), so a second
detection in the same cell is a false one.

Boxes are ``(xmin, ymin, xmax, ymax)`` in 0-based pixels with the max inclusive (``boxes.csv`` as the
synthetic generator writes it; Pascal VOC's 1-based files are shifted by one when read); centroids are
``(x, y)`` in the same pixels. A centroid is in a box when it lies within the box's pixels' extent,
``xmin - 0.5 <= x <= xmax + 0.5``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from allmtl_spark.errors import SourceError


@dataclass(frozen=True)
class SlideMatch:
    """The outcome on one slide: indices into its boxes and detections."""

    slide_id: str
    found: tuple[int, ...]  # boxes found
    missed: tuple[int, ...]  # boxes not found
    paired: tuple[int, ...]  # detections paired with a box (one per found box)
    duplicates: tuple[int, ...]  # detections inside an already found box
    outside: tuple[int, ...]  # detections in no box
    duplicate_box: tuple[int, ...] = ()  # for each duplicate, the box it lies in


def match_slide(slide_id: str, boxes: np.ndarray, centroids: np.ndarray) -> SlideMatch:
    """Pair one slide's detections with its boxes.

    Args:
        slide_id: the slide.
        boxes: ``(m, 4)`` float xmin, ymin, xmax, ymax (0-based, max inclusive).
        centroids: ``(n, 2)`` float x, y.

    Returns:
        A :class:`SlideMatch`.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centroids = np.asarray(centroids, np.float64).reshape(-1, 2)
    m, n = len(boxes), len(centroids)
    if m == 0 or n == 0:
        return SlideMatch(slide_id, (), tuple(range(m)), (), (), tuple(range(n)))
    x, y = centroids[:, 0:1], centroids[:, 1:2]  # (n, 1)
    inside = (
        (x >= boxes[None, :, 0] - 0.5)
        & (x <= boxes[None, :, 2] + 0.5)
        & (y >= boxes[None, :, 1] - 0.5)
        & (y <= boxes[None, :, 3] + 0.5)
    )  # (n, m)
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.linalg.norm(centroids[:, None, :] - centre[None, :, :], axis=2)
    # Any pair inside beats every pair outside: the most boxes found first, then the nearest centroids.
    penalty = distance.max() * (min(n, m) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(inside, distance, penalty))
    hits = inside[rows, cols]
    paired_det, found_box = rows[hits], cols[hits]
    det_done = np.zeros(n, bool)
    det_done[paired_det] = True
    duplicates, duplicate_box, outside = [], [], []
    for d in np.flatnonzero(~det_done):
        holders = np.flatnonzero(inside[d])
        if holders.size:
            duplicates.append(int(d))
            duplicate_box.append(int(holders[np.argmin(distance[d, holders])]))
        else:
            outside.append(int(d))
    found = set(found_box.tolist())
    return SlideMatch(
        slide_id,
        tuple(sorted(found)),
        tuple(i for i in range(m) if i not in found),
        tuple(sorted(paired_det.tolist())),
        tuple(duplicates),
        tuple(outside),
        tuple(duplicate_box),
    )


@dataclass(frozen=True)
class LabelScores:
    """Boxes of one label: how many, found, and the extra detections inside them."""

    boxes: int
    found: int
    duplicates: int

    @property
    def recall(self) -> float:
        return self.found / self.boxes if self.boxes else float("nan")

    @property
    def one_per_cell_precision(self) -> float:
        """Found boxes over the detections inside this label's boxes (a second one in a cell is false)."""
        return self.found / (self.found + self.duplicates) if self.found + self.duplicates else float("nan")


@dataclass(frozen=True)
class DetectionScores:
    """Detection scores over every slide that has boxes.

    Attributes:
        slides: slides scored (those with at least one box or one detection among the box files' slides).
        boxes, found, detections, duplicates, outside: counts.
        per_label: :class:`LabelScores` per box label.
        matches: one :class:`SlideMatch` per slide (for the figure of misses and false detections).
    """

    slides: int
    boxes: int
    found: int
    detections: int
    duplicates: int
    outside: int
    per_label: dict[str, LabelScores] = field(default_factory=dict)
    matches: tuple[SlideMatch, ...] = field(default=(), compare=False)

    @property
    def recall(self) -> float:
        return self.found / self.boxes if self.boxes else float("nan")

    @property
    def precision(self) -> float:
        """Detections inside some box over all detections (1.0 when nothing was detected)."""
        return (self.detections - self.outside) / self.detections if self.detections else 1.0

    @property
    def one_per_cell_precision(self) -> float:
        """Found boxes over all detections: a second detection in one box counts as a false one."""
        return self.found / self.detections if self.detections else 1.0

    def format(self) -> str:
        lines = [
            f"detection vs boxes: {self.slides} slides, {self.boxes} boxes, {self.detections} detections",
            f"  recall {self.recall:.3f} ({self.found}/{self.boxes} boxes found)",
            f"  precision {self.precision:.3f} ({self.detections - self.outside}/{self.detections} detections in a box;"
            f" {self.outside} outside every box)",
            f"  one-per-cell precision {self.one_per_cell_precision:.3f} ({self.found}/{self.detections}; "
            f"{self.duplicates} extra detections in already found boxes)",
            f"  {'label':<14} {'boxes':>6} {'found':>6} {'recall':>7} {'extra':>6} {'one/cell':>9}",
        ]
        for label, s in sorted(self.per_label.items()):
            lines.append(
                f"  {label:<14} {s.boxes:>6} {s.found:>6} {s.recall:>7.3f} {s.duplicates:>6} "
                f"{s.one_per_cell_precision:>9.3f}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Box:
    """One ground-truth box (0-based pixels, max inclusive)."""

    slide_id: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str


def compute_detection_scores(
    boxes: Iterable[Box], detections: dict[str, Sequence[tuple[float, float]]], slides: Iterable[str] | None = None
) -> DetectionScores:
    """Score detections against boxes on every slide.

    Args:
        boxes: the ground truth.
        detections: slide id -> the centroids ``(x, y)`` found on it.
        slides: the slides to score; None: every slide that has a box. A slide listed here without
            boxes counts its detections as outside (a slide with no white cell).

    Returns:
        :class:`DetectionScores`.
    """
    by_slide: dict[str, list[Box]] = {}
    for box in boxes:
        by_slide.setdefault(box.slide_id, []).append(box)
    wanted = sorted(set(slides) if slides is not None else set(by_slide))
    counts: dict[str, list[int]] = {}  # label -> [boxes, found, duplicates]
    matches = []
    for slide_id in wanted:
        slide_boxes = by_slide.get(slide_id, [])
        array = np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in slide_boxes], np.float64).reshape(-1, 4)
        found = match_slide(slide_id, array, np.asarray(detections.get(slide_id, ()), np.float64).reshape(-1, 2))
        matches.append(found)
        for box in slide_boxes:
            counts.setdefault(box.label, [0, 0, 0])[0] += 1
        for i in found.found:
            counts[slide_boxes[i].label][1] += 1
        for i in found.duplicate_box:
            counts[slide_boxes[i].label][2] += 1
    return DetectionScores(
        slides=len(wanted),
        boxes=sum(c[0] for c in counts.values()),
        found=sum(len(m.found) for m in matches),
        detections=sum(len(m.paired) + len(m.duplicates) + len(m.outside) for m in matches),
        duplicates=sum(len(m.duplicates) for m in matches),
        outside=sum(len(m.outside) for m in matches),
        per_label={label: LabelScores(*c) for label, c in counts.items()},
        matches=tuple(matches),
    )


BOX_CSV_COLUMNS = ("slide_id", "xmin", "ymin", "xmax", "ymax", "label")


def read_boxes(path: str) -> list[Box]:
    """Ground-truth boxes from a CSV file (``slide_id,xmin,ymin,xmax,ymax,label``, 0-based pixels, max
    inclusive) or a folder of Pascal VOC XML files (one per image, 1-based pixels; the slide id is the
    XML's ``filename`` stem, else the XML file's stem; the label is each object's ``name``).

    Raises:
        SourceError: the file or folder is missing, or holds no readable boxes; the message names what is wrong.
    """
    import csv
    import os
    import xml.etree.ElementTree as ET

    if os.path.isdir(path):
        boxes = []
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(".xml"))
        if not files:
            raise SourceError(f"box folder {path} holds no Pascal VOC .xml files")
        for name in files:
            try:
                root = ET.parse(os.path.join(path, name)).getroot()
            except ET.ParseError as err:
                raise SourceError(f"{os.path.join(path, name)} is not readable XML: {err}") from None
            filename = root.findtext("filename") or name
            slide_id = os.path.splitext(os.path.basename(filename.strip()))[0]
            for obj in root.iter("object"):
                bnd = obj.find("bndbox")
                try:
                    xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) - 1.0 for k in ("xmin", "ymin", "xmax", "ymax"))
                except (AttributeError, TypeError, ValueError):
                    raise SourceError(f"{os.path.join(path, name)}: an object without a numeric bndbox") from None
                boxes.append(Box(slide_id, xmin, ymin, xmax, ymax, (obj.findtext("name") or "cell").strip()))
        return boxes
    if not os.path.isfile(path):
        raise SourceError(f"boxes {path} not found: give a CSV file or a folder of Pascal VOC .xml files")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in BOX_CSV_COLUMNS[:5] if c not in (reader.fieldnames or ())]
        if missing:
            raise SourceError(
                f"box CSV {path} lacks column(s) {', '.join(missing)}; expected {','.join(BOX_CSV_COLUMNS)}"
            )
        boxes = []
        for line, row in enumerate(reader, start=2):
            try:
                coords = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                raise SourceError(f"box CSV {path} line {line}: coordinates must be numbers, got {row}") from None
            boxes.append(Box(row["slide_id"].strip(), *coords, (row.get("label") or "cell").strip() or "cell"))
    return boxes
