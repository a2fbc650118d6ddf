"""Whole synthetic blood smears (like ALL-IDB1) and single-cell crops (like ALL-IDB2).

A scene is composed in stain-concentration space (``stain.py``): white cells first, red cells
and platelets around them, the lamp field, then one Beer-Lambert render to RGB. The slide's
stain and optics are drawn before anything that depends on its class, so colour carries no
class information; the class lives only in the white cells' morphology (``cells.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from allmtl_spark.synth.cells import (
    MAX_CELL_RATIO,
    WHITE_KINDS,
    Sprite,
    platelet_sprite,
    red_cell_sprite,
    white_cell_sprite,
)
from allmtl_spark.synth.stain import (
    BASO,
    EOSIN,
    HAEM,
    N_STAINS,
    Optics,
    StainRanges,
    compose_rgb,
    illumination_field,
    sample_optics,
)

if TYPE_CHECKING:
    from allmtl_spark.config.schema import SynthConfig

FAB_CLASSES = WHITE_KINDS  # a slide's class is the kind of its blasts, or "normal"
_RBC_BANK = 32  # distinct red-cell sprites per slide; more buys nothing visible
_PLATELET_BANK = 12


@dataclass(frozen=True)
class SmearParams:
    """Drawing parameters, each range drawn per slide (see ``SynthConfig`` for their meaning)."""

    rbc_diameter_px: tuple[float, float] = (38.0, 62.0)
    rbc_coverage: tuple[float, float] = (0.35, 0.6)
    white_cells_per_slide: tuple[int, int] = (3, 7)
    blast_fraction: tuple[float, float] = (0.6, 1.0)
    platelets_per_rbc: tuple[float, float] = (0.03, 0.08)
    stain: StainRanges = field(default_factory=StainRanges)

    def __post_init__(self) -> None:
        for name in ("rbc_diameter_px", "rbc_coverage", "white_cells_per_slide", "blast_fraction", "platelets_per_rbc"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be [min, max] with 0 <= min <= max, got {[low, high]}")
        if self.rbc_diameter_px[0] < 4:
            raise ValueError(f"rbc_diameter_px must be >= 4 px, got {list(self.rbc_diameter_px)}")
        if self.white_cells_per_slide[0] < 1:
            raise ValueError("white_cells_per_slide must be >= 1: an ALL slide needs a blast")
        if self.blast_fraction[1] > 1 or self.rbc_coverage[1] > 1:
            raise ValueError("blast_fraction and rbc_coverage are fractions: max must be <= 1")

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> SmearParams:
        """The drawing parameters of a ``SynthConfig``; stain ranges keep their defaults."""
        return cls(
            rbc_diameter_px=tuple(cfg.rbc_diameter_px),
            rbc_coverage=tuple(cfg.rbc_coverage),
            white_cells_per_slide=tuple(cfg.white_cells_per_slide),
            blast_fraction=tuple(cfg.blast_fraction),
        )


@dataclass(frozen=True)
class CellRecord:
    """One white cell on a rendered image: kind, centre (x, y) in pixels, mean radius in pixels."""

    kind: str
    cx: float
    cy: float
    radius: float
    is_blast: bool


@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """A rendered smear or crop.

    Attributes:
        image: uint8 HxWx3 RGB.
        mask: uint8 HxW, 255 on white cells (cytoplasm included), 0 elsewhere.
        cells: the white cells, in drawing order.
        fab_class: ``normal``, ``L1``, ``L2`` or ``L3``.
    """

    image: np.ndarray
    mask: np.ndarray
    cells: list[CellRecord]
    fab_class: str

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


def _scene_rbc_diameter(rng: np.random.Generator, params: SmearParams, room_px: float) -> float:
    """Draw the slide's red-cell diameter, shrunk if the largest possible white cell would not fit in ``room_px``.

    The cap uses the largest cell of any class, so it never depends on (or reveals) the class.
    """
    return min(float(rng.uniform(*params.rbc_diameter_px)), room_px / MAX_CELL_RATIO)


def _place_white_cells(
    rng: np.random.Generator, sprites: list[tuple[str, Sprite]], width: int, height: int, gap: float
) -> list[tuple[str, Sprite, int, int]]:
    """Put white cells fully inside the frame without touching each other; drop any that will not fit."""
    placed: list[tuple[str, Sprite, int, int]] = []
    for kind, sprite in sprites:
        r = sprite.radius * 1.1
        for _ in range(200):
            cx = rng.uniform(r + 1.0, max(r + 1.0, width - r - 1.0))
            cy = rng.uniform(r + 1.0, max(r + 1.0, height - r - 1.0))
            clear = all(
                np.hypot(cx - (x0 + s.centre[0]), cy - (y0 + s.centre[1])) > r + s.radius * 1.1 + gap
                for _, s, x0, y0 in placed
            )
            if clear:
                placed.append((kind, sprite, int(round(cx - sprite.centre[0])), int(round(cy - sprite.centre[1]))))
                break
    return placed


def _render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    optics: Optics,
    rbc_diameter: float,
    coverage: float,
    white: list[tuple[str, Sprite, int, int]],
    params: SmearParams,
    fab_class: str,
) -> SyntheticSlide:
    """Red cells and platelets around the placed white cells, then the render to RGB."""
    # Planar (3xHxW) so each stain plane is contiguous: thousands of small adds are the hot loop.
    stains = np.zeros((N_STAINS, height, width), dtype=np.float32)
    mask = np.zeros((height, width), dtype=np.uint8)
    cells: list[CellRecord] = []
    centres = np.array([[x0 + s.centre[0], y0 + s.centre[1], s.radius] for _, s, x0, y0 in white], np.float32)
    for kind, sprite, x0, y0 in white:
        for k in (HAEM, BASO):
            _paste(stains[k], sprite.conc[k], x0, y0)
        _paste(mask, sprite.mask, x0, y0, combine=np.maximum)
        cx, cy = x0 + sprite.centre[0], y0 + sprite.centre[1]
        cells.append(CellRecord(kind=kind, cx=float(cx), cy=float(cy), radius=sprite.radius, is_blast=kind != "normal"))

    def free_positions(n: int, margin: float, keep_out: float) -> np.ndarray:
        # Candidates over the frame plus a margin (cells cut by the border, as on a real photo); white cells
        # push red cells aside, so drop candidates closer than keep_out to one's outline.
        pts = rng.uniform(0.0, 1.0, size=(n, 2)) * np.array([width + 2 * margin, height + 2 * margin]) - margin
        if len(centres):
            d = np.hypot(pts[:, None, 0] - centres[None, :, 0], pts[:, None, 1] - centres[None, :, 1])
            pts = pts[np.all(d > centres[None, :, 2] + keep_out, axis=1)]
        return pts

    rbc_radius = rbc_diameter / 2.0
    n_rbc = int(round(coverage * width * height / (np.pi * rbc_radius**2)))
    bank = [red_cell_sprite(rng, rbc_diameter) for _ in range(_RBC_BANK)]
    positions = free_positions(n_rbc, rbc_radius, 0.75 * rbc_radius)
    choice = rng.integers(0, _RBC_BANK, size=len(positions))
    for (x, y), k in zip(positions, choice, strict=True):
        s = bank[k]
        _paste(stains[EOSIN], s.conc[EOSIN], round(x - s.centre[0]), round(y - s.centre[1]))

    n_platelets = int(round(n_rbc * rng.uniform(*params.platelets_per_rbc)))
    platelets = [platelet_sprite(rng, rbc_diameter) for _ in range(_PLATELET_BANK)]
    positions = free_positions(n_platelets, 0.0, 0.3 * rbc_radius)
    choice = rng.integers(0, _PLATELET_BANK, size=len(positions))
    for (x, y), k in zip(positions, choice, strict=True):
        s = platelets[k]
        for channel in (HAEM, BASO):
            _paste(stains[channel], s.conc[channel], round(x - s.centre[0]), round(y - s.centre[1]))

    image = compose_rgb(stains, illumination_field(rng, height, width, optics), optics, rng)
    return SyntheticSlide(image=image, mask=mask, cells=cells, fab_class=fab_class)


def render_slide(
    rng: np.random.Generator, width: int, height: int, fab_class: str, params: SmearParams
) -> SyntheticSlide:
    """A whole smear: red cells, platelets and a few white cells, like an ALL-IDB1 photo.

    A ``normal`` slide carries only mature lymphocytes; an ``L1``/``L2``/``L3`` slide carries blasts of
    that subtype (a ``params.blast_fraction`` share of its white cells, at least one) plus lymphocytes.

    Args:
        rng: the slide's own generator (derive it from (seed, index) for reproducible datasets).
        width, height: image size in pixels.
        fab_class: ``normal``, ``L1``, ``L2`` or ``L3``.
        params: drawing parameters.

    Returns:
        The ``SyntheticSlide``; ``image`` is HxWx3 uint8 RGB, ``mask`` HxW uint8 0/255.
    """
    _check_class(fab_class)
    optics = sample_optics(rng, params.stain)  # first, so colour cannot depend on the class
    rbc_diameter = _scene_rbc_diameter(rng, params, 0.45 * min(width, height))
    coverage = float(rng.uniform(*params.rbc_coverage))
    n_white = int(rng.integers(params.white_cells_per_slide[0], params.white_cells_per_slide[1] + 1))
    if fab_class == "normal":
        kinds = ["normal"] * n_white
    else:
        n_blasts = min(n_white, max(1, int(round(rng.uniform(*params.blast_fraction) * n_white))))
        kinds = [fab_class] * n_blasts + ["normal"] * (n_white - n_blasts)  # blasts first: they get placed
    sprites = [(kind, white_cell_sprite(rng, kind, rbc_diameter)) for kind in kinds]
    white = _place_white_cells(rng, sprites, width, height, gap=0.5 * rbc_diameter)
    return _render_scene(rng, width, height, optics, rbc_diameter, coverage, white, params, fab_class)


def render_cell_crop(rng: np.random.Generator, size: int, fab_class: str, params: SmearParams) -> SyntheticSlide:
    """A square crop with one white cell in the centre and red cells around it, like an ALL-IDB2 image.

    Args:
        rng: the crop's own generator.
        size: side of the square crop in pixels.
        fab_class: kind of the centred cell: ``normal`` (label 0) or a blast ``L1``/``L2``/``L3`` (label 1).
        params: drawing parameters (``white_cells_per_slide`` and ``blast_fraction`` are not used).

    Returns:
        The ``SyntheticSlide``; ``image`` is size x size x 3 uint8 RGB, ``mask`` covers the centred cell only.
    """
    _check_class(fab_class)
    optics = sample_optics(rng, params.stain)
    # A crop is a small part of a photo: it sees only a sliver of the lamp's vignetting, gradient and blotches.
    optics = dataclasses.replace(
        optics, vignetting=optics.vignetting * 0.2, gradient=optics.gradient * 0.2, unevenness=optics.unevenness * 0.2
    )
    rbc_diameter = _scene_rbc_diameter(rng, params, 0.85 * size)
    coverage = float(rng.uniform(*params.rbc_coverage))
    sprite = white_cell_sprite(rng, fab_class, rbc_diameter)
    centre = size / 2.0
    white = [(fab_class, sprite, int(round(centre - sprite.centre[0])), int(round(centre - sprite.centre[1])))]
    return _render_scene(rng, size, size, optics, rbc_diameter, coverage, white, params, fab_class)
