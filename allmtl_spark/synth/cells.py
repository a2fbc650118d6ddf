"""Cell sprites: small stain-concentration patches for red cells, platelets and white cells.

A sprite is drawn once in its own bounding box and then added into the slide's concentration
stack (see ``stain.py``), so the cost of a cell is its box, not the slide. Every size is in
micrometres and turned into pixels with the slide's ``px_per_um``, so one cell looks the same
at any magnification.

The lymphoid cells carry the slide's class: mature lymphocytes (``normal``) and the FAB blasts
``L1``/``L2``/``L3`` differ in size, nucleus/cell ratio, nuclear outline, chromatin texture,
nucleoli and vacuoles (``MORPHOLOGY``), and share one range of stain intensities, so their class
is in their shape, not their colour. The other white cells of a smear (neutrophils, eosinophils,
monocytes, basophils, smudge cells) are drawn on every slide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.synth.stain import BASO, EOSIN, GRANULE, HAEM, N_STAINS

LYMPHOID_KINDS = ("normal", "L1", "L2", "L3")
OTHER_KINDS = ("neutrophil", "eosinophil", "monocyte", "basophil", "smudge")
WHITE_KINDS = LYMPHOID_KINDS + OTHER_KINDS
# The label a cell kind gets in boxes.csv (a "normal" cell is a mature lymphocyte).
BOX_LABELS = {"normal": "lymphocyte", **{k: k for k in WHITE_KINDS if k != "normal"}}
_SHIFT = 4  # cv2.fillPoly sub-pixel bits: polygons are placed to 1/16 px
_N_VERTICES = 96

# Stain intensity ranges shared by every lymphoid kind: the class must not be readable from colour.
CHROMATIN = (0.7, 1.2)  # haematoxylin concentration of a nucleus
CHROMATIN_CONTRAST = (0.18, 0.3)  # relative amplitude of the chromatin texture
CYTOPLASM = (0.45, 1.25)  # basophilic-stain concentration of the cytoplasm


@dataclass(frozen=True)
class Morphology:
    """Ranges that define one lymphoid kind; each value is drawn uniformly in ``(min, max)``.

    Attributes:
        cell_diameter_um: the slide's typical cell diameter (cytoplasm included), micrometres.
        size_spread: relative standard deviation of a cell's diameter around the slide's typical
            one (L1 and L3 are uniform, L2 heterogeneous).
        nucleus_ratio: nucleus diameter / cell diameter; 1 minus it is the cytoplasm amount.
        nucleus_aspect: long / short axis of the nucleus.
        nucleus_offset: nucleus centre shift, fraction of the room the cytoplasm leaves.
        outline_wobble: amplitude of the low harmonics of the cell outline (fraction of radius).
        nucleus_wobble: same for the nucleus outline (irregular nuclei have more).
        cleft_probability: chance of a cleft (a deep notch) in the nucleus.
        cleft_depth: depth of the cleft, fraction of the nucleus radius.
        chromatin_grain_um: size of the chromatin texture, micrometres (clumped is coarse).
        clumped: chromatin in blobs with sharp borders (mature) instead of a fine even stipple.
        nucleoli: number of nucleoli (inclusive range).
        nucleolus_um: nucleolus radius, micrometres.
        vacuoles: number of cytoplasmic vacuoles (inclusive range).
        vacuole_um: vacuole radius, micrometres.
    """

    cell_diameter_um: tuple[float, float]
    size_spread: float
    nucleus_ratio: tuple[float, float]
    nucleus_aspect: tuple[float, float]
    nucleus_offset: tuple[float, float]
    outline_wobble: float
    nucleus_wobble: float
    cleft_probability: float
    cleft_depth: tuple[float, float]
    chromatin_grain_um: tuple[float, float]
    clumped: bool
    nucleoli: tuple[int, int]
    nucleolus_um: tuple[float, float]
    vacuoles: tuple[int, int]
    vacuole_um: tuple[float, float]


MORPHOLOGY: dict[str, Morphology] = {
    # Mature small lymphocyte: 7-10 um, dense round nucleus of clumped chromatin, thin rim of cytoplasm.
    "normal": Morphology(
        cell_diameter_um=(7.5, 9.5),
        size_spread=0.07,
        nucleus_ratio=(0.76, 0.88),
        nucleus_aspect=(1.0, 1.12),
        nucleus_offset=(0.2, 0.8),
        outline_wobble=0.025,
        nucleus_wobble=0.03,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin_grain_um=(0.5, 0.8),
        clumped=True,
        nucleoli=(0, 0),
        nucleolus_um=(0.0, 0.0),
        vacuoles=(0, 0),
        vacuole_um=(0.0, 0.0),
    ),
    # FAB L1: small uniform blasts (about twice a small lymphocyte's area), round regular nucleus,
    # fine homogeneous chromatin, scant cytoplasm, nucleoli small or absent.
    "L1": Morphology(
        cell_diameter_um=(10.5, 12.5),
        size_spread=0.05,
        nucleus_ratio=(0.74, 0.86),
        nucleus_aspect=(1.0, 1.12),
        nucleus_offset=(0.0, 0.5),
        outline_wobble=0.025,
        nucleus_wobble=0.025,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin_grain_um=(0.2, 0.3),
        clumped=False,
        nucleoli=(0, 1),
        nucleolus_um=(0.35, 0.5),
        vacuoles=(0, 0),
        vacuole_um=(0.0, 0.0),
    ),
    # FAB L2: large and heterogeneous, irregular often cleft nucleus, prominent nucleoli, more cytoplasm.
    "L2": Morphology(
        cell_diameter_um=(13.0, 17.0),
        size_spread=0.15,
        nucleus_ratio=(0.64, 0.8),
        nucleus_aspect=(1.1, 1.4),
        nucleus_offset=(0.1, 0.6),
        outline_wobble=0.06,
        nucleus_wobble=0.16,
        cleft_probability=0.85,
        cleft_depth=(0.45, 0.75),
        chromatin_grain_um=(0.25, 0.6),
        clumped=False,
        nucleoli=(1, 3),
        nucleolus_um=(0.6, 0.9),
        vacuoles=(0, 0),
        vacuole_um=(0.0, 0.0),
    ),
    # FAB L3 (Burkitt type): large uniform cells, round-oval nucleus, fine stippled chromatin, 2-3 nucleoli,
    # moderately abundant cytoplasm with prominent vacuoles.
    "L3": Morphology(
        cell_diameter_um=(13.0, 16.0),
        size_spread=0.05,
        nucleus_ratio=(0.6, 0.74),
        nucleus_aspect=(1.0, 1.2),
        nucleus_offset=(0.0, 0.4),
        outline_wobble=0.035,
        nucleus_wobble=0.03,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin_grain_um=(0.2, 0.3),
        clumped=False,
        nucleoli=(2, 3),
        nucleolus_um=(0.5, 0.75),
        vacuoles=(5, 10),
        vacuole_um=(0.45, 0.75),
    ),
}

# Largest diameter any white cell can have, micrometres (monocytes reach 20 um, with their outline's wobble 21).
MAX_WHITE_DIAMETER_UM = 21.0
# Largest diameter a lymphoid cell can have (L2: 17 um typical x 1.25 per cell x 1.16 patient), the smallest crop;
# config.schema's synth.cell_crop_size_um check states the same number.
MAX_LYMPHOID_DIAMETER_UM = 25.0


@dataclass(frozen=True)
class CellLook:
    """One patient's random effects on white-cell morphology and staining, shared by their slides.

    Attributes:
        size: factor on every white cell's diameter.
        nucleus_ratio: added to the nucleus/cell diameter ratio of lymphoid cells.
        chromatin: factor on nuclear stain concentration.
        cytoplasm: factor on basophilic cytoplasm concentration.
    """

    size: float = 1.0
    nucleus_ratio: float = 0.0
    chromatin: float = 1.0
    cytoplasm: float = 1.0


@dataclass(frozen=True, eq=False)
class Sprite:
    """A drawn cell in its own box.

    Attributes:
        conc: float32 4xhxw stain-concentration planes (HAEM, EOSIN, BASO, GRANULE) to add into the slide.
        mask: uint8 hxw, 255 inside the cell outline (white cells; zeros for others).
        centre: (x, y) of the cell centre inside the box, in pixels.
        radius: mean radius of the cell outline in pixels.
    """

    conc: np.ndarray
    mask: np.ndarray
    centre: tuple[float, float]
    radius: float


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else float(pair[0])


def _outline(
    rng: np.random.Generator,
    radius: float,
    wobble: float,
    aspect: float = 1.0,
    cleft: float = 0.0,
    cleft_width: tuple[float, float] = (0.22, 0.38),
) -> np.ndarray:
    """Polar outline r(theta) of a blob: an ellipse with random low harmonics and an optional notch.

    Returns:
        float32 (_N_VERTICES, 2) vertex offsets from the centre, in pixels.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, _N_VERTICES, endpoint=False)
    axis = rng.uniform(0.0, np.pi)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)  # keeps the area of a radius-r disc
    rot = theta - axis
    r = a * b / np.sqrt((b * np.cos(rot)) ** 2 + (a * np.sin(rot)) ** 2)
    for k in (2, 3, 4, 5):
        r *= 1.0 + wobble / k * rng.standard_normal() * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    if cleft > 0.0:
        # A cleft is a narrow, deep indentation: a Gaussian notch in the radius at one angle.
        centre = rng.uniform(0.0, 2.0 * np.pi)
        delta = np.angle(np.exp(1j * (theta - centre)))
        r *= 1.0 - cleft * np.exp(-((delta / rng.uniform(*cleft_width)) ** 2))
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).astype(np.float32)


def _fill(shape: tuple[int, int], centre: tuple[float, float], vertices: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a polygon, float32 hxw in 0..1."""
    canvas = np.zeros(shape, dtype=np.uint8)
    points = np.round((vertices + np.asarray(centre, np.float32)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [points], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float, soft: float = 0.8) -> np.ndarray:
    """Soft disc coverage, float32 hxw in 0..1, with an edge ramp ``soft`` pixels wide."""
    y, x = np.ogrid[0 : shape[0], 0 : shape[1]]
    dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2, dtype=np.float32)
    return np.clip((radius - dist) / soft + 0.5, 0.0, 1.0).astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], grain_px: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with features about ``grain_px`` pixels across."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if grain_px > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), grain_px)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _granules(rng: np.random.Generator, region: np.ndarray, radius_px: tuple[float, float], fill: float) -> np.ndarray:
    """Round granules scattered over a region until they cover about ``fill`` of it.

    Args:
        rng: generator for the granules' places and sizes.
        region: float32 hxw coverage (0..1) where granules may lie.
        radius_px: range of granule radii, pixels.
        fill: share of the region the granules cover (they may overlap).

    Returns:
        float32 hxw in 0..1.
    """
    ys, xs = np.nonzero(region > 0.5)
    out = np.zeros(region.shape, np.uint8)
    if len(xs) == 0:
        return out.astype(np.float32)
    mean_r = max(0.5, (radius_px[0] + radius_px[1]) / 2.0)
    n = int(fill * len(xs) / (np.pi * mean_r**2))
    pick = rng.integers(0, len(xs), size=n)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 2))
    radii = rng.uniform(radius_px[0], radius_px[1], size=n)
    scale = 1 << _SHIFT
    for x, y, (jx, jy), r in zip(xs[pick], ys[pick], jitter, radii, strict=True):
        centre = (int((x + jx) * scale), int((y + jy) * scale))
        cv2.circle(out, centre, max(1, int(r * scale)), 255, -1, lineType=cv2.LINE_AA, shift=_SHIFT)
    return out.astype(np.float32) * np.float32(1.0 / 255.0)


def _box(diameter_px: float, extra: float = 1.0) -> tuple[int, float, tuple[int, int]]:
    side = int(np.ceil(diameter_px * extra)) + 6
    return side, side / 2.0, (side, side)


def _lobes(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    n_lobes: int,
    lobe_radius: float,
    spread: float,
    strand_px: float,
) -> np.ndarray:
    """A segmented nucleus: ``n_lobes`` round-oval lobes along a bent arc joined by thin chromatin strands.

    Returns:
        float32 hxw coverage in 0..1.
    """
    start = rng.uniform(0.0, 2.0 * np.pi)
    span = rng.uniform(0.5, 1.1) * np.pi * (n_lobes - 1) / max(n_lobes - 1, 1)
    angles = start + np.linspace(0.0, span, n_lobes)
    # Lobes sit on a circle of radius ``spread`` around a centre pulled back so the arc is centred.
    mid = start + span / 2.0
    ox = centre[0] - spread * np.cos(mid) * (0.6 if n_lobes > 2 else 0.0)
    oy = centre[1] - spread * np.sin(mid) * (0.6 if n_lobes > 2 else 0.0)
    if n_lobes == 2:
        points = [(centre[0] + s * spread * np.cos(start), centre[1] + s * spread * np.sin(start)) for s in (-1, 1)]
    else:
        points = [(ox + spread * np.cos(a), oy + spread * np.sin(a)) for a in angles]
    cover = np.zeros(shape, np.float32)
    for p in points:
        r = lobe_radius * rng.uniform(0.85, 1.15)
        cover = np.maximum(cover, _fill(shape, p, _outline(rng, r, 0.08, aspect=rng.uniform(1.0, 1.4))))
    strands = np.zeros(shape, np.uint8)
    for a, b in zip(points[:-1], points[1:], strict=True):
        pa = (int(round(a[0] * 16)), int(round(a[1] * 16)))
        pb = (int(round(b[0] * 16)), int(round(b[1] * 16)))
        cv2.line(strands, pa, pb, 255, max(1, int(round(strand_px))), lineType=cv2.LINE_AA, shift=_SHIFT)
    return np.maximum(cover, strands.astype(np.float32) / 255.0)


def _finish(
    conc: np.ndarray, cell: np.ndarray, centre: tuple[float, float], radius: float, soften: float = 0.5
) -> Sprite:
    """Soften the polygons' staircase (the optics blur is drawn per slide) and pack a white-cell sprite."""
    for k in range(N_STAINS):
        if conc[k].any():
            conc[k] = cv2.GaussianBlur(conc[k], (0, 0), soften)
    mask = np.where(cell >= 0.5, 255, 0).astype(np.uint8)
    return Sprite(conc=conc, mask=mask, centre=centre, radius=float(radius))


def red_cell_sprite(rng: np.random.Generator, diameter_px: float, pallor: float) -> Sprite:
    """A red cell: a pale disc with the lighter centre of a biconcave cell, a slightly darker rim and texture.

    Args:
        rng: generator for the cell's size, shape, pallor and texture.
        diameter_px: the slide's mean red-cell diameter in pixels.
        pallor: the slide's mean depth of the central pallor (0: none, as in thick areas; 0.8: deep).

    Returns:
        A ``Sprite`` with only the EOSIN channel set and an empty mask.
    """
    d = diameter_px * float(np.clip(rng.normal(1.0, 0.06), 0.8, 1.2))
    aspect = rng.uniform(1.0, 1.15)
    rx, ry = d / 2.0 * np.sqrt(aspect), d / 2.0 / np.sqrt(aspect)
    side = int(np.ceil(2.0 * rx)) + 4
    c = side / 2.0
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) - c + 0.5
    angle = rng.uniform(0.0, np.pi)
    u = (x * np.cos(angle) + y * np.sin(angle)) / rx
    v = (-x * np.sin(angle) + y * np.cos(angle)) / ry
    # A little wobble of the outline: dried cells are not perfect ellipses.
    phase = rng.uniform(0.0, 2.0 * np.pi)
    rho = np.sqrt(u * u + v * v) * (1.0 + 0.025 * rng.standard_normal() * np.cos(3 * np.arctan2(v, u) + phase))
    edge = np.clip((1.0 - rho) * (d / 2.0) / 1.2 + 0.5, 0.0, 1.0)  # ~1.2 px soft edge
    # Central pallor: a flat-topped dip (4th power) with a visible edge, slightly off-centre, depth varying.
    depth = float(np.clip(pallor * rng.uniform(0.6, 1.35), 0.0, 0.85))
    ou, ov = rng.normal(0.0, 0.06, size=2)
    rho_p = np.sqrt((u - ou) ** 2 + (v - ov) ** 2)
    dip = depth * np.exp(-((rho_p / rng.uniform(0.35, 0.55)) ** 4))
    rim = 0.15 * np.exp(-(((rho - 0.86) / 0.12) ** 2))
    grain = 1.0 + 0.04 * _texture(rng, (side, side), max(0.6, d / 12.0))
    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    conc[EOSIN] = rng.uniform(0.85, 1.15) * 1.2 * (1.0 - dip + rim) * grain * edge
    return Sprite(conc=conc, mask=np.zeros((side, side), np.uint8), centre=(c, c), radius=d / 2.0)


def platelet_sprite(rng: np.random.Generator, px_per_um: float) -> Sprite:
    """A platelet: a small irregular purple granular fragment, 2-3 um across.

    Args:
        rng: generator for shape and granules.
        px_per_um: pixels per micrometre of the slide.

    Returns:
        A ``Sprite`` with HAEM and BASO set and an empty mask.
    """
    radius = max(1.2, rng.uniform(1.0, 1.5) * px_per_um)
    side = int(np.ceil(2.6 * radius)) + 4
    c = side / 2.0
    body = _fill((side, side), (c, c), _outline(rng, radius, wobble=0.35, aspect=rng.uniform(1.0, 1.5)))
    body = cv2.GaussianBlur(body, (0, 0), 0.6)
    granules = np.clip(_texture(rng, (side, side), max(0.6, 0.25 * px_per_um)), -1.0, 2.5)
    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    conc[HAEM] = body * rng.uniform(0.4, 0.65) * (1.0 + 0.45 * granules)
    conc[BASO] = body * 0.3
    return Sprite(conc=conc, mask=np.zeros((side, side), np.uint8), centre=(c, c), radius=radius)


def lymphoid_sprite(
    rng: np.random.Generator, kind: str, px_per_um: float, typical_um: float, look: CellLook = CellLook()
) -> Sprite:
    """A lymphoid white cell (mature lymphocyte or blast) with nucleus, chromatin, nucleoli, cytoplasm and vacuoles.

    Args:
        rng: generator for all of the cell's random features.
        kind: ``normal`` (mature lymphocyte) or a blast ``L1`` / ``L2`` / ``L3``.
        px_per_um: pixels per micrometre of the slide.
        typical_um: the slide's typical diameter of this kind (``MORPHOLOGY[kind].cell_diameter_um``
            drawn once per slide, times the patient's size effect).
        look: the patient's random effects.

    Returns:
        A ``Sprite``: HAEM (nucleus) and BASO (cytoplasm) set; ``mask`` is the whole cell,
        cytoplasm included, 0/255.
    """
    m = MORPHOLOGY[kind]
    diameter_um = typical_um * float(
        np.clip(rng.normal(1.0, m.size_spread), 1 - 2.5 * m.size_spread, 1.1 + m.size_spread)
    )
    radius = diameter_um * px_per_um / 2.0
    side, c, shape = _box(2.0 * radius, 1.0 + 2.0 * m.outline_wobble)
    cell = _fill(shape, (c, c), _outline(rng, radius, m.outline_wobble))

    # Nucleus: shifted towards one side (lymphocytes are eccentric), kept inside the cell.
    ratio = float(np.clip(_uniform(rng, m.nucleus_ratio) + look.nucleus_ratio, 0.45, 0.93))
    nuc_radius = radius * ratio
    shift = (radius - nuc_radius) * _uniform(rng, m.nucleus_offset)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    nc = (c + shift * np.cos(direction), c + shift * np.sin(direction))
    cleft = _uniform(rng, m.cleft_depth) if rng.uniform() < m.cleft_probability else 0.0
    nucleus_outline = _outline(rng, nuc_radius, m.nucleus_wobble, aspect=_uniform(rng, m.nucleus_aspect), cleft=cleft)
    nucleus = np.minimum(_fill(shape, nc, nucleus_outline), cv2.erode(cell, np.ones((3, 3), np.uint8)))

    # Chromatin: the texture's grain and shape separate clumped (mature) from fine (blast) chromatin; its
    # amplitude and the stain intensities come from one range for every kind.
    grain = max(0.6, _uniform(rng, m.chromatin_grain_um) * px_per_um)
    texture = _texture(rng, shape, grain)
    if m.clumped:
        texture = np.tanh(1.5 * texture) / 0.8  # blobs with sharp-ish borders, not smooth waves
    elif kind == "L2":
        texture = 0.6 * texture + 0.8 * _texture(rng, shape, nuc_radius * 0.3)  # heterogeneous
    chromatin = _uniform(rng, CHROMATIN) * look.chromatin
    haem = nucleus * chromatin * np.clip(1.0 + _uniform(rng, CHROMATIN_CONTRAST) * texture, 0.2, 3)
    cyto = _uniform(rng, CYTOPLASM) * look.cytoplasm
    baso = np.clip(cell - nucleus, 0.0, 1.0) * cyto * (1.0 + 0.08 * _texture(rng, shape, 0.5 * px_per_um))

    # Nucleoli: pale bluish bodies with a slightly condensed rim.
    for _ in range(int(rng.integers(m.nucleoli[0], m.nucleoli[1] + 1))):
        r = max(1.2, _uniform(rng, m.nucleolus_um) * px_per_um)
        at = rng.uniform(0.0, 2.0 * np.pi)
        dist = rng.uniform(0.0, 0.5) * nuc_radius
        pos = (nc[0] + dist * np.cos(at), nc[1] + dist * np.sin(at))
        body = _disc(shape, pos, r) * nucleus
        ring = np.clip(_disc(shape, pos, r + 1.2) - body, 0.0, 1.0) * nucleus
        haem *= 1.0 - 0.7 * body
        haem += 0.25 * ring
        baso += 0.45 * body

    # Vacuoles: clear round holes in the cytoplasm, an occasional one over the nucleus (as in real L3).
    n_vacuoles = int(rng.integers(m.vacuoles[0], m.vacuoles[1] + 1))
    placed = 0
    for _ in range(n_vacuoles * 30):
        if placed == n_vacuoles:
            break
        r = max(1.3, _uniform(rng, m.vacuole_um) * px_per_um)
        at, dist = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.3, 1.0) * max(0.0, radius - r - 1.0)
        pos = (c + dist * np.cos(at), c + dist * np.sin(at))
        px, py = int(pos[0]), int(pos[1])
        if cell[py, px] < 0.99 or (nucleus[py, px] > 0.05 and rng.uniform() < 0.97):
            continue
        hole = 1.0 - 0.92 * _disc(shape, pos, r)
        haem *= hole
        baso *= hole
        placed += 1

    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    conc[HAEM], conc[BASO] = haem, baso
    return _finish(conc, cell, (c, c), radius)


def _granulocyte(
    rng: np.random.Generator,
    px_per_um: float,
    look: CellLook,
    diameter_um: tuple[float, float],
    lobes: tuple[int, int],
    paint_cytoplasm,
) -> Sprite:
    """A round cell with a segmented nucleus; ``paint_cytoplasm(conc, cell, nucleus, shape)`` adds the granules."""
    radius = _uniform(rng, diameter_um) * look.size * px_per_um / 2.0
    side, c, shape = _box(2.0 * radius, 1.06)
    cell = _fill(shape, (c, c), _outline(rng, radius, 0.03))
    n_lobes = int(rng.integers(lobes[0], lobes[1] + 1))
    lobe_radius = radius * rng.uniform(0.24, 0.3) * (1.0 if n_lobes > 2 else 1.25)
    nucleus = _lobes(rng, shape, (c, c), n_lobes, lobe_radius, radius * rng.uniform(0.3, 0.42), 0.35 * px_per_um)
    nucleus = np.minimum(nucleus, cv2.erode(cell, np.ones((3, 3), np.uint8)))
    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    texture = np.tanh(1.5 * _texture(rng, shape, max(0.6, 0.5 * px_per_um))) / 0.8
    conc[HAEM] = nucleus * _uniform(rng, (1.1, 1.5)) * look.chromatin * np.clip(1.0 + 0.25 * texture, 0.2, 3)
    paint_cytoplasm(conc, np.clip(cell - nucleus, 0.0, 1.0), nucleus, shape)
    return _finish(conc, cell, (c, c), radius)


def neutrophil_sprite(rng: np.random.Generator, px_per_um: float, look: CellLook = CellLook()) -> Sprite:
    """A neutrophil: 10-13 um, a 2-5-lobed nucleus, pale pink-lilac cytoplasm with fine granules."""

    def cytoplasm(conc, cyto, nucleus, shape):
        fine = _granules(rng, cyto, (0.12 * px_per_um, 0.2 * px_per_um), 0.4)
        conc[EOSIN] += cyto * rng.uniform(0.3, 0.5) * (1.0 + 0.3 * fine)
        conc[HAEM] += cyto * 0.08 * fine
        conc[BASO] += cyto * rng.uniform(0.03, 0.1)

    lobes = (2, 5) if rng.uniform() < 0.95 else (1, 1)  # a few band forms: one curved lobe
    return _granulocyte(rng, px_per_um, look, (10.0, 13.0), lobes, cytoplasm)


def eosinophil_sprite(rng: np.random.Generator, px_per_um: float, look: CellLook = CellLook()) -> Sprite:
    """An eosinophil: 12-15 um, a (mostly) bilobed nucleus, cytoplasm packed with orange-red granules."""

    def cytoplasm(conc, cyto, nucleus, shape):
        cell = np.clip(cyto + 0.3 * nucleus, 0.0, 1.0)  # a few granules lie over the nucleus
        granules = _granules(rng, cell, (0.28 * px_per_um, 0.4 * px_per_um), 0.85)
        conc[GRANULE] += np.minimum(granules, cyto + nucleus) * rng.uniform(0.9, 1.5) + cyto * 0.15

    return _granulocyte(rng, px_per_um, look, (12.0, 15.0), (2, 3), cytoplasm)


def basophil_sprite(rng: np.random.Generator, px_per_um: float, look: CellLook = CellLook()) -> Sprite:
    """A basophil: 10-14 um, coarse dark purple-blue granules that hide most of the lobed nucleus."""

    def cytoplasm(conc, cyto, nucleus, shape):
        cell = np.clip(cyto + nucleus, 0.0, 1.0)
        granules = _granules(rng, cell, (0.3 * px_per_um, 0.55 * px_per_um), 0.5)
        conc[HAEM] *= 0.6
        conc[HAEM] += np.minimum(granules, cell) * rng.uniform(1.2, 1.8)
        conc[BASO] += cyto * rng.uniform(0.15, 0.3)

    return _granulocyte(rng, px_per_um, look, (10.0, 14.0), (2, 2), cytoplasm)


def monocyte_sprite(rng: np.random.Generator, px_per_um: float, look: CellLook = CellLook()) -> Sprite:
    """A monocyte: 12-20 um, a folded (kidney or horseshoe) nucleus of lacy chromatin, grey-blue cytoplasm."""
    radius = _uniform(rng, (12.0, 19.5)) * look.size * px_per_um / 2.0
    side, c, shape = _box(2.0 * radius, 1.15)
    cell = _fill(shape, (c, c), _outline(rng, radius, 0.07))
    nuc_radius = radius * rng.uniform(0.55, 0.68)
    shift = (radius - nuc_radius) * rng.uniform(0.1, 0.6)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    nc = (c + shift * np.cos(direction), c + shift * np.sin(direction))
    outline = _outline(
        rng, nuc_radius, 0.08, aspect=rng.uniform(1.2, 1.6), cleft=rng.uniform(0.35, 0.7), cleft_width=(0.5, 0.9)
    )
    nucleus = np.minimum(_fill(shape, nc, outline), cv2.erode(cell, np.ones((3, 3), np.uint8)))
    lacy = _texture(rng, shape, max(0.6, 0.35 * px_per_um))
    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    conc[HAEM] = nucleus * rng.uniform(0.75, 1.0) * look.chromatin * np.clip(1.0 + 0.3 * lacy, 0.2, 3)
    cyto = np.clip(cell - nucleus, 0.0, 1.0)
    conc[BASO] = cyto * rng.uniform(0.25, 0.45) * look.cytoplasm * (1.0 + 0.15 * _texture(rng, shape, 0.4 * px_per_um))
    conc[EOSIN] = cyto * rng.uniform(0.05, 0.15)
    for _ in range(int(rng.integers(0, 3))):  # a few small vacuoles now and then
        r = max(1.0, rng.uniform(0.3, 0.5) * px_per_um)
        at, dist = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.0, max(0.0, radius - r - 1.0))
        pos = (c + dist * np.cos(at), c + dist * np.sin(at))
        hole = 1.0 - 0.8 * _disc(shape, pos, r) * cyto
        conc[BASO] *= hole
    return _finish(conc, cell, (c, c), radius)


def smudge_sprite(rng: np.random.Generator, px_per_um: float, look: CellLook = CellLook()) -> Sprite:
    """A smudge cell: a ruptured lymphocyte, a pale ragged smear of nuclear material without cytoplasm, 8-16 um.

    Its chromatin is a blotchy mesh drawn out a little along the spreading direction (the "basket"
    of a basket cell); its density fades towards a frayed edge.
    """
    radius = _uniform(rng, (8.0, 16.0)) * look.size * px_per_um / 2.0
    side, c, shape = _box(2.0 * radius, 1.5)
    body = _fill(shape, (c, c), _outline(rng, radius, 0.3, aspect=rng.uniform(1.0, 1.7)))
    # Fray the edge: erode the outline by a noise field so it breaks up into strands.
    fray = _texture(rng, shape, max(0.6, 0.4 * px_per_um))
    body = np.clip(body * (1.0 + 0.6 * fray) - 0.25, 0.0, 1.0)
    body = cv2.GaussianBlur(body, (0, 0), max(0.8, 0.25 * px_per_um))
    # Chromatin: blotches stretched a little along one direction.
    k = max(3, int(radius * 0.35)) | 1
    line = np.zeros((k, k), np.float32)
    line[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0.0, 180.0), 1.0)
    mesh = cv2.filter2D(_texture(rng, shape, max(0.6, 0.3 * px_per_um)), -1, cv2.warpAffine(line, rot, (k, k)))
    mesh = 0.5 * (mesh - mesh.mean()) / (mesh.std() + 1e-6) + 0.5 * _texture(rng, shape, max(0.6, 0.5 * px_per_um))
    conc = np.zeros((N_STAINS, side, side), dtype=np.float32)
    conc[HAEM] = body * rng.uniform(0.35, 0.7) * look.chromatin * np.clip(1.0 + 0.45 * mesh, 0.1, 3)
    conc[BASO] = body * 0.1
    # What is left has no sharp outline: the mask is where the smear is at least half its typical density.
    mask = np.where(cv2.GaussianBlur(body, (0, 0), max(1.0, 0.5 * px_per_um)) >= 0.4, 255, 0).astype(np.uint8)
    return Sprite(conc=conc, mask=_largest_component(mask), centre=(c, c), radius=float(radius))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 0/255 mask, holes filled (a cell is one piece)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    if contours:
        cv2.drawContours(out, [max(contours, key=cv2.contourArea)], -1, 255, thickness=-1)
    return out


OTHER_SPRITES = {
    "neutrophil": neutrophil_sprite,
    "eosinophil": eosinophil_sprite,
    "monocyte": monocyte_sprite,
    "basophil": basophil_sprite,
    "smudge": smudge_sprite,
}
