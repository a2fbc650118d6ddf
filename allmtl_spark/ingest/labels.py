"""ALL-IDB file names, .xyc centroid files and manifest labels: pure parsing, no Spark.

ALL-IDB names images ``ImNNN_L.ext`` where L is 1 for ALL and 0 for healthy; an ALL-IDB1 image
``ImNNN_L.jpg`` has ``ImNNN_L.xyc`` beside it with one ``x y`` blast centroid per line. FAB
labels (normal, L1, L2, L3) exist only in manifests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAB_LABELS = ("normal", "L1", "L2", "L3")
_ALLIDB_NAME = re.compile(r"^(?P<stem>Im(?P<number>\d+)_(?P<label>[^._]+))\.(?P<ext>[A-Za-z0-9]+)$")
# Manifest labels that give only the binary answer; FAB names give both.
_BINARY_ALIASES = {"0": 0, "1": 1, "healthy": 0, "all": 1, "leukemia": 1, "leukaemia": 1, "blast": 1}


class LabelError(ValueError):
    """A file name, label or .xyc line cannot be understood; ``reason`` is the reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Labels:
    """What is known about an image's class: binary (1 ALL / 0 healthy) and FAB, either may be None."""

    binary: int | None
    fab: str | None


@dataclass(frozen=True)
class AllIdbName:
    stem: str
    number: int
    label: int


def parse_allidb_name(file_name: str) -> AllIdbName:
    """Parse ``ImNNN_L.ext`` (L in {0, 1}).

    Raises:
        LabelError: ``bad_name`` if the pattern does not match, ``bad_label`` if L is not 0 or 1.
    """
    match = _ALLIDB_NAME.match(file_name)
    if match is None:
        raise LabelError("bad_name", f"{file_name!r} does not follow the ALL-IDB pattern ImNNN_L.ext (L = 0 or 1)")
    if match["label"] not in ("0", "1"):
        raise LabelError("bad_label", f"{file_name!r}: label {match['label']!r} must be 0 (healthy) or 1 (ALL)")
    return AllIdbName(stem=match["stem"], number=int(match["number"]), label=int(match["label"]))


def parse_label(text: str | None) -> Labels:
    """Parse a manifest label: normal | L1 | L2 | L3 (FAB), or 0/1/healthy/ALL (binary only).

    Raises:
        LabelError: ``bad_label`` naming the allowed values.
    """
    value = (text or "").strip()
    for fab in FAB_LABELS:
        if value.lower() == fab.lower():
            return Labels(binary=0 if fab == "normal" else 1, fab=fab)
    if value.lower() in _BINARY_ALIASES:
        return Labels(binary=_BINARY_ALIASES[value.lower()], fab=None)
    allowed = ", ".join([*FAB_LABELS, *_BINARY_ALIASES])
    empty = " (a manifest row needs a label: score unlabelled slides as a folder)" if not value else ""
    raise LabelError("bad_label", f"label {value!r} is not one of {allowed} (any case){empty}")


def parse_xyc(text: str) -> list[tuple[int, int]]:
    """Parse an ALL-IDB .xyc file: one ``x y`` pair of non-negative integers per line.

    Blank lines are skipped; an empty file means no blasts.

    Raises:
        LabelError: ``bad_xyc`` with the line number and the offending text.
    """
    points = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise LabelError("bad_xyc", f"line {number}: {line.strip()!r} is not two non-negative integers 'x y'")
        points.append((int(parts[0]), int(parts[1])))
    return points


def check_points_inside(points: list[tuple[int, int]], width: int, height: int) -> None:
    """Raise ``bad_xyc`` if a centroid lies outside a ``width`` x ``height`` image."""
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise LabelError("bad_xyc", f"centroid ({x}, {y}) lies outside the {width}x{height} image")


def stem_of(file_name: str) -> str:
    """File name without its last extension: ``Im001_1.jpg`` -> ``Im001_1``."""
    return file_name.rsplit(".", 1)[0] if "." in file_name else file_name
