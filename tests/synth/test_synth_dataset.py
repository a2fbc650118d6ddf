"""write_dataset: the ALL-IDB layouts, manifest and boxes, crops cut from slides, byte-identical output, progress."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from allmtl_spark.config import ConfigError
from allmtl_spark.config.schema import SynthConfig
from allmtl_spark.ingest.privacy import SYNTHETIC_MARKER
from allmtl_spark.synth.cells import BOX_LABELS
from allmtl_spark.synth.dataset import (
    BOX_COLUMNS,
    MANIFEST_COLUMNS,
    class_counts,
    plan_items,
    render_item,
    write_dataset,
)

pytestmark = pytest.mark.unit


def _cfg(**overrides) -> SynthConfig:
    base = dict(
        n_slides=6,
        n_cells=4,
        slide_width=320,
        slide_height=240,
        cell_crop_size_um=26.0,
        pixel_size_um=(0.15, 0.3),
        slides_per_patient=2,
        workers=1,
        seed=3,
    )
    base.update(overrides)
    return SynthConfig(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == columns
        return list(reader)


def _manifest(root: Path) -> list[dict[str, str]]:
    return _read_csv(root / "manifest.csv", MANIFEST_COLUMNS)


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[SynthConfig, Path]:
    cfg = _cfg()
    root = tmp_path_factory.mktemp("synth")
    write_dataset(cfg, str(root), progress=None)
    return cfg, root


def test_layout_is_exactly_the_allidb_one(written):
    cfg, root = written
    rows = _manifest(root)
    slides = [r for r in rows if r["kind"] == "slide"]
    cells = [r for r in rows if r["kind"] == "cell"]
    for kind_rows in (slides, cells):
        assert [r["slide_id"] for r in kind_rows] == [
            f"Im{i:03d}_{0 if r['label'] == 'normal' else 1}" for i, r in enumerate(kind_rows, 1)
        ]
    expected = {"manifest.csv", "boxes.csv"}
    for r in slides:
        stem = r["slide_id"]
        assert (r["path"], r["mask_path"], r["xyc_path"]) == (
            f"ALL_IDB1/im/{stem}.jpg",
            f"ALL_IDB1/masks/{stem}.png",
            f"ALL_IDB1/xyc/{stem}.xyc",
        )
        assert r["source_slide_id"] == r["crop_x"] == r["crop_y"] == ""
        expected |= {r["path"], r["mask_path"], r["xyc_path"]}
    for r in cells:
        stem = r["slide_id"]
        assert (r["path"], r["mask_path"], r["xyc_path"]) == (
            f"ALL_IDB2/img/{stem}.tif",
            f"ALL_IDB2/masks/{stem}.png",
            "",
        )
        expected |= {r["path"], r["mask_path"]}
    assert set(_files(root)) == expected | {SYNTHETIC_MARKER}
    # the marker that lets ingest use the demo patient key names every file written, with its hash
    recorded = json.loads((root / SYNTHETIC_MARKER).read_text())["files"]
    assert (
        set(recorded) == expected
        and recorded["manifest.csv"] == hashlib.sha256(_files(root)["manifest.csv"]).hexdigest()
    )
    assert {r["site"] for r in rows} == {"synthetic"}
    assert {r["label"] for r in rows} <= {"normal", "L1", "L2", "L3"}
    assert all(0.15 <= float(r["pixel_size_um"]) <= 0.3 for r in rows)
    assert len(slides) == cfg.n_slides and len(cells) == cfg.n_cells


def test_patients_group_slides_and_a_crop_belongs_to_its_slides_patient(written):
    cfg, root = written
    rows = _manifest(root)
    slides = {r["slide_id"]: r for r in rows if r["kind"] == "slide"}
    assert [r["patient_id"] for r in slides.values()] == ["P0001", "P0001", "P0002", "P0002", "P0003", "P0003"]
    for pid in {r["patient_id"] for r in slides.values()}:
        assert len({r["label"] for r in slides.values() if r["patient_id"] == pid}) == 1  # one diagnosis per patient
    for r in (r for r in rows if r["kind"] == "cell"):
        source = slides[r["source_slide_id"]]
        assert r["patient_id"] == source["patient_id"]
        assert r["pixel_size_um"] == source["pixel_size_um"]
        assert r["label"] in ("normal", source["label"])  # a lymphocyte, or a blast of the slide's class


def test_crops_are_cut_out_of_their_slides_at_crop_x_crop_y(written):
    cfg, root = written
    rows = _manifest(root)
    slides = {r["slide_id"]: r for r in rows if r["kind"] == "slide"}
    cells = [r for r in rows if r["kind"] == "cell"]
    assert len(cells) == cfg.n_cells
    for r in cells:
        source = slides[r["source_slide_id"]]
        slide = _rgb(root / source["path"])
        with Image.open(root / r["path"]) as im:
            crop = np.asarray(im.convert("RGB"))
        size = round(cfg.cell_crop_size_um / float(r["pixel_size_um"]))
        assert crop.shape == (size, size, 3)
        x, y = int(r["crop_x"]), int(r["crop_y"])
        assert np.array_equal(crop, slide[y : y + size, x : x + size])  # the decoded slide, pixel for pixel
        # The crop's mask is one whole cell, one of the slide mask's cells.
        mask = cv2.imread(str(root / r["mask_path"]), cv2.IMREAD_UNCHANGED)
        slide_mask = cv2.imread(str(root / source["mask_path"]), cv2.IMREAD_UNCHANGED)[y : y + size, x : x + size]
        assert mask.any() and not np.any(mask & ~slide_mask)
        assert cv2.connectedComponents(mask)[0] == 2
        ys, xs = np.nonzero(mask)
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < size - 1 and ys.max() < size - 1


def test_the_check_measures_the_crops_the_data_set_cuts(written):
    # allmtl synth --check scores stage 2's crops without writing them: it must choose the same cells.
    from allmtl_spark.synth.check import chosen_crops, measure_slides

    cfg, root = written
    measures = measure_slides(cfg, crops=True)
    chosen = chosen_crops(cfg, plan_items(cfg), measures)
    slides = [r for r in _manifest(root) if r["kind"] == "slide"]
    cells = [r for r in _manifest(root) if r["kind"] == "cell"]
    assert [(slides[c.candidate.slide]["slide_id"], str(c.candidate.x0), str(c.candidate.y0)) for c, _ in chosen] == [
        (r["source_slide_id"], r["crop_x"], r["crop_y"]) for r in cells
    ]
    assert [p for _, p in chosen] == [r["patient_id"] for r in cells]
    assert [c.candidate.kind for c, _ in chosen] == [r["label"] for r in cells]


def test_boxes_list_every_white_cell_of_every_slide(written):
    cfg, root = written
    boxes = _read_csv(root / "boxes.csv", BOX_COLUMNS)
    assert {b["label"] for b in boxes} <= set(BOX_LABELS.values())
    for r in _manifest(root):
        if r["kind"] != "slide":
            continue
        mask = cv2.imread(str(root / r["mask_path"]), cv2.IMREAD_UNCHANGED)
        mine = [b for b in boxes if b["slide_id"] == r["slide_id"]]
        covered = np.zeros_like(mask)
        for b in mine:
            x0, y0, x1, y1 = (int(b[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 0 <= x0 <= x1 < mask.shape[1] and 0 <= y0 <= y1 < mask.shape[0]
            inside = mask[y0 : y1 + 1, x0 : x1 + 1]
            # The box is tight: the cell's mask touches all four of its sides.
            assert inside[:, 0].any() and inside[:, -1].any() and inside[0].any() and inside[-1].any()
            covered[y0 : y1 + 1, x0 : x1 + 1] = 255
        assert not np.any(mask & ~covered)  # every masked pixel lies in some box
        blasts = len((root / r["xyc_path"]).read_text().splitlines())
        assert blasts == sum(b["label"] in ("L1", "L2", "L3") for b in mine)  # .xyc lists the blasts only


def test_files_hold_what_the_renderer_draws(written):
    cfg, root = written
    slides = [r for r in _manifest(root) if r["kind"] == "slide"]
    items = [i for i in plan_items(cfg).items if i.kind == "slide"]
    for item, row in zip(items, slides, strict=True):
        assert row["slide_id"] == item.stem and row["label"] == item.fab_class
        drawn = render_item(item, cfg)
        assert row["pixel_size_um"] == f"{drawn.pixel_size_um:.8g}"
        mask = cv2.imread(str(root / row["mask_path"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, drawn.mask)  # PNG is lossless
        with Image.open(root / row["path"]) as im:
            assert im.mode == "RGB"
            rgb = np.asarray(im)
        assert rgb.shape == (cfg.slide_height, cfg.slide_width, 3)
        # JPEG is lossy, but a swapped channel order would shift the channel means by tens of levels.
        assert np.abs(rgb.reshape(-1, 3).mean(0) - drawn.image.reshape(-1, 3).mean(0)).max() < 2.0
        lines = (root / row["xyc_path"]).read_text().splitlines()
        assert len(lines) == len(drawn.blasts)
        if item.fab_class == "normal":
            assert lines == []
        for line, blast in zip(lines, drawn.blasts, strict=True):
            x, y = (int(v) for v in line.split())
            assert (x, y) == (round(blast.cx), round(blast.cy))
            assert mask[y, x] == 255


def test_output_is_byte_identical_serial_or_parallel_and_changes_with_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(_cfg(n_slides=4, n_cells=4), str(a), progress=None)
    write_dataset(_cfg(n_slides=4, n_cells=4, workers=2), str(b), progress=None)
    write_dataset(_cfg(n_slides=4, n_cells=4, seed=4), str(c), progress=None)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    shared = set(files_a) & set(files_c) - {"manifest.csv", "boxes.csv"}
    images = [f for f in files_a if f.endswith((".jpg", ".tif"))]
    assert all(files_a[f] != files_c[f] for f in images if f in shared)


def test_rerun_into_the_same_folder_removes_stale_items(tmp_path):
    write_dataset(_cfg(n_slides=6, n_cells=4), str(tmp_path), progress=None)
    (tmp_path / "ALL_IDB1" / "im" / "notes.txt").write_text("keep me")
    write_dataset(_cfg(n_slides=2, n_cells=1), str(tmp_path), progress=None)
    rows = _manifest(tmp_path)
    listed = {r[k] for r in rows for k in ("path", "mask_path", "xyc_path") if r[k]}
    ours = {
        f
        for f in _files(tmp_path)
        if f not in ("manifest.csv", "boxes.csv", SYNTHETIC_MARKER) and not f.endswith("notes.txt")
    }
    assert ours == listed and len(rows) == 3
    assert (tmp_path / "ALL_IDB1" / "im" / "notes.txt").exists()  # only our own file names are removed


def test_class_mix_is_exact_and_cells_are_half_blasts_by_default():
    cfg = SynthConfig(n_slides=24, n_cells=64)
    plan = plan_items(cfg)
    slides = [i.fab_class for i in plan.items if i.kind == "slide"]
    assert len(plan.items) == 24  # the crops are cut from the slides, not rendered as items
    assert {c: slides.count(c) for c in ("normal", "L1", "L2", "L3")} == {"normal": 12, "L1": 4, "L2": 4, "L3": 4}
    assert len(plan.crop_classes) == 64 and plan.crop_classes.count("normal") == 32
    assert {"L1", "L2", "L3"} <= set(plan.crop_classes)
    assert slides != sorted(slides)  # shuffled, not in blocks
    assert class_counts(7, {"normal": 1.0, "L3": 1.0}) == {"normal": 4, "L1": 0, "L2": 0, "L3": 3}
    assert sum(class_counts(101, cfg.class_mix).values()) == 101


def test_crops_are_centred_on_their_cell_spread_over_the_slides_and_distinct(tmp_path):
    cfg = _cfg(n_slides=8, n_cells=12, slide_width=400, slide_height=300)
    write_dataset(cfg, str(tmp_path), progress=None)
    cells = [r for r in _manifest(tmp_path) if r["kind"] == "cell"]
    windows = {(r["source_slide_id"], r["crop_x"], r["crop_y"]) for r in cells}
    assert len(windows) == len(cells)  # no two crops share a window
    per_slide = [sum(r["source_slide_id"] == s for r in cells) for s in {r["source_slide_id"] for r in cells}]
    assert max(per_slide) <= 3
    offsets = []
    for r in cells:
        mask = cv2.imread(str(tmp_path / r["mask_path"]), cv2.IMREAD_UNCHANGED)
        ys, xs = np.nonzero(mask)
        size = mask.shape[0]
        # The cell's centre (its mask's extent's middle) against the crop's centre, as a share of the side.
        offsets.append(max(abs((xs.min() + xs.max()) / 2 - size / 2), abs((ys.min() + ys.max()) / 2 - size / 2)) / size)
    # Centred, to a pixel or two; near a slide's edge the window may move inside it by at most a quarter side.
    assert max(offsets) <= 0.25 + 0.02
    assert np.mean(np.array(offsets) < 0.02) >= 0.75


def test_cropping_does_not_change_the_slides(tmp_path):
    # The slides are drawn before and without the crops: with or without crops they are byte-identical,
    # so nothing about a slide (its pixel size least of all) depends on the crops cut from it.
    with_crops, without = tmp_path / "with", tmp_path / "without"
    write_dataset(_cfg(n_slides=4, n_cells=4), str(with_crops), progress=None)
    write_dataset(_cfg(n_slides=4, n_cells=0, pixel_size_um=(0.15, 0.3)), str(without), progress=None)
    a, b = _files(with_crops), _files(without)
    slides = [f for f in b if f.startswith("ALL_IDB1/")]
    assert slides and all(a[f] == b[f] for f in slides)


def test_summary_counts_and_progress_messages(tmp_path):
    messages: list[str] = []
    summary = write_dataset(_cfg(n_slides=12, n_cells=8), str(tmp_path), progress=messages.append)
    rows = _manifest(tmp_path)
    assert summary.n_slides == 12 and summary.n_cells == 8
    for kind, counts in (("slide", summary.slides_per_class), ("cell", summary.cells_per_class)):
        assert counts == {c: sum(r["label"] == c for r in rows if r["kind"] == kind) for c in counts}
    xyc_lines = sum(len((tmp_path / r["xyc_path"]).read_text().splitlines()) for r in rows if r["xyc_path"])
    assert summary.blasts_on_slides == xyc_lines > 0
    assert summary.boxes == len(_read_csv(tmp_path / "boxes.csv", BOX_COLUMNS)) > 12
    low, high = summary.pixel_size_range
    assert 0.15 <= low < high <= 0.3
    assert summary.seconds > 0 and summary.rate > 0
    assert Path(summary.manifest_path) == tmp_path / "manifest.csv"
    assert len(messages) == 10  # every 10% of the 12 slides
    assert messages[-1].startswith("synth: 12/12 items (100%)") and "items/s" in messages[-1]


def test_crops_can_be_their_own_patients_and_blank_slides_have_nothing(tmp_path):
    write_dataset(_cfg(n_slides=2, n_cells=3, crops_from_slides=False), str(tmp_path / "own"), progress=None)
    cells = [r for r in _manifest(tmp_path / "own") if r["kind"] == "cell"]
    assert [r["patient_id"] for r in cells] == ["P0002", "P0003", "P0004"]
    assert all(r["source_slide_id"] == "" and float(r["pixel_size_um"]) > 0 for r in cells)
    summary = write_dataset(_cfg(n_slides=2, n_cells=0, kind="blank"), str(tmp_path / "blank"), progress=None)
    assert summary.boxes == 0 and summary.blasts_on_slides == 0
    for r in _manifest(tmp_path / "blank"):
        assert r["label"] == "normal"
        assert not cv2.imread(str(tmp_path / "blank" / r["mask_path"]), cv2.IMREAD_UNCHANGED).any()


def test_crops_follow_the_classes_the_slides_have_and_need_enough_cells(tmp_path):
    few = SynthConfig(n_slides=2, n_cells=10, slides_per_patient=2, class_mix={"normal": 0.5, "L1": 0.25, "L3": 0.25})
    plan = plan_items(few)
    (patient_class,) = {i.fab_class for i in plan.items}  # two slides of one patient: one class
    assert set(plan.crop_classes) == {"normal"} | ({patient_class} - {"normal"})
    with pytest.raises(ConfigError, match="crops_from_slides"):
        SynthConfig(n_slides=0, n_cells=4)
    with pytest.raises(ConfigError, match=r"asks for 40 normal crops but the slides hold \d+ normal cells"):
        write_dataset(_cfg(n_slides=2, n_cells=40, class_mix={"normal": 1.0}), str(tmp_path), progress=None)


def test_site_names_every_manifest_row_so_two_sets_can_share_a_lakehouse(tmp_path):
    write_dataset(_cfg(n_slides=2, n_cells=1, site="scales-x2"), str(tmp_path), progress=None)
    rows = _manifest(tmp_path)
    assert {r["kind"] for r in rows} == {"slide", "cell"}
    assert {r["site"] for r in rows} == {"scales-x2"}
    with pytest.raises(ConfigError, match="site"):
        _cfg(site=" ")
