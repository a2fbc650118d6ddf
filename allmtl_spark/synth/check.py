"""Does the synthetic data set carry its class in morphology rather than colour? (``allmtl synth --check``)

For every slide of the configured data set (rendered in memory, exactly as ``write_dataset`` would)
this takes the slide's four largest white cells, as the classifier's montage does, and measures
two things from the rendered pixels and the ground-truth cell masks:

- colour only: per-channel histograms of the cells' pixels (no shape, no size);
- morphology only: per-cell features in micrometres (nucleus area, nucleus/cell area ratio,
  nucleus irregularity (deepest notch / radius), number of vacuoles), mean and maximum over the cells.

Each feature set feeds the same logistic regression under the same patient-grouped stratified
k-fold cross-validation (``evaluation.colour_baseline``). A data set whose class lives in the
lymphoid cells' shape scores near chance on colour and high on morphology.

With ``crops_from_slides`` it does the same for the single-cell crops stage 2 trains on (blast vs
lymphocyte): the crops ``write_dataset`` would cut (same choice of cells), colour of the cropped
cell's pixels against its morphology.

Given the classifier's view (``ClassifierView``: the segmenter's resolution, the montage's tile size,
grid and input size) it also builds each slide's montage from the ground-truth cells as the training
job would, and scores three shape-blind feature sets on it: colour with the cells' rims (which the
resize blends with the black backdrop, so their share tells cell size), colour of the cells' inner
pixels only (what the evaluation's colour-only baseline uses) and the cells' areas alone.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from allmtl_spark.config.schema import SynthConfig
from allmtl_spark.evaluation.colour_baseline import (
    CrossValidatedAccuracy,
    colour_histograms,
    compute_grouped_cv_accuracy,
    nonblack,
)
from allmtl_spark.synth.smear import SyntheticSlide

if TYPE_CHECKING:
    from allmtl_spark.synth.dataset import Candidate, Plan

CELLS_PER_SLIDE = 4  # the classifier's montage shows the slide's four largest cells (a 2x2 grid)
MORPHOLOGY_FEATURES = ("nucleus_area_um2", "nucleus_cell_ratio", "nucleus_irregularity", "vacuoles")


@dataclass(frozen=True)
class CellFeatures:
    """Morphology of one white cell measured from its pixels, in physical units.

    Attributes:
        cell_area_um2: area of the cell mask.
        nucleus_area_um2: area of the nucleus (the cell's pixels dense in nuclear stain).
        nucleus_cell_ratio: nucleus area / cell area.
        nucleus_irregularity: deepest notch of the nucleus outline / its radius (``nucleus_irregularity``).
        vacuoles: clear round spots in the cell, 0.15-4 um^2 each.
    """

    cell_area_um2: float
    nucleus_area_um2: float
    nucleus_cell_ratio: float
    nucleus_irregularity: float
    vacuoles: int

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in MORPHOLOGY_FEATURES], np.float64)


def glass_level(image: np.ndarray) -> np.ndarray:
    """Brightness of clear glass per channel: the 95th percentile of each channel, float (3,)."""
    return np.percentile(image.reshape(-1, 3), 95, axis=0).astype(np.float64)


def measure_cell(image: np.ndarray, cell_mask: np.ndarray, pixel_size_um: float, glass: np.ndarray) -> CellFeatures:
    """Measure one white cell's morphology from the RGB pixels inside its mask.

    The nucleus is the part of the cell dense in nuclear stain: optical density in green against
    the glass (nuclear stain absorbs green, basophilic cytoplasm much less), split by Otsu's
    threshold inside the cell. Vacuoles are spots inside the cell much clearer than the cytoplasm.

    Args:
        image: HxWx3 uint8 RGB (a slide or a crop).
        cell_mask: HxW, nonzero on the cell.
        pixel_size_um: micrometres per pixel of ``image``.
        glass: float (3,) RGB level of clear glass (``glass_level``).

    Returns:
        The cell's ``CellFeatures``.
    """
    ys, xs = np.nonzero(cell_mask)
    if len(xs) == 0:
        raise ValueError("the cell mask is empty")
    pad = 3
    y0, y1 = max(0, ys.min() - pad), min(image.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(image.shape[1], xs.max() + pad + 1)
    cell = np.asarray(cell_mask[y0:y1, x0:x1]) > 0
    rgb = image[y0:y1, x0:x1].astype(np.float32)
    sigma = max(0.5, 0.12 / pixel_size_um)
    smooth = cv2.GaussianBlur(rgb, (0, 0), sigma)
    od = -np.log(np.clip(smooth + 1.0, 1.0, None) / (glass.astype(np.float32) + 1.0))
    od_green = od[..., 1]
    # Nuclear stain absorbs green more than red, basophilic cytoplasm red more than green: their difference
    # splits nucleus from cytoplasm whatever the stain's strength (Otsu's threshold inside the cell).
    split = np.clip(od_green - od[..., 0], -1.0, 1.0)
    scaled = np.round((split[cell] + 1.0) * 127.5).astype(np.uint8)
    threshold, _ = cv2.threshold(scaled.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    nucleus = cell & (split > threshold / 127.5 - 1.0)
    nucleus = cv2.morphologyEx(nucleus.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Pale nucleoli and vacuoles over the nucleus are holes in it, not part of its outline: fill them.
    contours, _ = cv2.findContours(nucleus, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    nucleus = cv2.drawContours(np.zeros_like(nucleus), contours, -1, 1, thickness=-1).astype(bool) & cell
    area_px = float(cell.sum())
    nucleus_px = float(nucleus.sum())
    irregularity = nucleus_irregularity(nucleus)
    # Vacuoles: inside the cell (away from its edge), clearer than 40% of the cytoplasm's density.
    edge = max(1, int(round(0.4 / pixel_size_um)))
    inner = cv2.erode(cell.astype(np.uint8), np.ones((2 * edge + 1, 2 * edge + 1), np.uint8)).astype(bool)
    cytoplasm = inner & ~nucleus
    vacuoles = 0
    if cytoplasm.sum() > 10:
        clear = inner & (od_green < 0.4 * float(np.median(od_green[cytoplasm])))
        n, _, stats, _ = cv2.connectedComponentsWithStats(clear.astype(np.uint8), connectivity=8)
        areas_um2 = stats[1:, cv2.CC_STAT_AREA] * pixel_size_um**2
        vacuoles = int(((areas_um2 >= 0.15) & (areas_um2 <= 4.0)).sum())
    return CellFeatures(
        cell_area_um2=area_px * pixel_size_um**2,
        nucleus_area_um2=nucleus_px * pixel_size_um**2,
        nucleus_cell_ratio=nucleus_px / area_px,
        nucleus_irregularity=irregularity,
        vacuoles=vacuoles,
    )


def nucleus_irregularity(nucleus: np.ndarray) -> float:
    """How far a nucleus is from a convex blob: the deepest notch of its outline over its equivalent radius.

    A round or oval nucleus scores about 0-0.1, a cleft one 0.3 and more; a nucleus in separate
    lobes (of at least a tenth of its area each) scores at least 1.

    Args:
        nucleus: HxW bool mask of one cell's nucleus.

    Returns:
        The irregularity, >= 0 (0 for an empty mask).
    """
    area = float(nucleus.sum())
    if area == 0:
        return 0.0
    radius = np.sqrt(area / np.pi)
    contours, _ = cv2.findContours(nucleus.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    lobes = [c for c in contours if cv2.contourArea(c) >= 0.1 * area]
    deepest = 0.0
    for contour in lobes:
        if len(contour) < 4:
            continue
        hull = cv2.convexHull(contour, returnPoints=False)
        try:
            defects = cv2.convexityDefects(contour, hull)
        except cv2.error:  # a self-touching outline: no defects to read
            defects = None
        if defects is not None:
            deepest = max(deepest, float(defects[:, 0, 3].max()) / 256.0)
    return deepest / radius + (1.0 if len(lobes) > 1 else 0.0)


@dataclass(frozen=True)
class ClassifierView:
    """How the training job shows a slide to the classifier (``train.slide_view: montage``).

    Attributes:
        pixel_size_um: the segmenter's working resolution (``segmenter.pixel_size_um``): cells are cut there.
        tile_um: side of a cell's tile (``train.cell_tile_um``).
        grid: tiles per side (``train.montage_grid``).
        input_size: the montage's side in pixels (``train.input_size``).
    """

    pixel_size_um: float
    tile_um: float
    grid: int
    input_size: int


@dataclass(frozen=True)
class ViewMeasures:
    """Shape-blind features of one slide's montage (``classifier_view``)."""

    colour_with_rims: np.ndarray  # float (3 * bins,): every non-black pixel
    colour: np.ndarray  # float (3 * bins,): the cells' inner pixels (``interior``)
    areas_um2: np.ndarray  # float (grid * grid,): each tile's cell area, largest cell first


def classifier_view(slide: SyntheticSlide, view: ClassifierView) -> np.ndarray:
    """The montage the training job would build from the slide's ground-truth cells (HxWx3 uint8 RGB).

    The slide goes to the working resolution, its ``grid * grid`` largest white cells (by area there)
    are isolated on black by their masks, cut ``tile_um`` wide around their centres and tiled into an
    ``input_size`` square (``training.views.montage``).
    """
    from allmtl_spark.training.views import montage

    factor = slide.pixel_size_um / view.pixel_size_um
    height, width = slide.image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = cv2.resize(slide.image, size, interpolation=cv2.INTER_AREA)
    labels = cv2.resize(slide.labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int64)
    areas = np.bincount(labels.ravel(), minlength=len(slide.cells) + 1)[1:]
    order = [int(i) for i in np.argsort(-areas, kind="stable")[: view.grid**2] if areas[i] > 0]
    side = max(2, round(view.tile_um / view.pixel_size_um))
    tiles = []
    for i in order:
        isolated = np.where((labels == i + 1)[..., None], image, np.uint8(0))
        padded = cv2.copyMakeBorder(isolated, side, side, side, side, cv2.BORDER_CONSTANT, value=0)
        x0 = round(slide.cells[i].cx * factor) + side - side // 2
        y0 = round(slide.cells[i].cy * factor) + side - side // 2
        tiles.append(padded[y0 : y0 + side, x0 : x0 + side])
    return montage(tiles, view.grid, view.input_size)


def measure_view(picture: np.ndarray, view: ClassifierView, bins: int = 16) -> ViewMeasures:
    """Colour with and without the cells' rims, and each tile's cell area in um^2, of one montage.

    The inner colour and the areas are the evaluation's own baseline features (``evaluation.baselines``),
    so the check scores exactly what those baselines are fitted on.
    """
    from allmtl_spark.evaluation.baselines import colour_features, size_features

    return ViewMeasures(
        colour_with_rims=colour_histograms([picture], [nonblack(picture)], bins)[0],
        colour=colour_features(picture[None], bins)[0],
        areas_um2=size_features(picture[None], grid=view.grid)[0] * view.tile_um**2,
    )


def largest_cells(slide: SyntheticSlide, n: int = CELLS_PER_SLIDE) -> list[int]:
    """Indices into ``slide.cells`` of its ``n`` largest white cells by mask area (any kind, as the classifier sees)."""
    areas = np.bincount(slide.labels.ravel(), minlength=len(slide.cells) + 1)[1:]
    return [int(i) for i in np.argsort(-areas, kind="stable")[:n] if areas[i] > 0]


@dataclass(frozen=True)
class CropMeasures:
    """Colour and morphology of one lymphoid cell a crop can be cut around (``dataset.Candidate``)."""

    candidate: Candidate
    colour: np.ndarray  # float (3 * bins,): the cell's pixels only
    morphology: np.ndarray  # float (len(MORPHOLOGY_FEATURES),)


@dataclass(frozen=True)
class SlideMeasures:
    """What the check needs from one slide: class, patient, colour histogram and morphology features.

    ``crops`` holds the measures of every cell of the slide a crop could be cut around (empty
    unless asked for).
    """

    label: str
    patient_id: str
    colour: np.ndarray  # float (3 * bins,)
    morphology: np.ndarray  # float (2 * len(MORPHOLOGY_FEATURES),): mean then max over the cells
    crops: tuple[CropMeasures, ...] = ()
    view: ViewMeasures | None = None


def measure_slide(
    slide: SyntheticSlide,
    patient_id: str,
    bins: int = 16,
    candidates: Sequence[Candidate] = (),
    view: ClassifierView | None = None,
) -> SlideMeasures:
    """Colour histogram and morphology features of a slide's four largest white cells (and of its crop candidates).

    Args:
        slide: a rendered slide.
        patient_id: its patient.
        bins: histogram bins per channel.
        candidates: cells of this slide a crop could be cut around (``dataset.crop_candidates``): each
            is measured alone, as the crop cut around it shows it.
        view: also measure the classifier's montage of the slide (``classifier_view``); None skips it.
    """
    chosen = largest_cells(slide)
    masks = [slide.labels == i + 1 for i in chosen]
    colour = colour_histograms([[slide.image] * len(masks)], [masks], bins)[0]
    glass = glass_level(slide.image)
    per_cell = np.array([measure_cell(slide.image, m, slide.pixel_size_um, glass).vector() for m in masks])
    if len(per_cell) == 0:
        per_cell = np.zeros((1, len(MORPHOLOGY_FEATURES)))
    index = {(c.cx, c.cy): i for i, c in enumerate(slide.cells)}
    crops = []
    for cand in candidates:
        mask = slide.labels == index[(cand.cx, cand.cy)] + 1
        crops.append(
            CropMeasures(
                cand,
                colour_histograms([slide.image], [mask], bins)[0],
                measure_cell(slide.image, mask, slide.pixel_size_um, glass).vector(),
            )
        )
    return SlideMeasures(
        slide.fab_class,
        patient_id,
        colour,
        np.concatenate([per_cell.mean(0), per_cell.max(0)]),
        tuple(crops),
        measure_view(classifier_view(slide, view), view, bins) if view is not None else None,
    )


@dataclass(frozen=True)
class CheckReport:
    """Colour-only vs morphology-only accuracy on a synthetic data set (see the module docstring)."""

    colour_fab4: CrossValidatedAccuracy
    colour_binary: CrossValidatedAccuracy
    morphology_fab4: CrossValidatedAccuracy
    morphology_binary: CrossValidatedAccuracy
    colour_fab4_by_slide: CrossValidatedAccuracy  # the same, split by slide instead of patient
    same_patient_neighbour: float  # share of slides whose nearest colour neighbour is a slide of their patient
    neighbour_chance: float  # the same for a random neighbour
    n_slides: int
    seconds: float
    # The crops stage 2 trains on, blast vs lymphocyte (None without crops_from_slides or crops).
    crop_colour: CrossValidatedAccuracy | None = None
    crop_morphology: CrossValidatedAccuracy | None = None
    # The classifier's montages (None without a ClassifierView): shape-blind features, 4 classes / binary.
    view: ClassifierView | None = None
    view_colour_with_rims: CrossValidatedAccuracy | None = None
    view_colour_fab4: CrossValidatedAccuracy | None = None
    view_colour_binary: CrossValidatedAccuracy | None = None
    view_size_fab4: CrossValidatedAccuracy | None = None
    view_size_binary: CrossValidatedAccuracy | None = None

    def format(self) -> str:
        crops = []
        if self.crop_colour is not None and self.crop_morphology is not None:
            crops = [
                f"  the {self.crop_colour.n_items} crops (stage 2: blast vs lymphocyte), the cropped cell alone:",
                "  " + self.crop_colour.format("colour only, crops        "),
                "  " + self.crop_morphology.format("morphology (um), crops    "),
            ]
        views = []
        if self.view is not None and self.view_colour_fab4 is not None:
            v = self.view
            views = [
                f"  the classifier's input ({v.grid}x{v.grid} montage of {v.tile_um:g} um tiles, {v.input_size} px; "
                f"cells cut at {v.pixel_size_um:g} um/px by their ground-truth masks):",
                "  " + self.view_colour_with_rims.format("colour, rims in, 4 classes"),
                "  " + self.view_colour_fab4.format("colour only, 4 classes    "),
                "  " + self.view_colour_binary.format("colour only, binary       "),
                "  " + self.view_size_fab4.format("cell areas only, 4 classes"),
                "  " + self.view_size_binary.format("cell areas only, binary   "),
                "  (rims in: the cells' outer pixels, blended with the black backdrop by the resize, count too;"
                " their share tells cell size)",
            ]
        return "\n".join(
            [
                f"synth check: {self.n_slides} slides, their {CELLS_PER_SLIDE} largest white cells each, "
                f"logistic regression, patient-grouped stratified CV ({self.seconds:.0f} s)",
                "  " + self.colour_fab4.format("colour only, 4 classes    "),
                "  " + self.morphology_fab4.format("morphology (um), 4 classes"),
                "  " + self.colour_binary.format("colour only, binary       "),
                "  " + self.morphology_binary.format("morphology (um), binary   "),
                "  " + self.colour_fab4_by_slide.format("colour only, 4 classes, split by slide, not patient"),
                f"  a slide's nearest colour neighbour is of its own patient: {self.same_patient_neighbour:.2f} "
                f"(random: {self.neighbour_chance:.3f}): split by patient, not by slide",
                *crops,
                *views,
            ]
        )


def same_patient_neighbour(features: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """How often an item's nearest neighbour (Euclidean, standardised features) belongs to its own group.

    Args:
        features: float (n, d).
        groups: n group ids (patients).

    Returns:
        (share of items whose nearest other item is of their group, the share expected at random),
        counting only items whose group has another item.
    """
    x = np.asarray(features, np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    groups = np.asarray(groups)
    sizes = {g: int((groups == g).sum()) for g in np.unique(groups)}
    has_mate = np.array([sizes[g] > 1 for g in groups])
    if not has_mate.any():
        return 0.0, 0.0
    hits = groups[np.argmin(d, axis=1)] == groups
    chance = np.mean([(sizes[g] - 1) / (len(groups) - 1) for g in groups[has_mate]])
    return float(hits[has_mate].mean()), float(chance)


@dataclass(frozen=True)
class _MeasureCall:
    """Picklable: render one planned slide in memory and measure it."""

    cfg: SynthConfig
    crops: bool
    view: ClassifierView | None = None

    def __call__(self, item) -> SlideMeasures:
        from allmtl_spark.synth.dataset import crop_candidates, render_item

        slide = render_item(item, self.cfg)
        candidates = crop_candidates(slide, item.index, self.cfg.cell_crop_size_um) if self.crops else []
        return measure_slide(slide, item.patient_id, candidates=candidates, view=self.view)


def measure_slides(
    cfg: SynthConfig,
    progress: Callable[[str], object] | None = None,
    crops: bool = False,
    view: ClassifierView | None = None,
) -> list[SlideMeasures]:
    """Render the configured data set's slides in memory (exactly as ``write_dataset`` would) and measure each.

    Args:
        cfg: the synth section.
        progress: called with a line before the work starts; None for silence.
        crops: also measure every cell of each slide a crop could be cut around (``SlideMeasures.crops``).
        view: also measure each slide's montage as the classifier sees it (``SlideMeasures.view``).
    """
    from allmtl_spark.synth.dataset import plan_items

    items = [i for i in plan_items(cfg).items if i.kind == "slide"]
    if progress:
        progress(f"synth check: rendering and measuring {len(items)} slides with {cfg.workers} worker(s) ...")
    call = _MeasureCall(cfg, crops, view)
    if cfg.workers <= 1:
        return [call(i) for i in items]
    with multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return pool.map(call, items, chunksize=4)


def chosen_crops(cfg: SynthConfig, plan: Plan, measures: Sequence[SlideMeasures]) -> list[tuple[CropMeasures, str]]:
    """The measures of the crops ``write_dataset`` would cut, in file order, each with its patient.

    The same seeded choice (``dataset.choose_crops``) among the same candidates in the same order.

    Args:
        cfg: the synth section.
        plan: ``dataset.plan_items(cfg)``.
        measures: the slides' measures in plan order, taken with ``crops=True``.

    Raises:
        ConfigError: the slides do not hold enough cells for ``cfg.n_cells`` crops (as ``write_dataset``).
    """
    from allmtl_spark.synth.dataset import choose_crops

    measured = {c.candidate: (c, m.patient_id) for m in measures for c in m.crops}
    return [measured[c] for c in choose_crops(cfg, plan, [c.candidate for m in measures for c in m.crops])]


def run_check(
    cfg: SynthConfig,
    folds: int = 5,
    repeats: int = 2,
    progress: Callable[[str], object] | None = print,
    view: ClassifierView | None = None,
) -> CheckReport:
    """Render the configured data set's slides in memory and compare colour-only with morphology-only accuracy.

    Args:
        cfg: the synth section. Its slides are rendered exactly as ``write_dataset`` renders them, and
            its crops chosen as it chooses them; both are measured before the slides' JPEG step.
        folds, repeats: the cross-validation.
        progress: called with a line before the work starts; None for silence.
        view: also score shape-blind features of the classifier's montages (``ClassifierView``); None skips it.

    Returns:
        A ``CheckReport``.
    """
    import time

    from allmtl_spark.synth.dataset import plan_items

    start = time.perf_counter()
    plan = plan_items(cfg)
    with_crops = cfg.crops_from_slides and bool(plan.crop_classes)
    measures = measure_slides(cfg, progress, crops=with_crops, view=view)
    labels = np.array([m.label for m in measures])
    binary = np.where(labels == "normal", "normal", "ALL")
    groups = np.array([m.patient_id for m in measures])
    colour = np.stack([m.colour for m in measures])
    morphology = np.stack([m.morphology for m in measures])

    def cv(features, y, g):
        return compute_grouped_cv_accuracy(features, y, g, folds=folds, repeats=repeats, seed=cfg.seed)

    neighbour, chance = same_patient_neighbour(colour, groups)
    crop_colour = crop_morphology = None
    if with_crops:
        chosen = chosen_crops(cfg, plan, measures)
        crop_labels = np.array(["normal" if c.candidate.kind == "normal" else "blast" for c, _ in chosen])
        crop_groups = np.array([patient for _, patient in chosen])
        crop_colour = cv(np.stack([c.colour for c, _ in chosen]), crop_labels, crop_groups)
        crop_morphology = cv(np.stack([c.morphology for c, _ in chosen]), crop_labels, crop_groups)
    views = {}
    if view is not None:
        rims = np.stack([m.view.colour_with_rims for m in measures])
        inner = np.stack([m.view.colour for m in measures])
        areas = np.stack([m.view.areas_um2 for m in measures])
        views = {
            "view_colour_with_rims": cv(rims, labels, groups),
            "view_colour_fab4": cv(inner, labels, groups),
            "view_colour_binary": cv(inner, binary, groups),
            "view_size_fab4": cv(areas, labels, groups),
            "view_size_binary": cv(areas, binary, groups),
        }
    return CheckReport(
        colour_fab4=cv(colour, labels, groups),
        colour_binary=cv(colour, binary, groups),
        morphology_fab4=cv(morphology, labels, groups),
        morphology_binary=cv(morphology, binary, groups),
        colour_fab4_by_slide=cv(colour, labels, np.arange(len(labels))),
        same_patient_neighbour=neighbour,
        neighbour_chance=chance,
        n_slides=len(measures),
        seconds=time.perf_counter() - start,
        crop_colour=crop_colour,
        crop_morphology=crop_morphology,
        view=view,
        **views,
    )
