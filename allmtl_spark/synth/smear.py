"""Whole synthetic blood smears (like ALL-IDB1) and single-cell crops (like ALL-IDB2), at a physical scale.

A scene is composed in stain-concentration space (``stain.py``): white cells first, red cells
and platelets around them, the lamp field, then one Beer-Lambert render to RGB. Every size is
in micrometres; a slide is rendered at its own pixel size (micrometres per pixel), drawn from
``SmearParams.pixel_size_um``.

A patient (``Patient``) fixes the stain, the mean red-cell size and random effects on the white
cells' morphology; their slides share them. The stain, optics and pixel size are drawn before
anything that depends on the class, so colour and scale carry no class information; the class
lives only in the lymphoid cells' morphology (``cells.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.config.schema import SmearParams
from allmtl_spark.synth.cells import (
    LYMPHOID_KINDS,
    MAX_LYMPHOID_DIAMETER_UM,
    MAX_WHITE_DIAMETER_UM,
    MORPHOLOGY,
    OTHER_SPRITES,
    CellLook,
    Sprite,
    lymphoid_sprite,
    platelet_sprite,
    red_cell_sprite,
)
from allmtl_spark.synth.stain import (
    BASO,
    EOSIN,
    HAEM,
    N_STAINS,
    Optics,
    Session,
    compose_rgb,
    illumination_field,
    sample_optics,
    sample_session,
)

__all__ = [
    "CellRecord",
    "Patient",
    "SmearParams",
    "SyntheticSlide",
    "draw_patient",
    "draw_pixel_size",
    "render_cell_crop",
    "render_slide",
]

FAB_CLASSES = LYMPHOID_KINDS  # a slide's class is the kind of its blasts, or "normal"
_RBC_BANK = 40  # distinct red-cell sprites per slide; more buys nothing visible
_PLATELET_BANK = 12
_WHITE_GAP_UM = 1.5  # white cells never touch each other
_HEX_DENSITY = np.pi / (2.0 * np.sqrt(3.0))  # share of the plane discs on a touching hexagonal lattice cover


@dataclass(frozen=True, eq=False)
class Patient:
    """What a patient's slides share.

    Attributes:
        session: the stain batch and camera session of the patient's slides (``stain.sample_session``).
        rbc_diameter_um: the patient's mean red-cell diameter.
        look: random effects on white-cell size, nucleus ratio and stain uptake.
    """

    session: Session
    rbc_diameter_um: float
    look: CellLook


def draw_patient(rng: np.random.Generator, params: SmearParams) -> Patient:
    """Draw one patient's stain and camera session, red-cell size and morphology random effects (class-blind).

    Args:
        rng: the patient's own generator.
        params: drawing parameters; ``patient_effects`` scales the morphology effects (0: none).

    Returns:
        The ``Patient``.
    """
    session = sample_session(rng, params.stain, params.optics)
    rbc = float(rng.uniform(*params.rbc_diameter_um))
    e = params.patient_effects
    z = rng.standard_normal(4)
    look = CellLook(
        size=float(np.exp(np.clip(0.06 * e * z[0], -0.15, 0.15))),  # bounded: a lymphoid cell stays <= 25 um
        nucleus_ratio=float(0.025 * e * z[1]),
        chromatin=float(np.exp(0.12 * e * z[2])),
        cytoplasm=float(np.exp(0.2 * e * z[3])),
    )
    return Patient(session=session, rbc_diameter_um=rbc, look=look)


@dataclass(frozen=True)
class CellRecord:
    """One white cell on a rendered image.

    Attributes:
        kind: a ``cells.WHITE_KINDS`` name (``normal`` is a mature lymphocyte).
        cx, cy: centre in pixels.
        radius: mean radius of the outline in pixels.
        is_blast: an ``L1``/``L2``/``L3`` cell.
        box: (xmin, ymin, xmax, ymax) of the cell's mask, 0-based pixels, max inclusive.
    """

    kind: str
    cx: float
    cy: float
    radius: float
    is_blast: bool
    box: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """A rendered smear or crop.

    Attributes:
        image: uint8 HxWx3 RGB.
        mask: uint8 HxW, 255 on white cells (cytoplasm included), 0 elsewhere.
        labels: uint16 HxW, ``i + 1`` on the pixels of ``cells[i]``, 0 elsewhere.
        cells: the white cells, in drawing order.
        fab_class: ``normal``, ``L1``, ``L2`` or ``L3``.
        pixel_size_um: micrometres per pixel the image was rendered at.
        jpeg_quality: the JPEG quality the slide's optics call for.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    cells: list[CellRecord]
    fab_class: str
    pixel_size_um: float
    jpeg_quality: int = 95

    @property
    def blasts(self) -> list[CellRecord]:
        """The blast records, whose centres go into the ``.xyc`` file."""
        return [c for c in self.cells if c.is_blast]


def _check_class(fab_class: str) -> None:
    if fab_class not in FAB_CLASSES:
        raise ValueError(f"unknown class {fab_class!r}; allowed: {', '.join(FAB_CLASSES)}")


def _paste(dst: np.ndarray, patch: np.ndarray, x0: int, y0: int, combine=np.add) -> None:
    """Combine ``patch`` into ``dst`` with its top-left corner at (x0, y0), clipped to ``dst``."""
    h, w = dst.shape[:2]
    ph, pw = patch.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if xa >= xb or ya >= yb:
        return
    region = dst[ya:yb, xa:xb]
    combine(region, patch[ya - y0 : yb - y0, xa - x0 : xb - x0], out=region)


def draw_pixel_size(rng: np.random.Generator, params: SmearParams, min_pixel_size_um: float = 0.0) -> float:
    """Draw a slide's micrometres per pixel uniformly from ``params.pixel_size_um``, never below ``min_pixel_size_um``.

    The floor comes from what must fit in the frame (the largest white cell, the crops); it is
    the same for every slide of a data set, so the scale never depends on (or reveals) the class.
    When the floor is above the range, the floor is used.
    """
    low, high = params.pixel_size_um
    low = max(low, min_pixel_size_um)
    return float(rng.uniform(low, high)) if high > low else float(low)


def fit_pixel_size_um(width: int, height: int) -> float:
    """The smallest micrometres per pixel at which the largest white cell fits in a ``width`` x ``height`` frame."""
    return MAX_WHITE_DIAMETER_UM / (0.9 * min(width, height))


def _place_white_cells(
    rng: np.random.Generator, sprites: list[tuple[str, Sprite]], width: int, height: int, gap: float
) -> list[tuple[str, Sprite, int, int]]:
    """Put white cells fully inside the frame without touching each other; drop any that will not fit."""
    placed: list[tuple[str, Sprite, int, int]] = []
    for kind, sprite in sprites:
        r = sprite.radius * 1.15
        x_lo, y_lo, x_hi, y_hi = r + 1.0, r + 1.0, width - r - 1.0, height - r - 1.0
        if x_lo > x_hi or y_lo > y_hi:
            continue
        for _ in range(150):
            cx, cy = rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)
            if all(
                np.hypot(cx - (x0 + s.centre[0]), cy - (y0 + s.centre[1])) > r + s.radius * 1.15 + gap
                for _, s, x0, y0 in placed
            ):
                placed.append((kind, sprite, int(round(cx - sprite.centre[0])), int(round(cy - sprite.centre[1]))))
                break
    return placed


def _lattice_positions(
    rng: np.random.Generator, width: int, height: int, spacing: float, keep: float, margin: float
) -> np.ndarray:
    """Red-cell centres: a rotated, jittered hexagonal lattice thinned by a smooth density field.

    ``keep`` near 1 with ``spacing`` below the red-cell diameter gives a touching monolayer with
    overlaps; lower ``keep`` gives a dispersed field whose density drifts across the frame, as
    from the thick to the thin end of a smear.

    Returns:
        float (n, 2) array of (x, y) pixel positions, some outside the frame by up to ``margin``.
    """
    half = 0.5 * np.hypot(width + 2 * margin, height + 2 * margin)
    dy = spacing * np.sqrt(3.0) / 2.0
    ys = np.arange(-half, half + dy, dy)
    xs = np.arange(-half, half + spacing, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2.0
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    angle = rng.uniform(0.0, np.pi / 3.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + np.array([width / 2.0, height / 2.0])
    pts += rng.normal(0.0, spacing * (0.1 + 0.3 * (1.0 - keep)), size=pts.shape)
    inside = (
        (pts[:, 0] > -margin) & (pts[:, 0] < width + margin) & (pts[:, 1] > -margin) & (pts[:, 1] < height + margin)
    )
    pts = pts[inside]
    field = cv2.resize(rng.standard_normal((4, 5)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC)
    fx = np.clip((pts[:, 0] + margin) / (width + 2 * margin) * 63, 0, 63).astype(int)
    fy = np.clip((pts[:, 1] + margin) / (height + 2 * margin) * 63, 0, 63).astype(int)
    p = np.clip(keep * (1.0 + 0.3 * field[fy, fx]), 0.0, 1.0)
    return pts[rng.uniform(size=len(pts)) < p]


def _render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    optics: Optics,
    pixel_size_um: float,
    patient: Patient,
    coverage: float,
    white: list[tuple[str, Sprite, int, int]],
    params: SmearParams,
    fab_class: str,
) -> SyntheticSlide:
    """Red cells and platelets around the placed white cells, then the render to RGB."""
    px_per_um = 1.0 / pixel_size_um
    # Planar (4xHxW) so each stain plane is contiguous: thousands of small adds are the hot loop.
    stains = np.zeros((N_STAINS, height, width), dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.uint16)
    cells: list[CellRecord] = []
    centres = np.array([[x0 + s.centre[0], y0 + s.centre[1], s.radius] for _, s, x0, y0 in white], np.float32)
    for i, (kind, sprite, x0, y0) in enumerate(white):
        for k in range(N_STAINS):
            if sprite.conc[k].any():
                _paste(stains[k], sprite.conc[k], x0, y0)
        ids = np.where(sprite.mask > 0, np.uint16(i + 1), np.uint16(0))
        _paste(labels, ids, x0, y0, combine=np.maximum)
        ys, xs = np.nonzero(sprite.mask)
        box = (
            max(0, x0 + int(xs.min())),
            max(0, y0 + int(ys.min())),
            min(width - 1, x0 + int(xs.max())),
            min(height - 1, y0 + int(ys.max())),
        )
        cx, cy = x0 + sprite.centre[0], y0 + sprite.centre[1]
        cells.append(
            CellRecord(
                kind=kind,
                cx=float(cx),
                cy=float(cy),
                radius=sprite.radius,
                is_blast=kind in ("L1", "L2", "L3"),
                box=box,
            )
        )

    def away_from_white(pts: np.ndarray, keep_out: float) -> np.ndarray:
        # White cells push red cells and platelets aside: drop points closer than keep_out to one's outline.
        if len(centres) and len(pts):
            d = np.hypot(pts[:, None, 0] - centres[None, :, 0], pts[:, None, 1] - centres[None, :, 1])
            pts = pts[np.all(d > centres[None, :, 2] + keep_out, axis=1)]
        return pts

    rbc_diameter = patient.rbc_diameter_um * px_per_um
    rbc_radius = rbc_diameter / 2.0
    # Lattice step in red-cell diameters (below 1, neighbours overlap), tightened where the coverage asks for
    # more cells than a touching lattice holds: a dense monolayer is a packed, overlapping one.
    spacing = min(rng.uniform(0.82, 1.0), float(np.sqrt(_HEX_DENSITY / max(coverage, 1e-3))))
    keep = min(1.0, coverage * spacing**2 / _HEX_DENSITY)
    positions = away_from_white(
        _lattice_positions(rng, width, height, spacing * rbc_diameter, keep, rbc_radius), 0.7 * rbc_radius
    )
    pallor = rng.uniform(0.15, 0.75)  # thick areas of a smear show little central pallor, thin ones a lot
    bank = [red_cell_sprite(rng, rbc_diameter, pallor) for _ in range(_RBC_BANK)]
    choice = rng.integers(0, _RBC_BANK, size=len(positions))
    for (x, y), k in zip(positions, choice, strict=True):
        s = bank[k]
        _paste(stains[EOSIN], s.conc[EOSIN], round(x - s.centre[0]), round(y - s.centre[1]))

    # Platelets: single ones scattered over the glass, a share of them in clumps.
    n_platelets = int(round(len(positions) * rng.uniform(*params.platelets_per_rbc)))
    n_clumped = int(round(n_platelets * rng.uniform(*params.platelet_clumped)))
    platelets = [platelet_sprite(rng, px_per_um) for _ in range(_PLATELET_BANK)]
    singles = rng.uniform(0.0, 1.0, size=(n_platelets - n_clumped, 2)) * np.array([width, height])
    groups = [singles]
    while n_clumped > 0:
        k = min(n_clumped, int(rng.integers(3, 13)))
        spread = rng.uniform(1.2, 3.0) * px_per_um * np.sqrt(k / 3.0)
        centre = rng.uniform(0.0, 1.0, size=2) * np.array([width, height])
        groups.append(centre + rng.normal(0.0, spread, size=(k, 2)))
        n_clumped -= k
    positions = away_from_white(np.concatenate(groups), 1.5 * px_per_um)
    choice = rng.integers(0, _PLATELET_BANK, size=len(positions))
    for (x, y), k in zip(positions, choice, strict=True):
        s = platelets[k]
        for channel in (HAEM, BASO):
            _paste(stains[channel], s.conc[channel], round(x - s.centre[0]), round(y - s.centre[1]))

    image = compose_rgb(stains, illumination_field(rng, height, width, optics), optics, rng)
    return SyntheticSlide(
        image=image,
        mask=np.where(labels > 0, 255, 0).astype(np.uint8),
        labels=labels,
        cells=cells,
        fab_class=fab_class,
        pixel_size_um=pixel_size_um,
        jpeg_quality=optics.jpeg_quality,
    )


def _render_blank(
    rng: np.random.Generator, width: int, height: int, optics: Optics, pixel_size_um: float, fab_class: str
) -> SyntheticSlide:
    """Glass, lamp and a little dust: a slide with no smear on it (for out-of-distribution checks)."""
    stains = np.zeros((N_STAINS, height, width), dtype=np.float32)
    n_dust = int(rng.integers(0, 12))
    for _ in range(n_dust):
        sprite = platelet_sprite(rng, rng.uniform(0.5, 2.0) / pixel_size_um)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        _paste(stains[HAEM], sprite.conc[HAEM] * 0.5, round(x - sprite.centre[0]), round(y - sprite.centre[1]))
    image = compose_rgb(stains, illumination_field(rng, height, width, optics), optics, rng)
    empty = np.zeros((height, width), np.uint8)
    return SyntheticSlide(
        image=image,
        mask=empty,
        labels=empty.astype(np.uint16),
        cells=[],
        fab_class=fab_class,
        pixel_size_um=pixel_size_um,
        jpeg_quality=optics.jpeg_quality,
    )


def _white_sprites(
    rng: np.random.Generator,
    kinds: Sequence[str],
    px_per_um: float,
    patient: Patient,
) -> list[tuple[str, Sprite]]:
    """Draw the sprites of ``kinds``; lymphoid cells of one kind share the slide's typical size."""
    typical = {
        kind: float(rng.uniform(*MORPHOLOGY[kind].cell_diameter_um)) * patient.look.size for kind in LYMPHOID_KINDS
    }
    sprites = []
    for kind in kinds:
        if kind in MORPHOLOGY:
            sprites.append((kind, lymphoid_sprite(rng, kind, px_per_um, typical[kind], patient.look)))
        else:
            sprites.append((kind, OTHER_SPRITES[kind](rng, px_per_um, patient.look)))
    return sprites


def _other_kinds(rng: np.random.Generator, params: SmearParams) -> list[str]:
    low, high = params.other_white_cells_per_slide
    n = int(rng.integers(low, high + 1))
    if n == 0:
        return []
    names = sorted(params.other_white_cell_mix)
    weights = np.array([params.other_white_cell_mix[k] for k in names], float)
    return [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]


def render_slide(
    rng: np.random.Generator,
    width: int,
    height: int,
    fab_class: str,
    params: SmearParams,
    patient: Patient | None = None,
    min_pixel_size_um: float = 0.0,
) -> SyntheticSlide:
    """A whole smear: red cells, platelets, lymphoid and other white cells, like an ALL-IDB1 photo.

    A ``normal`` slide carries only mature lymphocytes among its lymphoid cells; an
    ``L1``/``L2``/``L3`` slide carries blasts of that subtype (a ``params.blast_fraction`` share of
    its lymphoid cells, at least one) plus lymphocytes. Every slide also gets
    ``params.other_white_cells_per_slide`` neutrophils, eosinophils, monocytes, basophils or smudge
    cells, whatever its class.

    Args:
        rng: the slide's own generator (derive it from (seed, index) for reproducible datasets).
        width, height: image size in pixels.
        fab_class: ``normal``, ``L1``, ``L2`` or ``L3``.
        params: drawing parameters.
        patient: the slide's patient; None draws a new one from ``rng``.
        min_pixel_size_um: floor of the drawn pixel size (see ``draw_pixel_size``); the largest white
            cell always fits.

    Returns:
        The ``SyntheticSlide``; ``image`` is HxWx3 uint8 RGB, ``mask`` HxW uint8 0/255.
    """
    _check_class(fab_class)
    if patient is None:
        patient = draw_patient(rng, params)
    pixel_size = draw_pixel_size(rng, params, max(min_pixel_size_um, fit_pixel_size_um(width, height)))
    optics = sample_optics(rng, patient.session, params.stain, params.optics, pixel_size)  # before the class
    if params.kind == "blank":
        return _render_blank(rng, width, height, optics, pixel_size, fab_class)
    coverage = float(rng.uniform(*params.rbc_coverage))
    n_lymphoid = int(rng.integers(params.white_cells_per_slide[0], params.white_cells_per_slide[1] + 1))
    if fab_class == "normal":
        kinds = ["normal"] * n_lymphoid
    else:
        n_blasts = min(n_lymphoid, max(1, int(round(rng.uniform(*params.blast_fraction) * n_lymphoid))))
        kinds = [fab_class] * n_blasts + ["normal"] * (n_lymphoid - n_blasts)  # blasts first: they get placed
    kinds += _other_kinds(rng, params)
    sprites = _white_sprites(rng, kinds, 1.0 / pixel_size, patient)
    white = _place_white_cells(rng, sprites, width, height, _WHITE_GAP_UM / pixel_size)
    return _render_scene(rng, width, height, optics, pixel_size, patient, coverage, white, params, fab_class)


def render_cell_crop(
    rng: np.random.Generator,
    crop_size_um: float,
    fab_class: str,
    params: SmearParams,
    patient: Patient | None = None,
) -> SyntheticSlide:
    """A square crop with one white cell in the centre and red cells around it, rendered on its own.

    The data set cuts its crops out of its slides (``synth.crops_from_slides``); this draws one
    without a slide, for ``crops_from_slides: false`` and for tests.

    Args:
        rng: the crop's own generator.
        crop_size_um: side of the square crop in micrometres; its pixels follow the drawn pixel size.
        fab_class: kind of the centred cell: ``normal`` (label 0) or a blast ``L1``/``L2``/``L3`` (label 1).
        params: drawing parameters (the white-cell counts and ``blast_fraction`` are not used).
        patient: the crop's patient; None draws a new one.

    Returns:
        The ``SyntheticSlide``; ``image`` is size x size x 3 uint8 RGB, ``mask`` covers the centred cell only.
    """
    _check_class(fab_class)
    if patient is None:
        patient = draw_patient(rng, params)
    if crop_size_um < MAX_LYMPHOID_DIAMETER_UM:
        raise ValueError(
            f"crop_size_um must hold the largest lymphoid cell ({MAX_LYMPHOID_DIAMETER_UM} um), got {crop_size_um}"
        )
    pixel_size = draw_pixel_size(rng, params)
    size = int(round(crop_size_um / pixel_size))
    optics = sample_optics(rng, patient.session, params.stain, params.optics, pixel_size)
    # A crop is a small part of a photo: it sees only a sliver of the lamp's vignetting, gradient and blotches.
    optics = dataclasses.replace(
        optics, vignetting=optics.vignetting * 0.2, gradient=optics.gradient * 0.2, unevenness=optics.unevenness * 0.2
    )
    coverage = float(rng.uniform(*params.rbc_coverage))
    ((kind, sprite),) = _white_sprites(rng, [fab_class], 1.0 / pixel_size, patient)
    centre = size / 2.0
    white = [(kind, sprite, int(round(centre - sprite.centre[0])), int(round(centre - sprite.centre[1])))]
    return _render_scene(rng, size, size, optics, pixel_size, patient, coverage, white, params, fab_class)
