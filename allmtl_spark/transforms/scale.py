"""The physical scale of a smear photo, measured on its red cells (pure numpy/OpenCV).

Red cells are haematology's ruler: about 7.5-8 um across on a dried smear (``units.RBC_DIAMETER_UM``)
and fairly constant between people. :func:`estimate_pixel_size` finds them by colour, measures their
diameter in pixels two ways, and divides:

1. a mask of the stained, not purple-blue pixels: luminance optical density against the glass (a
   quadratic surface fitted to the brightest pixels of blocks, so vignetting and a lamp gradient do not
   count as stain), above a low cut (a third of the red cells' typical density, so pale centres stay
   in); holes that are convex or faintly stained (pale centres) are filled, the glass gaps between
   packed cells are not;
2. the distance-transform peaks of that mask (white cells count as cell, not background): each red
   cell's centre is a peak whose value is its inscribed radius, also where cells touch or overlap; red
   cells that stand alone give their area's equivalent diameter, cells cut by the border or a white
   cell a circle fitted to their free edge;
3. the mode of those diameters (red cells are the most numerous object of a smear; white cells,
   platelets and clumps are outliers around it; merged overlapping cells make a larger mode, so the
   smallest strong mode down to 1/2.2 of the top one is taken), then the median of the measures near it.

The work runs on a reduced copy: first the whole image at about ``max_pixels``, then, where the red
cells came out small, a central window at a size where they are about ``target_rbc_px`` across.

``confidence`` (0..1) grows with the number of red cells that agree with the mode and falls with
their spread and with the share of measures far from it; a caller trusts the estimate above a
threshold (``ingest.pixel_size_min_confidence``) and otherwise uses a default.

Images are HxWx3 uint8 RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark import units
from allmtl_spark.transforms.color import check_rgb

MIN_RBC_PX = 6.0  # below this a red cell has too few pixels to measure (and to segment anything)
MIN_STAIN_OD = 0.03  # optical density that is stain, not sensor noise on glass (red cells: about 0.06-0.2)


@dataclass(frozen=True)
class ScaleEstimate:
    """What the red cells say about an image's scale.

    Attributes:
        pixel_size_um: micrometres per pixel, or None when no red cells could be measured.
        rbc_diameter_px: the red cells' typical diameter in the image's pixels, or None.
        confidence: 0 (nothing to go on) .. 1 (many red cells of one size).
        cells: red cells whose diameter agreed with the mode (within 20 %).
        spread: relative interquartile range of those diameters (0 = all alike); nan without cells.
    """

    pixel_size_um: float | None
    rbc_diameter_px: float | None
    confidence: float
    cells: int
    spread: float

    @staticmethod
    def none() -> ScaleEstimate:
        return ScaleEstimate(None, None, 0.0, 0, float("nan"))


def glass_level(channel: np.ndarray, blocks: int = 8, percentile: float = 99.0) -> np.ndarray:
    """The clear-glass brightness under every pixel of one channel, float32 HxW.

    The lamp field is uneven (vignetting, a gradient across the field, soft blotches), so one global
    background level would put a dim corner's glass among the cells. Glass is the brightest thing on
    a smear: each block (``blocks`` to the shorter side) gives the ``percentile``-th value of the
    smoothed channel (so sensor noise does not lift it). A quadratic surface (vignetting and gradient)
    is fitted to the blocks' log levels, leaving out the blocks well below it (covered by cells), and
    the kept blocks' residuals (the blotches) are added back, smoothly interpolated. The surface, not
    the nearest block, carries the level out to the corners, where vignetting is strongest.
    """
    h, w = channel.shape
    if min(h, w) >= 64 * blocks:  # glass varies slowly: every other pixel is plenty
        return cv2.resize(glass_level(channel[::2, ::2], blocks, percentile), (w, h), interpolation=cv2.INTER_LINEAR)
    smooth = cv2.GaussianBlur(channel.astype(np.float32), (0, 0), 2.0)
    side = max(8, min(h, w) // blocks)
    ny, nx = max(1, h // side), max(1, w // side)
    grid = smooth[: ny * side, : nx * side].reshape(ny, side, nx, side).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    k = int(round(percentile / 100.0 * (grid.shape[2] - 1)))
    level = np.log(np.maximum(np.partition(grid, k, axis=2)[:, :, k], 1.0)).astype(np.float64)
    if ny * nx < 9:
        return cv2.resize(np.exp(level).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # block centres in -1..1 over the whole frame
    cy = ((np.arange(ny) + 0.5) * side / h) * 2 - 1
    cx = ((np.arange(nx) + 0.5) * side / w) * 2 - 1
    yy, xx = np.meshgrid(cy, cx, indexing="ij")

    def design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)

    a, target = design(xx.ravel(), yy.ravel()), level.ravel()
    kept = np.ones(target.size, bool)
    for _ in range(3):
        coef = np.linalg.lstsq(a[kept], target[kept], rcond=None)[0]
        residual = target - a @ coef
        kept = residual > -0.03  # a block 3 % below the surface holds no glass: it is under cells
        if kept.sum() < 6:
            kept[:] = True
            break
    residual = np.where(kept, np.clip(residual, -0.1, 0.1), 0.0).reshape(ny, nx)
    u = (np.arange(w, dtype=np.float64) + 0.5) / w * 2 - 1
    v = (np.arange(h, dtype=np.float64) + 0.5) / h * 2 - 1
    x, y = u[None, :], v[:, None]
    surface = (coef[0] + coef[1] * x + coef[2] * y + coef[3] * x * x + coef[4] * x * y + coef[5] * y * y).astype(
        np.float32
    )
    blotches = cv2.resize(residual.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.exp(surface + blotches)


def _density(image_rgb: np.ndarray) -> np.ndarray:
    """Optical density of the luminance against the local glass level, float32 HxW (0 = clear glass).

    Luminance, not one colour channel: a camera's colour processing (saturation, white balance) can
    push a stained object's single channel above the glass, but it keeps luminance, and every stained
    object is darker than glass in luminance.
    """
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    glass = glass_level(grey)
    od = np.log(np.maximum(glass, 8.0) + 1.0) - np.log(grey.astype(np.float32) + 1.0)
    return np.maximum(od, 0.0)


def purple_mask(image_rgb: np.ndarray, margin: float = 12.0) -> np.ndarray:
    """White-cell nuclei, basophilic cytoplasm and platelets: blue above red after a grey-world balance (HxW bool)."""
    means = np.array(cv2.mean(image_rgb)[:3])
    gains = means.mean() / np.maximum(means, 1e-6)
    blue_minus_red = image_rgb[..., 2].astype(np.float32) * gains[2] - image_rgb[..., 0].astype(np.float32) * gains[0]
    return cv2.GaussianBlur(blue_minus_red, (0, 0), 1.0) > margin


def red_cell_mask(image_rgb: np.ndarray, low_fraction: float = 0.35) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of red cells and of purple-blue objects (two HxW uint8 0/255 masks), and the relative density.

    Optical density against the local glass level, above a low cut: ``low_fraction`` of the red cells'
    typical density (the median above Otsu's cut among the pixels that are not purple-blue).
    Purple-blue pixels (white cells, platelets) are the second mask. The third output is every
    pixel's density over that typical density, float32 HxW (0 glass, about 1 a red cell, 0.3-0.6 a
    pale centre, 2 an overlap).
    """
    od = cv2.GaussianBlur(_density(image_rgb), (0, 0), 1.0)
    purple = cv2.dilate(purple_mask(image_rgb).view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    purple_u8 = purple.view(np.uint8) * np.uint8(255)
    empty = np.zeros(od.shape, np.uint8)
    nothing = (empty, purple_u8, np.zeros(od.shape, np.float32))
    # Optical density is against the local glass level, so glass is near 0 whatever the lamp did. Otsu
    # splits the pixels that are not purple-blue into glass and red cells (in a packed monolayer, into
    # one layer and overlaps: the cut then still lies above the glass); the red cells' typical density
    # is the median above the cut.
    candidates = np.clip(od[~purple] * 255.0, 0, 255).astype(np.uint8)
    if candidates.size < 16:
        return nothing
    cut, _ = cv2.threshold(candidates.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    above = candidates[candidates > cut]
    if above.size == 0:
        return nothing
    body = float(np.median(above)) / 255.0
    if body < MIN_STAIN_OD:
        return nothing
    mask = ((od > max(low_fraction * body, MIN_STAIN_OD)) & ~purple).view(np.uint8) * np.uint8(255)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)), purple_u8, od / np.float32(body)


def fill_round_holes(
    mask: np.ndarray, density: np.ndarray | None = None, min_solidity: float = 0.85, pale: float = 0.15
) -> np.ndarray:
    """Fill a red cell's pale centre, not the glass gaps between packed cells.

    A hole is a pale centre when it is convex (its area over its convex hull's area is at least
    ``min_solidity``: a gap between three touching discs has about 0.4-0.7, a clean pale centre above
    0.9) or when its inside is stained: the median relative density of the hole less its rim (blur
    spreads the cells' edges into any hole) is at least ``pale`` (a pale centre keeps a third or more
    of a cell's density, the glass in a gap none).

    Args:
        mask: HxW uint8 0/255.
        density: HxW float32 density relative to a red cell's (``red_cell_mask``), or None (convexity only).
        min_solidity: see above.
        pale: see above.

    Returns:
        HxW uint8 0/255.
    """
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return mask
    out = mask.copy()
    keep = []
    for hole, links in zip(contours, hierarchy[0], strict=True):
        if links[3] < 0:
            continue
        area = cv2.contourArea(hole)
        hull = cv2.contourArea(cv2.convexHull(hole))
        if area <= 4 or (hull > 0 and area / hull >= min_solidity):
            keep.append(hole)
        elif density is not None:
            x, y, w, h = cv2.boundingRect(hole)
            inside = np.zeros((h + 4, w + 4), np.uint8)
            cv2.drawContours(inside, [hole - np.array([x - 2, y - 2])], -1, 255, -1)
            core = cv2.erode(inside, np.ones((5, 5), np.uint8))[2:-2, 2:-2] > 0
            if core.any() and np.median(density[y : y + h, x : x + w][core]) >= pale:
                keep.append(hole)
    if keep:
        cv2.drawContours(out, keep, -1, 255, -1)
    return out


def red_cell_diameters(mask: np.ndarray, purple: np.ndarray | None = None, min_radius: float = 2.0) -> np.ndarray:
    """Candidate red-cell diameters (pixels) in a red-cell mask: 2 x distance-transform peaks, and the
    equivalent diameters of isolated round components.

    A peak is a pixel whose distance to the background is the largest within half its own value
    (checked against maximum filters of a few sizes), so a cell's centre counts once while the
    ridge between two overlapping cells does not. Purple-blue objects count as cell, not background,
    in the distance transform: a red cell partly under a white cell still measures to its own free
    edge (a peak inside the purple object is not counted). Cells cut by the image border are not
    measured.

    Args:
        mask: HxW uint8 0/255 red-cell mask (holes already filled).
        purple: HxW uint8 0/255 mask of purple-blue objects, or None.
        min_radius: peaks with a smaller inscribed radius (pixels) are not measured.

    Returns:
        float64 array of diameters, pixels.
    """
    if not mask.any():
        return np.empty(0)
    h, w = mask.shape
    solid = mask if purple is None else cv2.bitwise_or(mask, purple)
    framed = cv2.copyMakeBorder(solid, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(framed, cv2.DIST_L2, 5)[1:-1, 1:-1]
    peaks = np.zeros(mask.shape, bool)
    top = float(dist.max())
    for low, high in ((2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 1e9)):
        if low > top or high <= min_radius:
            continue
        size = int(2 * math.ceil(0.5 * low) + 1)
        window = cv2.dilate(dist, np.ones((size, size), np.uint8))
        peaks |= (dist >= low) & (dist < high) & (dist >= window)
    peaks &= mask > 0
    ys, xs = np.nonzero(peaks)
    radii = dist[ys, xs]
    keep = (radii >= min_radius) & (xs > radii + 2) & (ys > radii + 2) & (xs < w - radii - 3) & (ys < h - radii - 3)
    ys, xs, radii = ys[keep], xs[keep], radii[keep]
    # One measure per peak: the pixels of a plateau fall into one cell of a grid as coarse as their radius.
    step = np.maximum(1.0, radii)
    keys = np.stack([np.log2(step).astype(np.int64), (ys // step).astype(np.int64), (xs // step).astype(np.int64)])
    _, first = np.unique(keys, axis=1, return_index=True) if radii.size else (None, np.empty(0, int))
    from_peaks = 2.0 * radii[first]

    alone = []
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    near_purple = cv2.dilate(purple, np.ones((5, 5), np.uint8)) if purple is not None else None
    for contour in contours:
        area = cv2.contourArea(contour)
        if area < 20:
            continue
        hull = cv2.contourArea(cv2.convexHull(contour))
        if hull <= 0 or area / hull < 0.95:  # not one convex cell
            continue
        points = contour[:, 0, :]
        free = (points[:, 0] > 1) & (points[:, 1] > 1) & (points[:, 0] < w - 2) & (points[:, 1] < h - 2)
        if near_purple is not None:
            free &= near_purple[points[:, 1], points[:, 0]] == 0
        if free.all():
            perimeter = cv2.arcLength(contour, True)
            if 4 * math.pi * area / max(perimeter, 1e-6) ** 2 > 0.8:
                alone.append(2.0 * math.sqrt(area / math.pi))
        elif free.sum() >= 12 and len(from_peaks) < 20:  # few cells: fit a circle to a cut cell's free edge
            radius = _circle_radius(points[free].astype(np.float64))
            if radius is not None:
                alone.append(2.0 * radius)
    return np.concatenate([from_peaks, np.asarray(alone, float)])


def _circle_radius(points: np.ndarray, min_arc_deg: float = 150.0, max_rms: float = 0.05) -> float | None:
    """Radius of the circle fitted (least squares, Kasa) to (n, 2) edge points, if they trace a circle.

    None unless the points cover at least ``min_arc_deg`` of it and lie within ``max_rms`` of its radius.
    """
    x, y = points[:, 0], points[:, 1]
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    cx, cy = a / 2, b / 2
    squared = c + cx * cx + cy * cy
    if squared <= 0:
        return None
    radius = math.sqrt(squared)
    distance = np.hypot(x - cx, y - cy)
    if np.sqrt(np.mean((distance - radius) ** 2)) > max_rms * radius:
        return None
    angles = np.sort(np.arctan2(y - cy, x - cx))
    gaps = np.diff(np.concatenate([angles, angles[:1] + 2 * np.pi]))
    covered = 360.0 - math.degrees(gaps.max())
    return radius if covered >= min_arc_deg else None


def _mode_estimate(diameters: np.ndarray) -> tuple[float | None, int, float, float]:
    """(typical diameter, measures within 20 % of it, their relative IQR, share of all measures)."""
    d = diameters[diameters >= MIN_RBC_PX / 2]
    if d.size < 3:
        return None, 0, float("nan"), 0.0
    logs = np.log(d)
    grid = np.linspace(logs.min(), logs.max(), 200) if logs.max() > logs.min() else logs[:1]
    # Weighted by size: a red cell outweighs the specks and slivers a noisy mask also peaks in, while a
    # few large blobs (white cells, clumps) do not outweigh the many red cells.
    density = (np.exp(-0.5 * ((grid[:, None] - logs[None, :]) / 0.08) ** 2) * d[None, :]).sum(axis=1)
    top = int(np.argmax(density))
    # Packed cells that overlap merge into larger blobs: when a strong mode (half the top one or more)
    # lies at a smaller size, down to the top one over 2.2, it is the single cells (specks, platelets and
    # pale-centre rings measure below that).
    peaks = np.flatnonzero(
        (density >= 0.5 * density[top])
        & (density >= np.r_[-np.inf, density[:-1]])
        & (density >= np.r_[density[1:], -np.inf])
        & (grid >= grid[top] - np.log(2.2))
    )
    mode = float(np.exp(grid[peaks.min() if peaks.size else top]))
    near = d[np.abs(d / mode - 1.0) <= 0.2]
    if near.size < 3:
        return None, int(near.size), float("nan"), near.size / d.size
    q1, median, q3 = np.percentile(near, [25, 50, 75])
    share = float(near.sum() / d.sum())  # weighted as the mode
    return float(median), int(near.size), float((q3 - q1) / median), share


def _measure(image_rgb: np.ndarray, min_radius: float = 2.0) -> tuple[float | None, int, float, float]:
    mask, purple, density = red_cell_mask(image_rgb)
    return _mode_estimate(red_cell_diameters(fill_round_holes(mask, density), purple, min_radius))


def _reduced(image_rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor >= 0.999:
        return np.ascontiguousarray(image_rgb)
    h, w = image_rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    # Linear is enough down to 0.4 (the mask is smoothed afterwards) and far cheaper than area averaging.
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_LINEAR if factor >= 0.4 else cv2.INTER_AREA)


def estimate_pixel_size(
    image_rgb: np.ndarray,
    rbc_diameter_um: float = units.RBC_DIAMETER_UM,
    max_pixels: int = 250_000,
    target_rbc_px: float = 24.0,
) -> ScaleEstimate:
    """Estimate micrometres per pixel of a smear photo from its red cells.

    Args:
        image_rgb: HxWx3 uint8 RGB, the whole photo (or a crop with several red cells).
        rbc_diameter_um: the red cells' physical diameter, micrometres.
        max_pixels: pixels measured per pass (bounds the cost: about 15-25 ms a pass on one core).
        target_rbc_px: red-cell diameter, in pixels, at which the second pass measures.

    Returns:
        A :class:`ScaleEstimate`; ``pixel_size_um`` None (confidence 0) when no red cells were found.
    """
    check_rgb(image_rgb)
    h, w = image_rgb.shape[:2]
    # First pass: every k-th pixel of the whole image (a strided view costs nothing to make).
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    diameter, cells, spread, share = _measure(np.ascontiguousarray(image_rgb[::step, ::step]))
    if diameter is None:
        return ScaleEstimate.none()
    full = diameter * step  # in the image's own pixels
    wanted = min(1.0, target_rbc_px / full)
    if wanted > 1.25 / step:  # the red cells were small in the first pass: measure a central window finer
        side = math.sqrt(max_pixels) / wanted
        win_w, win_h = min(w, int(side * math.sqrt(w / h))), min(h, int(side * math.sqrt(h / w)))
        x0, y0 = (w - win_w) // 2, (h - win_h) // 2
        window = _reduced(image_rgb[y0 : y0 + win_h, x0 : x0 + win_w], wanted)
        second = _measure(window, min_radius=0.25 * full * wanted)
        if second[0] is not None:
            diameter, cells, spread, share = second
            full = diameter / wanted
    if full < MIN_RBC_PX:
        return ScaleEstimate(None, full, 0.0, cells, spread)
    # Red cells vary about 5 % in diameter: a few that agree already pin the scale (3 give 0.53, 6 give 0.78);
    # a wide spread, or much of the measured area far from the mode, means the mode may not be red cells.
    agreement = min(1.0, max(0.0, 1.0 - (spread - 0.1) / 0.3))
    confidence = (1.0 - math.exp(-cells / 4.0)) * min(1.0, share / 0.5) * agreement
    try:
        pixel_size = units.check_pixel_size(rbc_diameter_um / full)
    except ValueError:
        return ScaleEstimate(None, full, 0.0, cells, spread)
    return ScaleEstimate(pixel_size, full, float(min(1.0, max(0.0, confidence))), cells, spread)


@dataclass(frozen=True)
class PixelSize:
    """The pixel size an image is processed at, and where it came from.

    Attributes:
        pixel_size_um: micrometres per pixel.
        source: ``given`` (manifest or config), ``estimated`` (from the red cells, confident) or
            ``default`` (not given, and the estimate missing or not confident).
        confidence: the red-cell estimate's confidence (``estimated`` and ``default``); None when given.
        estimate_um: the red-cell estimate, also when it was not trusted; None when given or not found.
    """

    pixel_size_um: float
    source: str
    confidence: float | None = None
    estimate_um: float | None = None

    def __post_init__(self) -> None:
        if self.source not in units.PIXEL_SIZE_SOURCES:
            raise ValueError(f"source must be one of {units.PIXEL_SIZE_SOURCES}, got {self.source!r}")
        units.check_pixel_size(self.pixel_size_um)


def resolve_pixel_size(
    image_rgb: np.ndarray | None, given_um: float | None, default_um: float, min_confidence: float
) -> PixelSize:
    """The pixel size of one image: as given, else the red-cell estimate if confident, else the default.

    Args:
        image_rgb: the decoded image (HxWx3 uint8 RGB); only needed when ``given_um`` is None.
        given_um: micrometres per pixel from a manifest or the config, or None.
        default_um: the source's default, used when the estimate is missing or below ``min_confidence``.
        min_confidence: the lowest estimate confidence that is trusted, in [0, 1].

    Returns:
        A :class:`PixelSize`.
    """
    if given_um is not None:
        return PixelSize(units.check_pixel_size(given_um), "given")
    if image_rgb is None:
        return PixelSize(units.check_pixel_size(default_um), "default", 0.0)
    estimate = estimate_pixel_size(image_rgb)
    if estimate.pixel_size_um is not None and estimate.confidence >= min_confidence:
        return PixelSize(estimate.pixel_size_um, "estimated", estimate.confidence, estimate.pixel_size_um)
    return PixelSize(units.check_pixel_size(default_um), "default", estimate.confidence, estimate.pixel_size_um)


@dataclass(frozen=True)
class PixelSizePolicy:
    """How a job finds a slide's pixel size: the stored one, else (rows ingested before pixel sizes were
    recorded) the red-cell estimate when confident, else the default (``ingest`` section's keys)."""

    default_um: float = units.ALLIDB1_PIXEL_SIZE_UM
    min_confidence: float = 0.5

    @classmethod
    def from_ingest(cls, ingest) -> PixelSizePolicy:
        """The policy of an ``IngestConfig`` (``default_pixel_size_um``, ``pixel_size_min_confidence``)."""
        return cls(ingest.default_pixel_size_um, ingest.pixel_size_min_confidence)

    def resolve(self, image_rgb: np.ndarray, stored_um: float | None, stored_source: str | None = None) -> PixelSize:
        """The pixel size of a decoded slide whose table row holds ``stored_um`` (None: not recorded)."""
        if stored_um is not None and not (isinstance(stored_um, float) and math.isnan(stored_um)):
            source = stored_source if stored_source in units.PIXEL_SIZE_SOURCES else "given"
            return PixelSize(units.check_pixel_size(stored_um), source)
        return resolve_pixel_size(image_rgb, None, self.default_um, self.min_confidence)
