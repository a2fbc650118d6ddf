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
(``crop_x``, ``crop_y``), and its patient is the slide's. The slides are drawn first, knowing
nothing of the crops (so cropping cannot change a slide, let alone by class); then the crops are
chosen among the lymphoid cells whose centred window lies inside their slide, and cut out of the
written JPEG. Every slide has its own generator seeded from (seed, kind, index), every patient from
(seed, index), and the choice of crops is seeded too, so the files do not depend on the number of
workers or the order they finish in.
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
from allmtl_spark.ingest.privacy import write_synthetic_marker
from allmtl_spark.synth.cells import BOX_LABELS
from allmtl_spark.synth.smear import Patient, SyntheticSlide, draw_patient, render_cell_crop, render_slide
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
SLIDE_DIRS = {"image": "ALL_IDB1/im", "xyc": "ALL_IDB1/xyc", "mask": "ALL_IDB1/masks"}
CELL_DIRS = {"image": "ALL_IDB2/img", "mask": "ALL_IDB2/masks"}
# Independent seed streams.
_STREAM = {"slide": 0, "cell": 1, "slide_plan": 2, "cell_plan": 3, "patient": 4, "crop_plan": 5}
_OWN_FILE = re.compile(r"^Im\d{3,}_[01]\.(jpg|xyc|png|tif)$")


def _stem(index: int, fab_class: str) -> str:
    """ALL-IDB file stem, e.g. ``Im001_1`` (1: ALL slide or blast cell, 0: normal)."""
    return f"Im{index + 1:03d}_{0 if fab_class == 'normal' else 1}"


@dataclass(frozen=True)
class Item:
    """One file set to render: ``kind`` ``slide`` or ``cell``, 0-based ``index``, class and patient.

    Attributes:
        patient_index: 0-based patient number; ``patient_id`` is ``P`` and that number plus one.
    """

    kind: str
    index: int
    fab_class: str
    patient_index: int

    @property
    def stem(self) -> str:
        """ALL-IDB file stem, e.g. ``Im001_1`` (1: ALL slide or blast cell, 0: normal)."""
        return _stem(self.index, self.fab_class)

    @property
    def patient_id(self) -> str:
        return f"P{self.patient_index + 1:04d}"


@dataclass(frozen=True)
class Candidate:
    """A lymphoid cell of a written slide that a crop can be cut around.

    Attributes:
        slide: index of the slide.
        kind: ``normal``, ``L1``, ``L2`` or ``L3``.
        cx, cy: the cell's centre, pixels.
        x0, y0: top-left corner of its crop window, pixels: centred on the cell, or moved inside
            the slide when the cell is near an edge (``centred`` false; the whole cell stays inside).
        size: side of the window, pixels.
        centred: the window is centred on the cell.
    """

    slide: int
    kind: str
    cx: float
    cy: float
    x0: int
    y0: int
    size: int
    centred: bool


@dataclass(frozen=True)
class Plan:
    """What ``write_dataset`` renders: the slides (and lone crops) and the classes of the crops to cut."""

    items: list[Item]
    crop_classes: list[str]  # crops cut from slides, in file order; empty without crops_from_slides


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


def plan_items(cfg: SynthConfig) -> Plan:
    """The slides and crops to render, in file order.

    Slides are grouped ``slides_per_patient`` to a patient and a patient has one class, so all
    of a patient's slides agree. Crops follow the same ``class_mix`` (the default's half normal
    gives ALL-IDB2's half blasts) over the classes the slides have. With ``crops_from_slides``
    the crops are cut from the slides later (``crop_classes``); otherwise each crop is an item
    with its own patient, numbered after the slides'.
    """
    n_patients = math.ceil(cfg.n_slides / cfg.slides_per_patient)
    patient_classes = _shuffled_classes(n_patients, cfg.class_mix, item_rng(cfg.seed, "slide_plan", 0))
    if cfg.kind == "blank":
        patient_classes = ["normal"] * n_patients  # nothing on the glass to be leukaemic
    items = [
        Item("slide", i, patient_classes[i // cfg.slides_per_patient], i // cfg.slides_per_patient)
        for i in range(cfg.n_slides)
    ]
    cell_rng = item_rng(cfg.seed, "cell_plan", 0)
    if not cfg.crops_from_slides:
        crop_classes = _shuffled_classes(cfg.n_cells, cfg.class_mix, cell_rng)
        items += [Item("cell", j, crop_classes[j], n_patients + j) for j in range(cfg.n_cells)]
        return Plan(items, [])
    # Never empty: the slides' own classes come from class_mix.
    mix = {c: w for c, w in cfg.class_mix.items() if c == "normal" or c in set(patient_classes)}
    return Plan(items, _shuffled_classes(cfg.n_cells, mix, cell_rng) if cfg.n_cells else [])


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
            rng, cfg.slide_width, cfg.slide_height, item.fab_class, cfg, patient, min_pixel_size_um(cfg)
        )
    return render_cell_crop(rng, cfg.cell_crop_size_um, item.fab_class, cfg, patient=patient)


def crop_candidates(slide: SyntheticSlide, index: int, crop_size_um: float) -> list[Candidate]:
    """The lymphoid cells of a slide a crop can be cut around, with their windows.

    A window is centred on its cell; near the slide's edge it is moved inside the slide, by at most
    a quarter of its side and only if the whole cell stays inside it with a pixel to spare.
    """
    size = int(round(crop_size_um / slide.pixel_size_um))
    height, width = slide.mask.shape
    if size > min(width, height):
        return []
    out = []
    for cell in slide.cells:
        if cell.kind not in FAB_CLASSES:
            continue
        x, y = int(round(cell.cx - size / 2.0)), int(round(cell.cy - size / 2.0))
        x0, y0 = min(max(x, 0), width - size), min(max(y, 0), height - size)
        xmin, ymin, xmax, ymax = cell.box
        inside = x0 < xmin and y0 < ymin and xmax < x0 + size - 1 and ymax < y0 + size - 1
        if inside and max(abs(x0 - x), abs(y0 - y)) <= size / 4:
            out.append(Candidate(index, cell.kind, cell.cx, cell.cy, x0, y0, size, (x0, y0) == (x, y)))
    return out


def choose_crops(cfg: SynthConfig, plan: Plan, candidates: list[Candidate]) -> list[Candidate]:
    """Which cell each planned crop is cut around.

    A blast crop takes a blast of its class, a lymphocyte crop a lymphocyte of any slide. Cells whose
    window is centred come first; each class goes round its slides in a seeded random order, one
    cell per slide per round, so the crops spread over the slides; no two crops share a window.
    Depends only on the plan and the candidates, never on worker timing.

    Raises:
        ConfigError: the slides do not hold enough cells of a class.
    """
    rng = item_rng(cfg.seed, "crop_plan", 0)
    chosen: dict[int, Candidate] = {}
    taken: set[tuple[int, int, int]] = set()
    for fab_class in FAB_CLASSES:
        wanted = [j for j, c in enumerate(plan.crop_classes) if c == fab_class]
        if not wanted:
            continue
        queue: list[Candidate] = []
        for centred in (True, False):
            by_slide: dict[int, list[Candidate]] = {}
            for cand in candidates:
                if cand.kind == fab_class and cand.centred == centred:
                    by_slide.setdefault(cand.slide, []).append(cand)
            order = [sorted(by_slide)[k] for k in rng.permutation(len(by_slide))]
            rounds = max((len(v) for v in by_slide.values()), default=0)
            queue += [by_slide[s][r] for r in range(rounds) for s in order if r < len(by_slide[s])]
        picked = []
        for cand in queue:
            if len(picked) == len(wanted):
                break
            if (cand.slide, cand.x0, cand.y0) not in taken:
                taken.add((cand.slide, cand.x0, cand.y0))
                picked.append(cand)
        if len(picked) < len(wanted):
            raise ConfigError(
                f"synth.n_cells asks for {len(wanted)} {fab_class} crops but the slides hold {len(picked)} {fab_class} "
                f"cells with room for a {cfg.cell_crop_size_um:g} um crop around them: lower synth.n_cells, raise "
                "synth.n_slides or the slide size, or set synth.crops_from_slides: false"
            )
        chosen.update(zip(wanted, picked, strict=True))
    return [chosen[j] for j in range(len(plan.crop_classes))]


def _write_image(path: Path, rgb: np.ndarray, params: list[int]) -> None:
    # cv2 encodes BGR; our arrays are RGB.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")


def _write_mask(path: Path, mask: np.ndarray) -> None:
    if not cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def _row(item_kind: str, stem: str, patient_id: str, label: str, pixel_size_um: str, **extra: str) -> dict[str, str]:
    dirs = SLIDE_DIRS if item_kind == "slide" else CELL_DIRS
    row = {
        "path": f"{dirs['image']}/{stem}.{'jpg' if item_kind == 'slide' else 'tif'}",
        "kind": item_kind,
        "slide_id": stem,
        "patient_id": patient_id,
        "label": label,
        "mask_path": f"{dirs['mask']}/{stem}.png",
        "xyc_path": f"{SLIDE_DIRS['xyc']}/{stem}.xyc" if item_kind == "slide" else "",
        "pixel_size_um": pixel_size_um,
        "source_slide_id": "",
        "crop_x": "",
        "crop_y": "",
    }
    row.update(extra)
    return row


def _write_crop(root: Path, row: dict[str, str], image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    # Uncompressed like the originals: every TIFF reader opens it.
    _write_image(root / row["path"], image, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    _write_mask(root / row["mask_path"], mask)
    return row


@dataclass(frozen=True)
class _Written:
    """What rendering one item gave: its manifest row, box rows, blast count and crop candidates."""

    row: dict[str, str]
    boxes: list[dict[str, str]]
    blasts: int
    candidates: list[Candidate]


def _write_item(job: _Job, item: Item) -> _Written:
    """Render and write one slide (with its .xyc, mask and boxes) or one lone crop."""
    root = Path(job.root)
    rng = item_rng(job.seed, item.kind, item.index)
    patient = patient_of(job.seed, item.patient_index, job.params)
    if item.kind == "cell":
        drawn = render_cell_crop(rng, job.crop_size_um, item.fab_class, job.params, patient=patient)
        row = _row("cell", item.stem, item.patient_id, item.fab_class, f"{drawn.pixel_size_um:.8g}")
        return _Written(_write_crop(root, row, drawn.image, drawn.mask), [], 0, [])
    drawn = render_slide(rng, job.width, job.height, item.fab_class, job.params, patient, job.min_pixel_size_um)
    row = _row("slide", item.stem, item.patient_id, item.fab_class, f"{drawn.pixel_size_um:.8g}")
    jpeg, _ = jpeg_roundtrip(drawn.image, drawn.jpeg_quality)
    (root / row["path"]).write_bytes(jpeg)
    _write_mask(root / row["mask_path"], drawn.mask)
    (root / row["xyc_path"]).write_text(
        "".join(f"{int(round(c.cx))} {int(round(c.cy))}\n" for c in drawn.blasts), encoding="ascii"
    )
    boxes = [
        dict(zip(BOX_COLUMNS, (item.stem, *map(str, c.box), BOX_LABELS[c.kind]), strict=True)) for c in drawn.cells
    ]
    return _Written(row, boxes, len(drawn.blasts), crop_candidates(drawn, item.index, job.crop_size_um))


@dataclass(frozen=True)
class _CutCall:
    """Picklable: cut one slide's crops out of its written JPEG (what anyone reading the file sees)."""

    root: str

    def __call__(self, task: tuple[dict[str, str], list[tuple[int, str, Candidate]]]) -> list[dict[str, str]]:
        slide_row, crops = task
        root = Path(self.root)
        image = cv2.cvtColor(cv2.imread(str(root / slide_row["path"]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        slide_mask = cv2.imread(str(root / slide_row["mask_path"]), cv2.IMREAD_UNCHANGED)
        rows = []
        for index, fab_class, cand in crops:
            window = (slice(cand.y0, cand.y0 + cand.size), slice(cand.x0, cand.x0 + cand.size))
            # White cells never touch, so the mask's piece under the cell's centre is that cell alone.
            _, pieces = cv2.connectedComponents(slide_mask[window], connectivity=8)
            centre = pieces[int(round(cand.cy)) - cand.y0, int(round(cand.cx)) - cand.x0]
            mask = np.where((pieces == centre) & (centre > 0), 255, 0).astype(np.uint8)
            row = _row(
                "cell",
                _stem(index, fab_class),
                slide_row["patient_id"],
                fab_class,
                slide_row["pixel_size_um"],
                source_slide_id=slide_row["slide_id"],
                crop_x=str(cand.x0),
                crop_y=str(cand.y0),
            )
            rows.append(_write_crop(root, row, np.ascontiguousarray(image[window]), mask))
        return rows


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


def _expected_files(plan: Plan) -> set[str]:
    files = set()
    for item in plan.items:
        if item.kind == "slide":
            files |= {
                f"{SLIDE_DIRS[k]}/{item.stem}.{ext}" for k, ext in (("image", "jpg"), ("xyc", "xyc"), ("mask", "png"))
            }
    stems = [i.stem for i in plan.items if i.kind == "cell"] + [_stem(j, c) for j, c in enumerate(plan.crop_classes)]
    return files | {f for s in stems for f in (f"{CELL_DIRS['image']}/{s}.tif", f"{CELL_DIRS['mask']}/{s}.png")}


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

    Raises:
        ConfigError: the slides do not hold enough cells to cut ``cfg.n_cells`` crops from.
    """
    root = Path(output if output is not None else cfg.output)
    for folder in {*SLIDE_DIRS.values(), *CELL_DIRS.values()}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    plan = plan_items(cfg)
    _remove_stale(root, _expected_files(plan))
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
    tracker = _Progress(len(plan.items), progress)
    workers = min(cfg.workers, len(plan.items))
    # spawn, not fork: the caller may hold threads (Spark's py4j gateway, OpenCV's pool) that fork would copy
    # half-alive. Items are independent, so unordered completion is fine; rows are put back in order below.
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) if workers > 1 else None
    try:
        results: dict[tuple[str, int], _Written] = {}
        calls = (
            pool.imap_unordered(_RenderCall(job), plan.items, chunksize=1)
            if pool
            else map(_RenderCall(job), plan.items)
        )
        for key, written in calls:
            results[key] = written
            tracker.advance()
        written = [results[(item.kind, item.index)] for item in plan.items]
        slide_rows = [w.row for w in written if w.row["kind"] == "slide"]
        cell_rows = [w.row for w in written if w.row["kind"] == "cell"]
        if plan.crop_classes:
            chosen = choose_crops(cfg, plan, [c for w in written for c in w.candidates])
            tasks: dict[int, list[tuple[int, str, Candidate]]] = {}
            for j, (fab_class, cand) in enumerate(zip(plan.crop_classes, chosen, strict=True)):
                tasks.setdefault(cand.slide, []).append((j, fab_class, cand))
            work = [(slide_rows[i], crops) for i, crops in sorted(tasks.items())]
            cut = pool.map(_CutCall(str(root)), work) if pool else [_CutCall(str(root))(w) for w in work]
            cell_rows = sorted((r for rows in cut for r in rows), key=lambda r: int(r["slide_id"][2:-2]))
    finally:
        if pool:
            pool.close()
            pool.join()
    rows = [{**row, "site": cfg.site} for row in slide_rows + cell_rows]  # column order: MANIFEST_COLUMNS
    _write_csv(root / "manifest.csv", MANIFEST_COLUMNS, rows)
    boxes = [b for w in written for b in w.boxes]
    _write_csv(root / "boxes.csv", BOX_COLUMNS, boxes)
    # what the generator wrote, hashed: ingest allows the public demo patient key for these files only
    written_files = _expected_files(plan) | {"manifest.csv", "boxes.csv"}
    write_synthetic_marker(root, [f for f in written_files if (root / f).is_file()])
    seconds = time.perf_counter() - start
    slides = Counter(r["label"] for r in slide_rows)
    cells = Counter(r["label"] for r in cell_rows)
    sizes = [float(r["pixel_size_um"]) for r in slide_rows + cell_rows] or [0.0]
    return SynthSummary(
        output=str(root),
        manifest_path=str(root / "manifest.csv"),
        boxes_path=str(root / "boxes.csv"),
        slides_per_class={c: slides.get(c, 0) for c in FAB_CLASSES},
        cells_per_class={c: cells.get(c, 0) for c in FAB_CLASSES},
        blasts_on_slides=sum(w.blasts for w in written),
        boxes=len(boxes),
        pixel_size_range=(min(sizes), max(sizes)),
        seconds=seconds,
        rate=(len(slide_rows) + len(cell_rows)) / seconds if seconds > 0 else 0.0,
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

    def __call__(self, item: Item) -> tuple[tuple[str, int], _Written]:
        return (item.kind, item.index), _write_item(self.job, item)
