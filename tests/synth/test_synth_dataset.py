"""write_dataset: the ALL-IDB layouts and manifest, byte-identical output, class mix, progress."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from allmtl_spark.config.schema import SynthConfig
from allmtl_spark.synth.dataset import MANIFEST_COLUMNS, class_counts, plan_items, render_item, write_dataset
from allmtl_spark.synth.smear import SmearParams


def _cfg(**overrides) -> SynthConfig:
    base = dict(
        n_slides=6,
        n_cells=4,
        slide_width=320,
        slide_height=240,
        cell_crop_size=96,
        rbc_diameter_px=(14.0, 20.0),
        slides_per_patient=2,
        workers=1,
        seed=3,
    )
    base.update(overrides)
    return SynthConfig(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[SynthConfig, Path]:
    cfg = _cfg()
    root = tmp_path_factory.mktemp("synth")
    write_dataset(cfg, str(root), progress=None)
    return cfg, root


@pytest.mark.unit
def test_layout_is_exactly_the_allidb_one(written):
    cfg, root = written
    rows = _manifest(root)
    slides = [r for r in rows if r["kind"] == "slide"]
    cells = [r for r in rows if r["kind"] == "cell"]
    assert [r["slide_id"] for r in slides] == [
        f"Im{i:03d}_{0 if r['label'] == 'normal' else 1}" for i, r in enumerate(slides, 1)
    ]
    assert [r["slide_id"] for r in cells] == [
        f"Im{i:03d}_{0 if r['label'] == 'normal' else 1}" for i, r in enumerate(cells, 1)
    ]
    expected = {"manifest.csv"}
    for r in slides:
        stem = r["slide_id"]
        assert (r["path"], r["mask_path"], r["xyc_path"]) == (
            f"ALL_IDB1/im/{stem}.jpg",
            f"ALL_IDB1/masks/{stem}.png",
            f"ALL_IDB1/xyc/{stem}.xyc",
        )
        expected |= {r["path"], r["mask_path"], r["xyc_path"]}
    for r in cells:
        stem = r["slide_id"]
        assert (r["path"], r["mask_path"], r["xyc_path"]) == (
            f"ALL_IDB2/img/{stem}.tif",
            f"ALL_IDB2/masks/{stem}.png",
            "",
        )
        expected |= {r["path"], r["mask_path"]}
    assert set(_files(root)) == expected
    assert {r["site"] for r in rows} == {"synthetic"}
    assert {r["label"] for r in rows} <= {"normal", "L1", "L2", "L3"}
    assert len(slides) == cfg.n_slides and len(cells) == cfg.n_cells


@pytest.mark.unit
def test_patients_group_slides_and_cells_get_their_own(written):
    cfg, root = written
    rows = _manifest(root)
    slides = [r for r in rows if r["kind"] == "slide"]
    assert [r["patient_id"] for r in slides] == ["P0001", "P0001", "P0002", "P0002", "P0003", "P0003"]
    for pid in {r["patient_id"] for r in slides}:
        assert len({r["label"] for r in slides if r["patient_id"] == pid}) == 1  # one diagnosis per patient
    cell_patients = [r["patient_id"] for r in rows if r["kind"] == "cell"]
    assert cell_patients == ["P0004", "P0005", "P0006", "P0007"]


@pytest.mark.unit
def test_files_hold_what_the_renderer_draws(written):
    cfg, root = written
    params = SmearParams.from_config(cfg)
    items = plan_items(cfg)
    for item, row in zip(items, _manifest(root), strict=True):
        assert row["slide_id"] == item.stem and row["label"] == item.fab_class
        drawn = render_item(item, cfg.seed, cfg.slide_width, cfg.slide_height, cfg.cell_crop_size, params)
        mask = cv2.imread(str(root / row["mask_path"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, drawn.mask)  # PNG is lossless
        with Image.open(root / row["path"]) as im:
            assert im.mode == "RGB"
            rgb = np.asarray(im)
        assert rgb.shape[:2] == mask.shape
        if item.kind == "cell":
            assert rgb.shape == (cfg.cell_crop_size, cfg.cell_crop_size, 3)
            assert np.array_equal(rgb, drawn.image)  # uncompressed TIFF, RGB order kept
            continue
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


@pytest.mark.unit
def test_output_is_byte_identical_serial_or_parallel_and_changes_with_seed(tmp_path):
    cfg = _cfg(n_slides=4, n_cells=4)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_dataset(cfg, str(a), progress=None)
    write_dataset(_cfg(n_slides=4, n_cells=4, workers=2), str(b), progress=None)
    write_dataset(_cfg(n_slides=4, n_cells=4, seed=4), str(c), progress=None)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    shared = set(files_a) & set(files_c) - {"manifest.csv"}
    images = [f for f in files_a if f.endswith((".jpg", ".tif"))]
    assert all(files_a[f] != files_c[f] for f in images if f in shared)


@pytest.mark.unit
def test_rerun_into_the_same_folder_removes_stale_items(tmp_path):
    write_dataset(_cfg(n_slides=6, n_cells=4), str(tmp_path), progress=None)
    (tmp_path / "ALL_IDB1" / "im" / "notes.txt").write_text("keep me")
    write_dataset(_cfg(n_slides=2, n_cells=1), str(tmp_path), progress=None)
    rows = _manifest(tmp_path)
    listed = {r[k] for r in rows for k in ("path", "mask_path", "xyc_path") if r[k]}
    ours = {f for f in _files(tmp_path) if f != "manifest.csv" and not f.endswith("notes.txt")}
    assert ours == listed and len(rows) == 3
    assert (tmp_path / "ALL_IDB1" / "im" / "notes.txt").exists()  # only our own file names are removed


@pytest.mark.unit
def test_class_mix_is_exact_and_cells_are_half_blasts_by_default():
    cfg = SynthConfig(n_slides=24, n_cells=64)
    items = plan_items(cfg)
    slides = [i.fab_class for i in items if i.kind == "slide"]
    cells = [i.fab_class for i in items if i.kind == "cell"]
    assert {c: slides.count(c) for c in ("normal", "L1", "L2", "L3")} == {"normal": 12, "L1": 4, "L2": 4, "L3": 4}
    assert cells.count("normal") == 32
    assert {"L1", "L2", "L3"} <= set(cells)
    assert slides != sorted(slides)  # shuffled, not in blocks
    assert class_counts(7, {"normal": 1.0, "L3": 1.0}) == {"normal": 4, "L1": 0, "L2": 0, "L3": 3}
    assert sum(class_counts(101, cfg.class_mix).values()) == 101


@pytest.mark.unit
def test_summary_counts_and_progress_messages(tmp_path):
    messages: list[str] = []
    summary = write_dataset(_cfg(n_slides=12, n_cells=8), str(tmp_path), progress=messages.append)
    rows = _manifest(tmp_path)
    assert summary.n_slides == 12 and summary.n_cells == 8
    assert summary.slides_per_class == {
        c: sum(r["label"] == c for r in rows if r["kind"] == "slide") for c in summary.slides_per_class
    }
    assert summary.cells_per_class == {
        c: sum(r["label"] == c for r in rows if r["kind"] == "cell") for c in summary.cells_per_class
    }
    xyc_lines = sum(len((tmp_path / r["xyc_path"]).read_text().splitlines()) for r in rows if r["xyc_path"])
    assert summary.blasts_on_slides == xyc_lines > 0
    assert summary.seconds > 0 and summary.rate > 0
    assert Path(summary.manifest_path) == tmp_path / "manifest.csv"
    assert len(messages) == 10  # every 10% of 20 items
    assert messages[-1].startswith("synth: 20/20 items (100%)") and "items/s" in messages[-1]
