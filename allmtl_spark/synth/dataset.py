"""Write a synthetic data set in the real ALL-IDB layouts, with a manifest.

Layout under the output folder::

    ALL_IDB1/im/ImNNN_L.jpg      whole smears, L = 1 (ALL) / 0 (normal), NNN from 001
    ALL_IDB1/xyc/ImNNN_L.xyc     blast centroids, one "x y" pair per line (empty for normal slides)
    ALL_IDB1/masks/ImNNN_L.png   white-cell masks, 0/255
    ALL_IDB2/img/ImNNN_L.tif     single-cell crops, RGB 8-bit TIFF, L = 1 (blast) / 0 (normal)
    ALL_IDB2/masks/ImNNN_L.png   mask of the centred cell
    manifest.csv                 path,kind,slide_id,patient_id,label,mask_path,xyc_path,site

Every item has its own generator seeded from (seed, kind, index), so the files do not depend on
the number of workers or the order they finish in.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from allmtl_spark.config.schema import FAB_CLASSES, SynthConfig
from allmtl_spark.synth.smear import SmearParams, SyntheticSlide, render_cell_crop, render_slide

MANIFEST_COLUMNS = ("path", "kind", "slide_id", "patient_id", "label", "mask_path", "xyc_path", "site")
SITE = "synthetic"
SLIDE_DIRS = {"image": "ALL_IDB1/im", "xyc": "ALL_IDB1/xyc", "mask": "ALL_IDB1/masks"}
CELL_DIRS = {"image": "ALL_IDB2/img", "mask": "ALL_IDB2/masks"}
_STREAM = {"slide": 0, "cell": 1, "slide_plan": 2, "cell_plan": 3}  # independent seed streams
_OWN_FILE = re.compile(r"^Im\d{3,}_[01]\.(jpg|xyc|png|tif)$")


@dataclass(frozen=True)
class Item:
    """One file set to render: ``kind`` ``slide`` or ``cell``, 0-based ``index``, class and patient."""

    kind: str
    index: int
    fab_class: str
    patient_id: str

    @property
    def stem(self) -> str:
        """ALL-IDB file stem, e.g. ``Im001_1`` (1: ALL slide or blast cell, 0: normal)."""
        return f"Im{self.index + 1:03d}_{0 if self.fab_class == 'normal' else 1}"


@dataclass(frozen=True)
class SynthSummary:
    """What ``write_dataset`` wrote.

    Attributes:
        output: the data set folder.
        manifest_path: the manifest CSV.
        slides_per_class, cells_per_class: item counts per class (normal, L1, L2, L3).
        blasts_on_slides: number of blast centroids written to ``.xyc`` files.
        seconds: wall time.
        rate: items (slides + crops) per second.
    """

    output: str
    manifest_path: str
    slides_per_class: dict[str, int]
    cells_per_class: dict[str, int]
    blasts_on_slides: int
    seconds: float
    rate: float

    @property
    def n_slides(self) -> int:
        return sum(self.slides_per_class.values())

    @property
    def n_cells(self) -> int:
        return sum(self.cells_per_class.values())

    def format(self) -> str:
        """A few human-readable lines for the command line."""
        slides = ", ".join(f"{c} {n}" for c, n in self.slides_per_class.items())
        cells = ", ".join(f"{c} {n}" for c, n in self.cells_per_class.items())
        return (
            f"synthetic data set in {self.output}\n"
            f"  slides: {self.n_slides} ({slides}), {self.blasts_on_slides} blast centroids\n"
            f"  cells:  {self.n_cells} ({cells})\n"
            f"  manifest: {self.manifest_path}\n"
            f"  {self.seconds:.1f} s, {self.rate:.2f} items/s"
        )


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs besides the item; small and picklable."""

    root: str
    seed: int
    width: int
    height: int
    crop_size: int
    jpeg_quality: int
    params: SmearParams


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator of one item, from (seed, kind, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[kind], index]))


def class_counts(n: int, class_mix: dict[str, float]) -> dict[str, int]:
    """Split ``n`` items over the classes in proportion to ``class_mix`` (largest remainder, exact total)."""
    total = sum(class_mix.values())
    quota = {c: n * class_mix.get(c, 0.0) / total for c in FAB_CLASSES}
    counts = {c: int(math.floor(q)) for c, q in quota.items()}
    by_remainder = sorted(FAB_CLASSES, key=lambda c: (-(quota[c] - counts[c]), FAB_CLASSES.index(c)))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    return counts


def _shuffled_classes(n: int, class_mix: dict[str, float], rng: np.random.Generator) -> list[str]:
    counts = class_counts(n, class_mix)
    classes = [c for c in FAB_CLASSES for _ in range(counts[c])]
    return [classes[i] for i in rng.permutation(n)]


def plan_items(cfg: SynthConfig) -> list[Item]:
    """The slides and crops to render, in file order.

    Slides are grouped ``slides_per_patient`` to a patient and a patient has one class, so all
    of a patient's slides agree. Crops use the same ``class_mix`` (the default's half normal
    gives ALL-IDB2's half blasts) and each crop is its own patient, numbered after the slides'.
    """
    n_patients = math.ceil(cfg.n_slides / cfg.slides_per_patient)
    patient_classes = _shuffled_classes(n_patients, cfg.class_mix, item_rng(cfg.seed, "slide_plan", 0))
    items = [
        Item("slide", i, patient_classes[i // cfg.slides_per_patient], f"P{i // cfg.slides_per_patient + 1:04d}")
        for i in range(cfg.n_slides)
    ]
    cell_classes = _shuffled_classes(cfg.n_cells, cfg.class_mix, item_rng(cfg.seed, "cell_plan", 0))
    items += [Item("cell", j, cell_classes[j], f"P{n_patients + j + 1:04d}") for j in range(cfg.n_cells)]
    return items


def render_item(item: Item, seed: int, width: int, height: int, crop_size: int, params: SmearParams) -> SyntheticSlide:
    """Render one planned item exactly as ``write_dataset`` does (for tests and previews)."""
    rng = item_rng(seed, item.kind, item.index)
    if item.kind == "slide":
        return render_slide(rng, width, height, item.fab_class, params)
    return render_cell_crop(rng, crop_size, item.fab_class, params)


def _write_image(path: Path, rgb: np.ndarray, params: list[int]) -> None:
    # cv2 encodes BGR; our arrays are RGB.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


def _write_mask(path: Path, mask: np.ndarray) -> None:
    if not cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def _write_item(job: _Job, item: Item) -> tuple[dict[str, str], int]:
    """Render and write one item; returns its manifest row and its number of blast centroids."""
    root = Path(job.root)
    drawn = render_item(item, job.seed, job.width, job.height, job.crop_size, job.params)
    if item.kind == "slide":
        image = f"{SLIDE_DIRS['image']}/{item.stem}.jpg"
        mask = f"{SLIDE_DIRS['mask']}/{item.stem}.png"
        xyc = f"{SLIDE_DIRS['xyc']}/{item.stem}.xyc"
        _write_image(root / image, drawn.image, [cv2.IMWRITE_JPEG_QUALITY, job.jpeg_quality])
        lines = "".join(f"{int(round(c.cx))} {int(round(c.cy))}\n" for c in drawn.blasts)
        (root / xyc).write_text(lines, encoding="ascii")
        n_blasts = len(drawn.blasts)
    else:
        image = f"{CELL_DIRS['image']}/{item.stem}.tif"
        mask = f"{CELL_DIRS['mask']}/{item.stem}.png"
        xyc = ""
        # Uncompressed like the originals: every TIFF reader opens it.
        _write_image(root / image, drawn.image, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
        n_blasts = 0
    _write_mask(root / mask, drawn.mask)
    row = {
        "path": image,
        "kind": item.kind,
        "slide_id": item.stem,
        "patient_id": item.patient_id,
        "label": item.fab_class,
        "mask_path": mask,
        "xyc_path": xyc,
        "site": SITE,
    }
    return row, n_blasts


def _worker_init() -> None:
    # One OpenCV thread per process: the pool already fills the cores.
    cv2.setNumThreads(1)


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete our own file names (``ImNNN_L.*``) left in the layout by an earlier, larger run."""
    for folder in {*SLIDE_DIRS.values(), *CELL_DIRS.values()}:
        for path in (root / folder).iterdir():
            rel = f"{folder}/{path.name}"
            if _OWN_FILE.match(path.name) and rel not in keep:
                path.unlink()


def _expected_files(item: Item) -> list[str]:
    if item.kind == "slide":
        return [
            f"{SLIDE_DIRS['image']}/{item.stem}.jpg",
            f"{SLIDE_DIRS['xyc']}/{item.stem}.xyc",
            f"{SLIDE_DIRS['mask']}/{item.stem}.png",
        ]
    return [f"{CELL_DIRS['image']}/{item.stem}.tif", f"{CELL_DIRS['mask']}/{item.stem}.png"]


class _Progress:
    """Reports every 10% (and at the end) with the rate and the time left."""

    def __init__(self, total: int, report: Callable[[str], object] | None) -> None:
        self.total, self.report, self.start, self.done, self.next_step = total, report, time.perf_counter(), 0, 1

    def advance(self) -> None:
        self.done += 1
        if self.report is None or self.done * 10 < self.next_step * self.total:
            return
        while self.next_step * self.total <= self.done * 10:
            self.next_step += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.report(
            f"synth: {self.done}/{self.total} items ({100 * self.done // self.total}%), "
            f"{rate:.2f} items/s, {left:.0f} s left"
        )


def write_dataset(
    cfg: SynthConfig, output: str | os.PathLike | None = None, progress: Callable[[str], object] | None = print
) -> SynthSummary:
    """Render ``cfg.n_slides`` smears and ``cfg.n_cells`` crops into the ALL-IDB layouts with a manifest.

    Output is byte-identical for the same config whatever ``cfg.workers`` is. Files named like
    ours (``ImNNN_L.*``) that an earlier run left in the layout folders are removed, so the
    folders always match the manifest. With ``cfg.workers > 1`` the items render in a ``spawn``
    process pool, so a calling script needs the usual ``if __name__ == "__main__":`` guard.

    Args:
        cfg: the synth section of the config.
        output: folder to write to; None means ``cfg.output``.
        progress: called with a one-line message every 10% of the items; None for silence.

    Returns:
        A ``SynthSummary`` with counts per class, paths, time and rate.
    """
    root = Path(output if output is not None else cfg.output)
    for folder in {*SLIDE_DIRS.values(), *CELL_DIRS.values()}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    items = plan_items(cfg)
    _remove_stale(root, {f for item in items for f in _expected_files(item)})
    job = _Job(
        root=str(root),
        seed=cfg.seed,
        width=cfg.slide_width,
        height=cfg.slide_height,
        crop_size=cfg.cell_crop_size,
        jpeg_quality=cfg.jpeg_quality,
        params=SmearParams.from_config(cfg),
    )
    start = time.perf_counter()
    tracker = _Progress(len(items), progress)
    results: dict[tuple[str, int], tuple[dict[str, str], int]] = {}
    workers = min(cfg.workers, len(items))
    if workers <= 1:
        for item in items:
            results[(item.kind, item.index)] = _write_item(job, item)
            tracker.advance()
    else:
        # spawn, not fork: the caller may hold threads (Spark's py4j gateway, OpenCV's pool) that fork would copy
        # half-alive. Items are independent, so unordered completion is fine; rows are put back in order below.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for key, result in pool.imap_unordered(_RenderCall(job), items, chunksize=1):
                results[key] = result
                tracker.advance()
    rows = [results[(item.kind, item.index)][0] for item in items]
    manifest = root / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    seconds = time.perf_counter() - start
    slides = Counter(item.fab_class for item in items if item.kind == "slide")
    cells = Counter(item.fab_class for item in items if item.kind == "cell")
    return SynthSummary(
        output=str(root),
        manifest_path=str(manifest),
        slides_per_class={c: slides.get(c, 0) for c in FAB_CLASSES},
        cells_per_class={c: cells.get(c, 0) for c in FAB_CLASSES},
        blasts_on_slides=sum(n for _, n in results.values()),
        seconds=seconds,
        rate=len(items) / seconds if seconds > 0 else 0.0,
    )


@dataclass(frozen=True)
class _RenderCall:
    """Picklable ``_write_item`` bound to a job (a lambda or closure would not pickle under spawn)."""

    job: _Job

    def __call__(self, item: Item) -> tuple[tuple[str, int], tuple[dict[str, str], int]]:
        return (item.kind, item.index), _write_item(self.job, item)
