"""Cell sprites: small stain-concentration patches for red cells, platelets and white cells.

A sprite is drawn once in its own bounding box and then added into the slide's concentration
stack (see ``stain.py``), so the cost of a cell is its box, not the slide. White cells follow the
FAB morphology of their kind (``MORPHOLOGY``); everything is in units of the slide's red-cell
diameter so magnification can vary per slide.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.synth.stain import BASO, EOSIN, HAEM

WHITE_KINDS = ("normal", "L1", "L2", "L3")
_SHIFT = 4  # cv2.fillPoly sub-pixel bits: polygons are placed to 1/16 px
_N_VERTICES = 96


@dataclass(frozen=True)
class Morphology:
    """Ranges that define one white-cell kind; each value is drawn uniformly in ``(min, max)``.

    Attributes:
        cell_ratio: cell diameter (cytoplasm included) / red-cell diameter.
        nucleus_ratio: nucleus diameter / cell diameter; 1 minus it is the cytoplasm amount.
        nucleus_aspect: long / short axis of the nucleus.
        nucleus_offset: nucleus centre shift, fraction of the room the cytoplasm leaves.
        outline_wobble: amplitude of the low harmonics of the cell outline (fraction of radius).
        nucleus_wobble: same for the nucleus outline (irregular nuclei have more).
        cleft_probability: chance of a cleft (a deep notch) in the nucleus.
        cleft_depth: depth of the cleft, fraction of the nucleus radius.
        chromatin: mean haematoxylin concentration of the nucleus (denser is darker).
        chromatin_grain: size of chromatin texture, fraction of the nucleus radius.
        chromatin_contrast: relative amplitude of the chromatin texture (clumped is high).
        nucleoli: number of nucleoli (inclusive range).
        nucleolus_size: nucleolus radius, fraction of the nucleus radius.
        cytoplasm: basophilic-stain concentration of the cytoplasm (deep blue is high).
        vacuoles: number of cytoplasmic vacuoles (inclusive range).
        vacuole_size: vacuole radius, fraction of the cell radius.
    """

    cell_ratio: tuple[float, float]
    nucleus_ratio: tuple[float, float]
    nucleus_aspect: tuple[float, float]
    nucleus_offset: tuple[float, float]
    outline_wobble: float
    nucleus_wobble: float
    cleft_probability: float
    cleft_depth: tuple[float, float]
    chromatin: tuple[float, float]
    chromatin_grain: tuple[float, float]
    chromatin_contrast: tuple[float, float]
    nucleoli: tuple[int, int]
    nucleolus_size: tuple[float, float]
    cytoplasm: tuple[float, float]
    vacuoles: tuple[int, int]
    vacuole_size: tuple[float, float]


MORPHOLOGY: dict[str, Morphology] = {
    # Mature small lymphocyte: small, dense round nucleus of clumped chromatin, thin pale rim.
    "normal": Morphology(
        cell_ratio=(1.1, 1.35),
        nucleus_ratio=(0.82, 0.9),
        nucleus_aspect=(1.0, 1.1),
        nucleus_offset=(0.2, 0.8),
        outline_wobble=0.025,
        nucleus_wobble=0.03,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin=(1.25, 1.5),
        chromatin_grain=(0.08, 0.14),
        chromatin_contrast=(0.3, 0.42),
        nucleoli=(0, 0),
        nucleolus_size=(0.0, 0.0),
        cytoplasm=(0.3, 0.55),
        vacuoles=(0, 0),
        vacuole_size=(0.0, 0.0),
    ),
    # FAB L1: small blasts, round regular nucleus, fine homogeneous chromatin, scant cytoplasm.
    "L1": Morphology(
        cell_ratio=(1.3, 1.6),
        nucleus_ratio=(0.74, 0.82),
        nucleus_aspect=(1.0, 1.12),
        nucleus_offset=(0.0, 0.5),
        outline_wobble=0.025,
        nucleus_wobble=0.025,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin=(0.85, 1.05),
        chromatin_grain=(0.03, 0.05),
        chromatin_contrast=(0.05, 0.1),
        nucleoli=(0, 1),
        nucleolus_size=(0.08, 0.12),
        cytoplasm=(0.6, 0.9),
        vacuoles=(0, 0),
        vacuole_size=(0.0, 0.0),
    ),
    # FAB L2: large and heterogeneous, irregular often cleft nucleus, prominent nucleoli, more cytoplasm.
    "L2": Morphology(
        cell_ratio=(1.7, 2.3),
        nucleus_ratio=(0.6, 0.72),
        nucleus_aspect=(1.05, 1.35),
        nucleus_offset=(0.1, 0.6),
        outline_wobble=0.06,
        nucleus_wobble=0.13,
        cleft_probability=0.75,
        cleft_depth=(0.35, 0.6),
        chromatin=(0.75, 0.95),
        chromatin_grain=(0.04, 0.1),
        chromatin_contrast=(0.15, 0.25),
        nucleoli=(1, 3),
        nucleolus_size=(0.13, 0.2),
        cytoplasm=(0.4, 0.75),
        vacuoles=(0, 0),
        vacuole_size=(0.0, 0.0),
    ),
    # FAB L3 (Burkitt type): medium-large, round-oval nucleus, fine stippled chromatin, 2-3 nucleoli,
    # deeply basophilic cytoplasm with prominent vacuoles.
    "L3": Morphology(
        cell_ratio=(1.55, 1.95),
        nucleus_ratio=(0.6, 0.7),
        nucleus_aspect=(1.0, 1.25),
        nucleus_offset=(0.0, 0.4),
        outline_wobble=0.035,
        nucleus_wobble=0.03,
        cleft_probability=0.0,
        cleft_depth=(0.0, 0.0),
        chromatin=(0.8, 1.0),
        chromatin_grain=(0.03, 0.05),
        chromatin_contrast=(0.12, 0.2),
        nucleoli=(2, 3),
        nucleolus_size=(0.1, 0.15),
        cytoplasm=(1.3, 1.7),
        vacuoles=(5, 10),
        vacuole_size=(0.065, 0.105),
    ),
}

MAX_CELL_RATIO = max(m.cell_ratio[1] * (1.0 + 2.0 * m.outline_wobble) for m in MORPHOLOGY.values())


@dataclass(frozen=True, eq=False)
class Sprite:
    """A drawn cell in its own box.

    Attributes:
        conc: float32 3xhxw stain-concentration planes (HAEM, EOSIN, BASO) to add into the slide.
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
    rng: np.random.Generator, radius: float, wobble: float, aspect: float = 1.0, cleft: float = 0.0
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
        r *= 1.0 - cleft * np.exp(-((delta / rng.uniform(0.22, 0.38)) ** 2))
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


def red_cell_sprite(rng: np.random.Generator, diameter: float) -> Sprite:
    """A red cell: a pale disc with the lighter centre of a biconcave cell and a slightly darker rim.

    Args:
        rng: generator for the cell's size, shape and pallor.
        diameter: the slide's mean red-cell diameter in pixels.

    Returns:
        A ``Sprite`` with only the EOSIN channel set and an empty mask.
    """
    d = diameter * rng.uniform(0.9, 1.1)
    aspect = rng.uniform(1.0, 1.12)
    rx, ry = d / 2.0 * np.sqrt(aspect), d / 2.0 / np.sqrt(aspect)
    side = int(np.ceil(2.0 * rx)) + 4
    c = side / 2.0
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) - c + 0.5
    angle = rng.uniform(0.0, np.pi)
    u = (x * np.cos(angle) + y * np.sin(angle)) / rx
    v = (-x * np.sin(angle) + y * np.cos(angle)) / ry
    rho = np.sqrt(u * u + v * v)
    edge = np.clip((1.0 - rho) * (d / 2.0) / 1.2 + 0.5, 0.0, 1.0)  # ~1.2 px soft edge
    # Central pallor: a flat-topped dip (4th power) so the pale centre has a visible edge, as on a biconcave cell.
    pallor = rng.uniform(0.45, 0.75) * np.exp(-((rho / rng.uniform(0.4, 0.52)) ** 4))
    rim = 0.15 * np.exp(-(((rho - 0.86) / 0.12) ** 2))
    conc = np.zeros((3, side, side), dtype=np.float32)
    conc[EOSIN] = rng.uniform(0.85, 1.15) * 1.2 * (1.0 - pallor + rim) * edge
    return Sprite(conc=conc, mask=np.zeros((side, side), np.uint8), centre=(c, c), radius=d / 2.0)


def platelet_sprite(rng: np.random.Generator, diameter: float) -> Sprite:
    """A platelet: a small irregular purple granular fragment.

    Args:
        rng: generator for shape and granules.
        diameter: the slide's mean red-cell diameter in pixels (platelets are ~0.25-0.45 of it).

    Returns:
        A ``Sprite`` with HAEM and BASO set and an empty mask.
    """
    radius = max(1.5, diameter * rng.uniform(0.12, 0.22))
    side = int(np.ceil(2.6 * radius)) + 4
    c = side / 2.0
    body = _fill((side, side), (c, c), _outline(rng, radius, wobble=0.35, aspect=rng.uniform(1.0, 1.5)))
    body = cv2.GaussianBlur(body, (0, 0), 0.6)
    granules = np.clip(_texture(rng, (side, side), 0.7), -1.0, 2.5)
    conc = np.zeros((3, side, side), dtype=np.float32)
    conc[HAEM] = body * rng.uniform(0.4, 0.65) * (1.0 + 0.45 * granules)
    conc[BASO] = body * 0.3
    return Sprite(conc=conc, mask=np.zeros((side, side), np.uint8), centre=(c, c), radius=radius)


def white_cell_sprite(rng: np.random.Generator, kind: str, rbc_diameter: float) -> Sprite:
    """A white cell of one kind, with nucleus, chromatin, nucleoli, cytoplasm and vacuoles.

    Args:
        rng: generator for all of the cell's random features.
        kind: ``normal`` (mature lymphocyte) or a blast ``L1`` / ``L2`` / ``L3``.
        rbc_diameter: the slide's mean red-cell diameter in pixels; the cell scales with it.

    Returns:
        A ``Sprite``: HAEM (nucleus) and BASO (cytoplasm) set; ``mask`` is the whole cell,
        cytoplasm included, 0/255.
    """
    if kind not in MORPHOLOGY:
        raise ValueError(f"unknown white-cell kind {kind!r}; allowed: {', '.join(WHITE_KINDS)}")
    m = MORPHOLOGY[kind]
    radius = rbc_diameter * _uniform(rng, m.cell_ratio) / 2.0
    side = int(np.ceil(2.0 * radius * (1.0 + 2.0 * m.outline_wobble))) + 6
    c = side / 2.0
    shape = (side, side)
    cell_outline = _outline(rng, radius, m.outline_wobble)
    cell = _fill(shape, (c, c), cell_outline)

    # Nucleus: shifted towards one side (lymphocytes are eccentric), kept inside the cell.
    nuc_radius = radius * _uniform(rng, m.nucleus_ratio)
    shift = (radius - nuc_radius) * _uniform(rng, m.nucleus_offset)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    nc = (c + shift * np.cos(direction), c + shift * np.sin(direction))
    cleft = _uniform(rng, m.cleft_depth) if rng.uniform() < m.cleft_probability else 0.0
    nucleus_outline = _outline(rng, nuc_radius, m.nucleus_wobble, aspect=_uniform(rng, m.nucleus_aspect), cleft=cleft)
    nucleus = np.minimum(_fill(shape, nc, nucleus_outline), cv2.erode(cell, np.ones((3, 3), np.uint8)))

    # Chromatin: the texture's grain and contrast separate clumped (mature) from fine (blast) chromatin.
    grain = max(0.6, nuc_radius * _uniform(rng, m.chromatin_grain))
    texture = _texture(rng, shape, grain)
    if kind == "normal":
        texture = np.tanh(1.5 * texture)  # clumps: blobs with sharp-ish borders, not smooth waves
    elif kind == "L2":
        texture = 0.6 * texture + 0.8 * _texture(rng, shape, nuc_radius * 0.3)  # heterogeneous
    haem = nucleus * _uniform(rng, m.chromatin) * np.clip(1.0 + _uniform(rng, m.chromatin_contrast) * texture, 0.2, 3)
    baso = np.clip(cell - nucleus, 0.0, 1.0) * _uniform(rng, m.cytoplasm) * (1.0 + 0.08 * _texture(rng, shape, 3.0))

    # Nucleoli: pale bluish bodies with a slightly condensed rim.
    for _ in range(int(rng.integers(m.nucleoli[0], m.nucleoli[1] + 1))):
        r = max(1.2, nuc_radius * _uniform(rng, m.nucleolus_size))
        at = rng.uniform(0.0, 2.0 * np.pi)
        dist = rng.uniform(0.0, 0.5) * nuc_radius
        pos = (nc[0] + dist * np.cos(at), nc[1] + dist * np.sin(at))
        body = _disc(shape, pos, r) * nucleus
        ring = np.clip(_disc(shape, pos, r + 1.2) - body, 0.0, 1.0) * nucleus
        haem *= 1.0 - 0.7 * body
        haem += 0.25 * ring
        baso += 0.45 * body

    # Vacuoles: clear round holes, mostly in the cytoplasm (some overlie the nucleus, as in real L3).
    n_vacuoles = int(rng.integers(m.vacuoles[0], m.vacuoles[1] + 1))
    placed = 0
    for _ in range(n_vacuoles * 20):
        if placed == n_vacuoles:
            break
        r = max(1.3, radius * _uniform(rng, m.vacuole_size))
        at, dist = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.0, radius - r - 1.0)
        pos = (c + dist * np.cos(at), c + dist * np.sin(at))
        px, py = int(pos[0]), int(pos[1])
        if cell[py, px] < 0.99 or (nucleus[py, px] > 0.05 and rng.uniform() < 0.9):
            continue
        hole = 1.0 - 0.92 * _disc(shape, pos, r)
        haem *= hole
        baso *= hole
        placed += 1

    conc = np.zeros((3, side, side), dtype=np.float32)
    soften = 0.5  # the optics blur is drawn per slide; this only removes the polygon's staircase
    conc[HAEM] = cv2.GaussianBlur(haem, (0, 0), soften)
    conc[BASO] = cv2.GaussianBlur(baso, (0, 0), soften)
    mask = np.where(cell >= 0.5, 255, 0).astype(np.uint8)
    return Sprite(conc=conc, mask=mask, centre=(c, c), radius=float(radius))
