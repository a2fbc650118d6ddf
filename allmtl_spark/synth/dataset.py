"""Write a synthetic data set in the real ALL-IDB layouts, with a manifest and ground-truth boxes.

Layout under the output folder::

    ALL_IDB1/im/ImNNN_L.jpg      whole smears, L = 1 (ALL) / 0 (normal), NNN from 001
    ALL_IDB1/xyc/ImNNN_L.xyc     blast centroids, one "x y" pair per line (empty for normal slides)
    ALL_IDB1/masks/ImNNN_L.png   masks of every white cell, 0/255
    ALL_IDB2/img/ImNNN_L.tif     single-cell crops, RGB 8-bit TIFF, L = 1 (blast) / 0 (normal)
    ALL_IDB2/masks/ImNNN_L.png   mask of the centred cell
    manifest.csv                 path,kind,slide_id,patient_id,label,mask_path,xyc_path,site,
                                 pixel_size_um,source_slide_id,crop_x,crop_y
    boxes.csv                    slide_id,xmin,ymin,xmax,ymax,label: every white cell on the slides

Like the real ALL-IDB2, the crops are cut out of the slides (``synth.crops_from_slides``, default):
a crop's row names its slide (``source_slide_id``) and the crop's top-left pixel in it
(``crop_x``, ``crop_y``), and its patient is the slide's. Every slide has its own generator
seeded from (seed, kind, index), every patient from (seed, index), and which cells are cropped
is planned before anything is drawn, so the files do not depend on the number of workers or the
order they finish in.
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

from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import FAB_CLASSES, SmearParams, SynthConfig
from allmtl_spark.synth.cells import BOX_LABELS
from allmtl_spark.synth.smear import (
    Patient,
    SyntheticSlide,
    draw_patient,
    render_cell_crop,
    render_slide,
)
from allmtl_spark.synth.stain import jpeg_roundtrip

MANIFEST_COLUMNS = (
    "path",
    "kind",
    "slide_id",
    "patient_id",
    "label",
    "mask_path",
    "xyc_path",
    "site",
    "pixel_size_um",
    "source_slide_id",
    "crop_x",
    "crop_y",
)
BOX_COLUMNS = ("slide_id", "xmin", "ymin", "xmax", "ymax", "label")
SITE = "synthetic"
SLIDE_DIRS = {"image": "ALL_IDB1/im", "xyc": "ALL_IDB1/xyc", "mask": "ALL_IDB1/masks"}
CELL_DIRS = {"image": "ALL_IDB2/img", "mask": "ALL_IDB2/masks"}
# Independent seed streams.
_STREAM = {"slide": 0, "cell": 1, "slide_plan": 2, "cell_plan": 3, "patient": 4, "crop_plan": 5}
MAX_CROPS_PER_SLIDE = 6  # cells one slide gives to crops (ALL-IDB2 took 260 crops from 108 slides)
_OWN_FILE = re.compile(r"^Im\d{3,}_[01]\.(jpg|xyc|png|tif)$")


def _stem(index: int, fab_class: str) -> str:
    """ALL-IDB file stem, e.g. ``Im001_1`` (1: ALL slide or blast cell, 0: normal)."""
    return f"Im{index + 1:03d}_{0 if fab_class == 'normal' else 1}"


@dataclass(frozen=True)
class Crop:
    """A crop to cut out of a slide: its 0-based index among the crops and the kind of the cell at its centre."""

    index: int
    fab_class: str

    @property
    def stem(self) -> str:
        return _stem(self.index, self.fab_class)


@dataclass(frozen=True)
class Item:
    """One file set to render: ``kind`` ``slide`` or ``cell``, 0-based ``index``, class and patient.

    Attributes:
        patient_index: 0-based patient number; ``patient_id`` is ``P`` and that number plus one.
        crops: for a slide, the crops to cut out of it.
    """

    kind: str
    index: int
    fab_class: str
    patient_index: int
    crops: tuple[Crop, ...] = ()

    @property
    def stem(self) -> str:
        """ALL-IDB file stem, e.g. ``Im001_1`` (1: ALL slide or blast cell, 0: normal)."""
        return _stem(self.index, self.fab_class)

    @property
    def patient_id(self) -> str:
        return f"P{self.patient_index + 1:04d}"


@dataclass(frozen=True)
class SynthSummary:
    """What ``write_dataset`` wrote.

    Attributes:
        output: the data set folder.
        manifest_path: the manifest CSV.
        boxes_path: the ground-truth boxes CSV.
        slides_per_class, cells_per_class: item counts per class (normal, L1, L2, L3).
        blasts_on_slides: number of blast centroids written to ``.xyc`` files.
        boxes: number of white-cell boxes written.
        pixel_size_range: smallest and largest micrometres per pixel of the slides (and crops).
        seconds: wall time.
        rate: items (slides + crops) per second.
    """

    output: str
    manifest_path: str
    boxes_path: str
    slides_per_class: dict[str, int]
    cells_per_class: dict[str, int]
    blasts_on_slides: int
    boxes: int
    pixel_size_range: tuple[float, float]
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
        low, high = self.pixel_size_range
        return (
            f"synthetic data set in {self.output}\n"
            f"  slides: {self.n_slides} ({slides}), {self.blasts_on_slides} blast centroids, "
            f"{self.boxes} white-cell boxes\n"
            f"  cells:  {self.n_cells} ({cells})\n"
            f"  pixel size: {low:.4f}-{high:.4f} um/px\n"
            f"  manifest: {self.manifest_path}\n"
            f"  boxes: {self.boxes_path}\n"
            f"  {self.seconds:.1f} s, {self.rate:.2f} items/s"
        )


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs besides the item; small and picklable."""

    root: str
    seed: int
    width: int
    height: int
    crop_size_um: float
    min_pixel_size_um: float
    params: SmearParams


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator of one item, from (seed, kind, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM[kind], index]))


def patient_of(seed: int, patient_index: int, params: SmearParams) -> Patient:
    """The patient ``patient_index`` of a data set: drawn from (seed, index) only, so every worker agrees."""
    return draw_patient(item_rng(seed, "patient", patient_index), params)


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


def _assign_crops(cfg: SynthConfig, slide_classes: list[str]) -> list[list[Crop]]:
    """Plan the crops and the slide each is cut from.

    The crops' classes follow ``class_mix`` over the classes the slides have (a blast crop needs a
    slide of its class; lymphocytes are on every slide). Blast crops come from slides of their
    class, lymphocyte crops from any slide, spread evenly over the eligible slides in a seeded
    random order.
    """
    # Never empty: the slides' own classes come from class_mix.
    mix = {c: w for c, w in cfg.class_mix.items() if c == "normal" or c in slide_classes}
    crop_classes = _shuffled_classes(cfg.n_cells, mix, item_rng(cfg.seed, "cell_plan", 0)) if cfg.n_cells else []
    rng = item_rng(cfg.seed, "crop_plan", 0)
    per_slide: list[list[Crop]] = [[] for _ in slide_classes]
    for fab_class in FAB_CLASSES:
        wanted = [j for j, c in enumerate(crop_classes) if c == fab_class]
        if not wanted:
            continue
        eligible = [i for i, c in enumerate(slide_classes) if fab_class == "normal" or c == fab_class]
        order = [eligible[k] for k in rng.permutation(len(eligible))]
        for t, j in enumerate(wanted):
            per_slide[order[t % len(order)]].append(Crop(j, fab_class))
    most = max((len(c) for c in per_slide), default=0)
    if most > MAX_CROPS_PER_SLIDE:
        raise ConfigError(
            f"synth.n_cells={cfg.n_cells} crops would take {most} cells from one slide (at most "
            f"{MAX_CROPS_PER_SLIDE}): raise synth.n_slides, lower synth.n_cells, or set synth.crops_from_slides: false"
        )
    return per_slide


def plan_items(cfg: SynthConfig) -> list[Item]:
    """The slides and crops to render, in file order.

    Slides are grouped ``slides_per_patient`` to a patient and a patient has one class, so all
    of a patient's slides agree. Crops use the same ``class_mix`` (the default's half normal
    gives ALL-IDB2's half blasts), over the classes the slides have. With ``crops_from_slides``
    each slide lists the crops cut out of it and no separate crop items are returned; otherwise
    each crop is an item with its own patient, numbered after the slides'.
    """
    n_patients = math.ceil(cfg.n_slides / cfg.slides_per_patient)
    patient_classes = _shuffled_classes(n_patients, cfg.class_mix, item_rng(cfg.seed, "slide_plan", 0))
    if cfg.kind == "blank":
        patient_classes = ["normal"] * n_patients  # nothing on the glass to be leukaemic
    slide_classes = [patient_classes[i // cfg.slides_per_patient] for i in range(cfg.n_slides)]
    crops = _assign_crops(cfg, slide_classes) if cfg.crops_from_slides else [[] for _ in slide_classes]
    items = [
        Item("slide", i, slide_classes[i], i // cfg.slides_per_patient, tuple(crops[i])) for i in range(cfg.n_slides)
    ]
    if not cfg.crops_from_slides:
        crop_classes = _shuffled_classes(cfg.n_cells, cfg.class_mix, item_rng(cfg.seed, "cell_plan", 0))
        items += [Item("cell", j, crop_classes[j], n_patients + j) for j in range(cfg.n_cells)]
    return items


def min_pixel_size_um(cfg: SynthConfig) -> float:
    """The data set's floor on the slides' pixel size: a crop must fit in a slide (same for every slide and class)."""
    if not (cfg.crops_from_slides and cfg.n_cells):
        return 0.0
    return cfg.cell_crop_size_um / min(cfg.slide_width, cfg.slide_height)


def render_item(item: Item, cfg: SynthConfig) -> SyntheticSlide:
    """Render one planned item exactly as ``write_dataset`` does (for tests and previews)."""
    rng = item_rng(cfg.seed, item.kind, item.index)
    patient = patient_of(cfg.seed, item.patient_index, cfg)
    if item.kind == "slide":
        return render_slide(
            rng,
            cfg.slide_width,
            cfg.slide_height,
            item.fab_class,
            cfg,
            patient=patient,
            min_pixel_size_um=min_pixel_size_um(cfg),
            crop_kinds=[c.fab_class for c in item.crops],
            crop_size_um=cfg.cell_crop_size_um,
        )
    return render_cell_crop(rng, cfg.cell_crop_size_um, item.fab_class, cfg, patient=patient)


def crop_window(cx: float, cy: float, size: int, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of a ``size`` square centred on (cx, cy), moved inside a ``width`` x ``height`` frame."""
    x0 = min(max(int(round(cx - size / 2.0)), 0), width - size)
    y0 = min(max(int(round(cy - size / 2.0)), 0), height - size)
    return x0, y0


def _write_image(path: Path, rgb: np.ndarray, params: list[int]) -> None:
    # cv2 encodes BGR; our arrays are RGB.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


def _write_mask(path: Path, mask: np.ndarray) -> None:
    if not cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def _row(item_kind: str, stem: str, patient_id: str, label: str, pixel_size_um: float, **extra: str) -> dict[str, str]:
    dirs = SLIDE_DIRS if item_kind == "slide" else CELL_DIRS
    row = {
        "path": f"{dirs['image']}/{stem}.{'jpg' if item_kind == 'slide' else 'tif'}",
        "kind": item_kind,
        "slide_id": stem,
        "patient_id": patient_id,
        "label": label,
        "mask_path": f"{dirs['mask']}/{stem}.png",
        "xyc_path": f"{SLIDE_DIRS['xyc']}/{stem}.xyc" if item_kind == "slide" else "",
        "site": SITE,
        "pixel_size_um": f"{pixel_size_um:.8g}",
        "source_slide_id": "",
        "crop_x": "",
        "crop_y": "",
    }
    row.update(extra)
    return row


def _write_crop(
    root: Path, crop: Crop, image: np.ndarray, mask: np.ndarray, patient_id: str, pixel_size_um: float, **source: str
) -> dict[str, str]:
    row = _row("cell", crop.stem, patient_id, crop.fab_class, pixel_size_um, **source)
    # Uncompressed like the originals: every TIFF reader opens it.
    _write_image(root / row["path"], image, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    _write_mask(root / row["mask_path"], mask)
    return row


def _write_item(job: _Job, item: Item) -> tuple[list[dict[str, str]], list[dict[str, str]], int]:
    """Render and write one item (a slide with the crops cut from it, or a lone crop).

    Returns:
        Its manifest rows (the slide's first), its box rows and its number of blast centroids.
    """
    root = Path(job.root)
    cfg_like = job.params
    rng = item_rng(job.seed, item.kind, item.index)
    patient = patient_of(job.seed, item.patient_index, cfg_like)
    if item.kind == "cell":
        drawn = render_cell_crop(rng, job.crop_size_um, item.fab_class, cfg_like, patient=patient)
        crop = Crop(item.index, item.fab_class)
        return [_write_crop(root, crop, drawn.image, drawn.mask, item.patient_id, drawn.pixel_size_um)], [], 0
    drawn = render_slide(
        rng,
        job.width,
        job.height,
        item.fab_class,
        cfg_like,
        patient=patient,
        min_pixel_size_um=job.min_pixel_size_um,
        crop_kinds=[c.fab_class for c in item.crops],
        crop_size_um=job.crop_size_um,
    )
    row = _row("slide", item.stem, item.patient_id, item.fab_class, drawn.pixel_size_um)
    jpeg, decoded = jpeg_roundtrip(drawn.image, drawn.jpeg_quality)
    (root / row["path"]).write_bytes(jpeg)
    _write_mask(root / row["mask_path"], drawn.mask)
    (root / row["xyc_path"]).write_text(
        "".join(f"{int(round(c.cx))} {int(round(c.cy))}\n" for c in drawn.blasts), encoding="ascii"
    )
    rows = [row]
    # Crops are cut from the decoded JPEG: what anyone reading the slide file sees at (crop_x, crop_y).
    size = int(round(job.crop_size_um / drawn.pixel_size_um))
    for crop, at in zip(item.crops, drawn.crop_cells, strict=True):
        cell = drawn.cells[at]
        x0, y0 = crop_window(cell.cx, cell.cy, size, job.width, job.height)
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        mask = np.where(drawn.labels[window] == at + 1, 255, 0).astype(np.uint8)
        rows.append(
            _write_crop(
                root,
                crop,
                np.ascontiguousarray(decoded[window]),
                mask,
                item.patient_id,
                drawn.pixel_size_um,
                source_slide_id=item.stem,
                crop_x=str(x0),
                crop_y=str(y0),
            )
        )
    boxes = [
        dict(zip(BOX_COLUMNS, (item.stem, *map(str, c.box), BOX_LABELS[c.kind]), strict=True)) for c in drawn.cells
    ]
    return rows, boxes, len(drawn.blasts)


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
        files = [
            f"{SLIDE_DIRS['image']}/{item.stem}.jpg",
            f"{SLIDE_DIRS['xyc']}/{item.stem}.xyc",
            f"{SLIDE_DIRS['mask']}/{item.stem}.png",
        ]
        stems = [c.stem for c in item.crops]
    else:
        files, stems = [], [item.stem]
    return files + [f for s in stems for f in (f"{CELL_DIRS['image']}/{s}.tif", f"{CELL_DIRS['mask']}/{s}.png")]


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
    """Render ``cfg.n_slides`` smears and ``cfg.n_cells`` crops into the ALL-IDB layouts with a manifest and boxes.

    Output is byte-identical for the same config whatever ``cfg.workers`` is. Files named like
    ours (``ImNNN_L.*``) that an earlier run left in the layout folders are removed, so the
    folders always match the manifest. With ``cfg.workers > 1`` the items render in a ``spawn``
    process pool, so a calling script needs the usual ``if __name__ == "__main__":`` guard.

    Args:
        cfg: the synth section of the config.
        output: folder to write to; None means ``cfg.output``.
        progress: called with a one-line message every 10% of the slides; None for silence.

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
        crop_size_um=cfg.cell_crop_size_um,
        min_pixel_size_um=min_pixel_size_um(cfg),
        params=cfg,
    )
    start = time.perf_counter()
    tracker = _Progress(len(items), progress)
    results: dict[tuple[str, int], tuple[list[dict[str, str]], list[dict[str, str]], int]] = {}
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
    ordered = [results[(item.kind, item.index)] for item in items]
    rows = [r for rows, _, _ in ordered for r in rows]
    slide_rows = [r for r in rows if r["kind"] == "slide"]
    cell_rows = sorted((r for r in rows if r["kind"] == "cell"), key=lambda r: int(r["slide_id"][2:-2]))
    _write_csv(root / "manifest.csv", MANIFEST_COLUMNS, slide_rows + cell_rows)
    boxes = [b for _, item_boxes, _ in ordered for b in item_boxes]
    _write_csv(root / "boxes.csv", BOX_COLUMNS, boxes)
    seconds = time.perf_counter() - start
    slides = Counter(r["label"] for r in slide_rows)
    cells = Counter(r["label"] for r in cell_rows)
    sizes = [float(r["pixel_size_um"]) for r in rows] or [0.0]
    return SynthSummary(
        output=str(root),
        manifest_path=str(root / "manifest.csv"),
        boxes_path=str(root / "boxes.csv"),
        slides_per_class={c: slides.get(c, 0) for c in FAB_CLASSES},
        cells_per_class={c: cells.get(c, 0) for c in FAB_CLASSES},
        blasts_on_slides=sum(n for _, _, n in ordered),
        boxes=len(boxes),
        pixel_size_range=(min(sizes), max(sizes)),
        seconds=seconds,
        rate=len(rows) / seconds if seconds > 0 else 0.0,
    )


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write a CSV atomically (a temporary file renamed over the old one)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


@dataclass(frozen=True)
class _RenderCall:
    """Picklable ``_write_item`` bound to a job (a lambda or closure would not pickle under spawn)."""

    job: _Job

    def __call__(self, item: Item) -> tuple[tuple[str, int], tuple[list[dict[str, str]], list[dict[str, str]], int]]:
        return (item.kind, item.index), _write_item(self.job, item)
