"""render_slide / render_cell_crop: determinism, physical scale, cell content, masks and boxes."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from allmtl_spark.config import ConfigError
from allmtl_spark.config.schema import SynthConfig
from allmtl_spark.synth.cells import LYMPHOID_KINDS, OTHER_KINDS
from allmtl_spark.synth.smear import SmearParams, draw_patient, draw_pixel_size, render_cell_crop, render_slide

pytestmark = pytest.mark.unit

W, H = 320, 240
# 0.2-0.3 um/px keeps a full-size slide's crowd of cells in a 320x240 test frame.
SMALL = SmearParams(pixel_size_um=(0.2, 0.3))


def _slide(seed: int, fab_class: str = "L2", params: SmearParams = SMALL, width: int = W, height: int = H, **kw):
    return render_slide(np.random.default_rng(seed), width, height, fab_class, params, **kw)


def test_same_seed_same_slide_different_seed_different():
    a, b, c = _slide(1), _slide(1), _slide(2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.cells == b.cells and a.pixel_size_um == b.pixel_size_um
    assert not np.array_equal(a.image, c.image)
    crop_a = render_cell_crop(np.random.default_rng(5), 40.0, "L3", SMALL)
    crop_b = render_cell_crop(np.random.default_rng(5), 40.0, "L3", SMALL)
    crop_c = render_cell_crop(np.random.default_rng(6), 40.0, "L3", SMALL)
    assert np.array_equal(crop_a.image, crop_b.image)
    assert not np.array_equal(crop_a.image, crop_c.image)


def test_slide_shapes_dtypes_binary_mask_and_labels():
    s = _slide(3)
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (H, W) and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask)) <= {0, 255}
    assert np.array_equal(s.mask > 0, s.labels > 0)
    assert set(np.unique(s.labels)) == set(range(len(s.cells) + 1))  # every cell has pixels
    assert s.fab_class == "L2" and 0.2 <= s.pixel_size_um <= 0.3


@pytest.mark.parametrize("fab_class", ["normal", "L1", "L2", "L3"])
def test_slide_carries_its_class_blasts_lymphocytes_and_other_white_cells(fab_class):
    seen_other = set()
    for seed in range(6):
        s = _slide(seed, fab_class, width=640, height=480)
        lymphoid = {c.kind for c in s.cells if c.kind in LYMPHOID_KINDS}
        seen_other |= {c.kind for c in s.cells if c.kind not in LYMPHOID_KINDS}
        assert lymphoid <= {fab_class, "normal"}
        assert all(c.is_blast == (c.kind in ("L1", "L2", "L3")) for c in s.cells)
        assert (s.blasts == []) if fab_class == "normal" else (len(s.blasts) >= 1)
    assert seen_other and seen_other <= set(OTHER_KINDS)


def test_blast_fraction_and_white_cell_counts_are_honoured():
    params = dataclasses.replace(
        SMALL, white_cells_per_slide=(4, 4), blast_fraction=(0.5, 0.5), other_white_cells_per_slide=(2, 2)
    )
    for seed in range(4):
        s = _slide(seed, "L1", params, 640, 480)
        assert len(s.cells) == 6
        assert len(s.blasts) == 2
        assert sum(c.kind in OTHER_KINDS for c in s.cells) == 2
    all_blasts = dataclasses.replace(params, blast_fraction=(1.0, 1.0))
    assert len(_slide(0, "L3", all_blasts, 640, 480).blasts) == 4


def test_masks_and_boxes_cover_exactly_every_white_cell():
    params = dataclasses.replace(SMALL, other_white_cells_per_slide=(2, 3))
    for seed, fab_class in enumerate(["normal", "L1", "L2", "L3"] * 2):
        s = _slide(seed, fab_class, params, width=480, height=360)
        assert any(c.kind in OTHER_KINDS for c in s.cells)
        for i, c in enumerate(s.cells):
            ys, xs = np.nonzero(s.labels == i + 1)
            assert c.box == (xs.min(), ys.min(), xs.max(), ys.max())  # the box is the cell mask's extent
            if c.kind != "smudge":  # a smudge's centre can fall in a gap of the smear
                assert s.labels[int(round(c.cy)), int(round(c.cx))] == i + 1
            if c.kind in LYMPHOID_KINDS:
                assert 0.8 * np.pi * c.radius**2 < len(xs) < 1.25 * np.pi * c.radius**2
        # Nothing is masked that no cell accounts for: the stain under the mask is white-cell stain.
        n, _ = cv2.connectedComponents(s.mask)
        assert n - 1 >= len(s.cells) * 0.99


def test_white_cells_are_stained_darker_than_the_glass_and_blue():
    for seed in range(4):
        s = _slide(seed, "L1")
        inside = s.image[s.mask > 0].astype(float)
        outside = s.image[s.mask == 0].astype(float)
        assert inside.sum(axis=1).mean() < outside.sum(axis=1).mean() - 30
        # RGB order: purple-blue nuclei and blue cytoplasm have more blue than red, red cells the reverse.
        assert inside[:, 2].mean() > inside[:, 0].mean() + 10


def _red_cell_diameters_px(image: np.ndarray, rbc_px: float) -> np.ndarray:
    """Equivalent diameters of the isolated red cells of a sparse smear (holes filled, touching and border cells
    dropped), split from the glass at half their density (Otsu on optical density against the local glass)."""
    green = cv2.GaussianBlur(image[..., 1].astype(np.float32), (0, 0), 1.0)
    # The local lamp level: the brightest green within three red cells, on an 8x smaller copy (the lamp is smooth).
    h, w = green.shape
    small = cv2.resize(green, (w // 8, h // 8), interpolation=cv2.INTER_AREA)
    k = int(3 * rbc_px / 8) | 1
    small = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    glass = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    od = np.clip(-np.log((green + 1.0) / (glass + 1.0)), 0.0, 1.0)
    _, binary = cv2.threshold((od * 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    diameters = []
    for contour in contours:
        x, y, cw, ch = cv2.boundingRect(contour)
        area = cv2.contourArea(contour)
        if x == 0 or y == 0 or x + cw >= w or y + ch >= h or area < 20:
            continue
        hull = cv2.contourArea(cv2.convexHull(contour))
        if area / max(hull, 1.0) < 0.95:  # touching pairs are not convex
            continue
        diameters.append(2.0 * np.sqrt(area / np.pi))
    return np.array(diameters)


@pytest.mark.parametrize("pixel_size_um", [0.0775, 0.155, 0.31])
def test_red_cells_measure_their_physical_size_at_the_recorded_scale(pixel_size_um):
    params = SmearParams(
        pixel_size_um=(pixel_size_um, pixel_size_um),
        rbc_coverage=(0.12, 0.12),
        white_cells_per_slide=(1, 1),
        other_white_cells_per_slide=(0, 0),
        platelets_per_rbc=(0.0, 0.0),
    )
    rng = np.random.default_rng(4)
    patient = draw_patient(rng, params)
    side = int(round(150.0 / pixel_size_um))  # 150 um of glass whatever the scale
    s = render_slide(rng, side, side, "normal", params, patient=patient)
    assert s.pixel_size_um == pixel_size_um
    # The measurement knows only roughly what to look for (twice the largest red cell for the lamp level).
    diameters = _red_cell_diameters_px(s.image, 8.0 / s.pixel_size_um)
    assert len(diameters) >= 15
    measured_um = float(np.median(diameters)) * s.pixel_size_um
    assert abs(measured_um - patient.rbc_diameter_um) < 0.1 * patient.rbc_diameter_um


def test_white_cells_keep_their_physical_size_whatever_the_pixel_size():
    def mean_diameter_um(p: float) -> float:
        params = dataclasses.replace(SMALL, pixel_size_um=(p, p), other_white_cells_per_slide=(0, 0))
        cells = [(c, p) for seed in range(6) for c in _slide(seed, "normal", params, 640, 480).cells]
        return float(np.mean([2 * c.radius * q for c, q in cells]))

    fine, coarse = mean_diameter_um(0.1), mean_diameter_um(0.25)
    assert abs(fine - coarse) < 0.08 * fine
    assert 7.0 <= fine <= 10.5  # mature lymphocytes are 7-10 um


def test_pixel_size_is_drawn_per_slide_over_the_configured_range_and_never_below_the_floor():
    params = SmearParams(pixel_size_um=(0.0775, 0.31))
    rng = np.random.default_rng(0)
    sizes = np.array([draw_pixel_size(rng, params) for _ in range(400)])
    assert sizes.min() >= 0.0775 and sizes.max() <= 0.31
    assert np.histogram(sizes, bins=4, range=(0.0775, 0.31))[0].min() > 60  # uniform over the range
    floored = [draw_pixel_size(rng, params, min_pixel_size_um=0.2) for _ in range(50)]
    assert min(floored) >= 0.2 and max(floored) <= 0.31
    assert draw_pixel_size(rng, params, min_pixel_size_um=0.5) == 0.5  # a floor above the range wins
    slides = [_slide(seed, "normal", params, 640, 480, min_pixel_size_um=0.2) for seed in range(3)]
    assert len({s.pixel_size_um for s in slides}) == 3 and all(0.2 <= s.pixel_size_um <= 0.31 for s in slides)


@pytest.mark.parametrize("fab_class", ["normal", "L1", "L2", "L3"])
def test_crop_has_one_centred_cell_and_its_mask(fab_class):
    crop = render_cell_crop(np.random.default_rng(9), 39.8, fab_class, SmearParams())
    size = crop.image.shape[0]
    assert crop.image.shape == (size, size, 3) and crop.mask.shape == (size, size)
    assert size == round(39.8 / crop.pixel_size_um)
    assert len(crop.cells) == 1
    cell = crop.cells[0]
    assert cell.kind == fab_class and cell.is_blast == (fab_class != "normal")
    assert abs(cell.cx - size / 2) <= 1.0 and abs(cell.cy - size / 2) <= 1.0
    n, _ = cv2.connectedComponents((crop.mask > 0).astype(np.uint8))
    assert n == 2  # background + one cell
    ys, xs = np.nonzero(crop.mask)
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < size - 1 and ys.max() < size - 1


def test_a_patients_slides_share_their_stain_and_cell_size():
    # Random effects per patient: two slides of one patient are closer in colour and white-cell size than
    # slides of different patients, so a split that ignores patients leaks.
    params = dataclasses.replace(SMALL, other_white_cells_per_slide=(0, 0))
    colours, sizes = [], []
    for p in range(6):
        patient = draw_patient(np.random.default_rng([8, p]), params)
        pair = [_slide(100 * p + k, "normal", params, 320, 240, patient=patient) for k in range(2)]
        colours.append([s.image[s.mask > 0].mean(0) for s in pair])
        sizes.append([np.mean([2 * c.radius * s.pixel_size_um for c in s.cells]) for s in pair])
    colours, sizes = np.array(colours), np.array(sizes)  # patients x 2 (x RGB)
    within = np.abs(colours[:, 0] - colours[:, 1]).sum(-1).mean()
    between = np.mean([np.abs(colours[i, 0] - colours[j, 1]).sum() for i in range(6) for j in range(6) if i != j])
    assert within < 0.6 * between
    within_size = np.abs(sizes[:, 0] - sizes[:, 1]).mean()
    between_size = np.mean([abs(sizes[i, 0] - sizes[j, 1]) for i in range(6) for j in range(6) if i != j])
    assert within_size < between_size
    flat = [_slide(100 + k, "normal", dataclasses.replace(params, patient_effects=0.0), patient=None) for k in range(2)]
    assert all(s.cells for s in flat)


def test_the_largest_lymphoid_cell_fits_the_smallest_allowed_crop():
    from allmtl_spark.synth.cells import MAX_LYMPHOID_DIAMETER_UM, MORPHOLOGY

    with pytest.raises(ConfigError, match="cell_crop_size_um"):
        SynthConfig(cell_crop_size_um=MAX_LYMPHOID_DIAMETER_UM - 0.1)
    worst = max(m.cell_diameter_um[1] * (1.1 + m.size_spread) for m in MORPHOLOGY.values()) * np.exp(0.15)
    assert worst <= MAX_LYMPHOID_DIAMETER_UM  # largest typical size x per-cell and patient factors
    big = SmearParams(patient_effects=3.0)  # the largest patient effects allowed
    for seed in range(20):
        crop = render_cell_crop(np.random.default_rng(seed), MAX_LYMPHOID_DIAMETER_UM, "L2", big)
        ys, xs = np.nonzero(crop.mask)
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < crop.mask.shape[1] - 1 and ys.max() < crop.mask.shape[0] - 1


def _glass_rgb(s) -> np.ndarray:
    """Median RGB of the pixels far from every cell: no white cell and well outside the red cells' density."""
    od = -np.log((s.image[..., 1].astype(np.float32) + 1.0) / 256.0)
    clear = (s.mask == 0) & (od <= np.percentile(od[s.mask == 0], 10))
    return np.median(s.image[clear].astype(np.float64), axis=0)


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the green channel: high for a focused photo, low for a blurred one."""
    return float(cv2.Laplacian(image[..., 1].astype(np.float64), cv2.CV_64F).var())


def test_out_of_distribution_ranges_reach_the_pixels():
    # The stain, optics and scale ranges are what another lab's batch is made of ("trust" renders such
    # batches by config): each range, pinned away from the default, changes the pixels the way it says.
    # With one seed every draw happens in the same order, so only the pinned range differs.
    optics = SmearParams().optics
    stain = SmearParams().stain

    def slide(**changes) -> object:
        params = dataclasses.replace(
            SMALL,
            optics=dataclasses.replace(optics, **changes.pop("optics", {})),
            stain=dataclasses.replace(stain, **changes.pop("stain", {})),
            **changes,
        )
        return _slide(12, "L1", params, 480, 360)

    # Sensor noise comes after the optics' blur: without it, the blur alone decides the sharpness.
    sharp = slide(optics={"blur_sigma_um": (0.0, 0.0), "noise_sigma": (0.0, 0.0)})
    blurred = slide(optics={"blur_sigma_um": (1.0, 1.0), "noise_sigma": (0.0, 0.0)})
    assert _sharpness(blurred.image) < 0.2 * _sharpness(sharp.image)
    dim, bright = slide(optics={"background_level": (0.4, 0.4)}), slide(optics={"background_level": (0.9, 0.9)})
    assert (_glass_rgb(dim) < 0.6 * _glass_rgb(bright)).all()
    clean, noisy = slide(optics={"noise_sigma": (0.0, 0.0)}), slide(optics={"noise_sigma": (20.0, 20.0)})
    assert _sharpness(noisy.image) > 5 * _sharpness(clean.image)
    # White balance: the red and blue gains against green (each drawn from the range), seen on the glass.
    magenta = _glass_rgb(slide(optics={"white_balance": (1.25, 1.25), "background_level": (0.6, 0.6)}))
    green = _glass_rgb(slide(optics={"white_balance": (0.8, 0.8), "background_level": (0.6, 0.6)}))
    assert (magenta[[0, 2]] > 1.15 * magenta[1]).all() and (green[[0, 2]] < 0.9 * green[1]).all()
    # A stronger nuclear stain darkens the white cells, not the glass.
    pale, dark = slide(stain={"haem_strength": (0.5, 0.5)}), slide(stain={"haem_strength": (2.0, 2.0)})
    assert dark.image[dark.mask > 0].mean() < pale.image[pale.mask > 0].mean() - 20
    assert abs(_glass_rgb(dark) - _glass_rgb(pale)).max() < 6
    # Another magnification: recorded, and the same cells are drawn at that scale.
    coarse = slide(pixel_size_um=(0.5, 0.6))
    assert 0.5 <= coarse.pixel_size_um <= 0.6
    lymphoid = [c for c in coarse.cells if c.kind in LYMPHOID_KINDS]
    assert lymphoid and all(5.0 <= 2 * c.radius * coarse.pixel_size_um <= 25.0 for c in lymphoid)


def test_the_documented_out_of_distribution_overrides_load():
    from allmtl_spark.config import load_config

    cfg = load_config(
        "conf/demo.yaml",
        [
            "synth.pixel_size_um=[0.5, 0.6]",
            "synth.optics.blur_sigma_um=[0.5, 1.0]",
            "synth.kind=blank",
            "synth.n_cells=0",
        ],
    ).synth
    assert cfg.pixel_size_um == (0.5, 0.6) and cfg.optics.blur_sigma_um == (0.5, 1.0) and cfg.kind == "blank"
    with pytest.raises(ConfigError, match="blank"):
        load_config("conf/demo.yaml", ["synth.kind=blank"])  # the demo's crops need cells


def test_blank_slides_have_glass_and_no_cells():
    s = _slide(2, "normal", dataclasses.replace(SMALL, kind="blank"))
    assert s.cells == [] and not s.mask.any()
    assert s.image.std() < 20  # lamp falloff, dust and noise only


def test_unknown_class_is_rejected():
    with pytest.raises(ValueError, match="L4"):
        _slide(0, "L4")
    with pytest.raises(ValueError, match="blast"):
        render_cell_crop(np.random.default_rng(0), 40.0, "blast", SMALL)


def test_nonsense_params_are_rejected():
    with pytest.raises(ConfigError, match="pixel_size_um"):
        SmearParams(pixel_size_um=(0.3, 0.1))
    with pytest.raises(ConfigError, match="white_cells_per_slide"):
        SmearParams(white_cells_per_slide=(0, 3))
    with pytest.raises(ConfigError, match="blast_fraction"):
        SmearParams(blast_fraction=(0.5, 1.5))
    with pytest.raises(ConfigError, match="other_white_cell_mix"):
        SmearParams(other_white_cell_mix={"platelet": 1.0})
