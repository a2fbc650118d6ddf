"""Ingest of hostile folders: links out of the source, oversized companions, files that change under it, fuzz."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allmtl_spark import tables
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
from allmtl_spark.ingest.job import run_ingest
from allmtl_spark.lakehouse import read_table
from tests.ingest.malformed import good_jpeg, png_bomb, rgb16

pytestmark = pytest.mark.spark
PRIVACY = PrivacyConfig(patient_key="test-key")


def _allidb1(root: Path, **limits) -> IngestConfig:
    return IngestConfig(sources=(SourceConfig(kind="allidb1", path=str(root)),), **limits)


def _outcome(spark, lake) -> dict[str, list[str]]:
    """{file name: [where it ended]}: 'slide' (source or duplicate path) or the reject reason."""
    out: dict[str, list[str]] = {}
    for row in read_table(spark, lake, tables.SLIDES).collect():
        for path in [row["source_path"], *row["duplicate_paths"]]:
            out.setdefault(Path(path).name, []).append("slide")
    for row in read_table(spark, lake, tables.REJECTS).collect():
        out.setdefault(Path(row["source_path"]).name, []).append(row["reason"])
    return out


def test_links_are_resolved_and_targets_outside_the_source_are_rejected_unread(spark, lake, tmp_path):
    root, outside = tmp_path / "ALL_IDB1", tmp_path / "elsewhere"
    (root / "im").mkdir(parents=True)
    (root / "shared").mkdir()
    outside.mkdir()
    (root / "im" / "Im001_1.jpg").write_bytes(good_jpeg(seed=1))
    (root / "shared" / "Im002_0.jpg").write_bytes(good_jpeg(seed=2))
    (outside / "secret.jpg").write_bytes(good_jpeg(seed=3))
    (outside / "more").mkdir()
    (outside / "more" / "Im009_1.jpg").write_bytes(good_jpeg(seed=4))
    links = {
        "Im002_0.jpg": root / "shared" / "Im002_0.jpg",  # inside the source: read at its target
        "Im003_1.jpg": outside / "secret.jpg",  # a file outside
        "Im004_0.jpg": root / "shared" / "gone.jpg",  # dangling
        "more": outside / "more",  # a folder outside
        "loop": root / "im",  # a loop: listed once
    }
    for name, target in links.items():
        (root / "im" / name).symlink_to(target)

    summary = run_ingest(spark, _allidb1(root), PRIVACY, lake)

    outcome = _outcome(spark, lake)
    assert outcome == {
        "Im001_1.jpg": ["slide"],
        "Im002_0.jpg": ["slide"],
        "Im003_1.jpg": ["path_outside_root"],
        "Im004_0.jpg": ["unreadable"],
        "more": ["path_outside_root"],
    }
    assert summary.files_seen == 5
    details = {Path(r["source_path"]).name: r["detail"] for r in read_table(spark, lake, tables.REJECTS).collect()}
    assert (
        str(outside / "secret.jpg") in details["Im003_1.jpg"] and "outside the source folder" in details["Im003_1.jpg"]
    )
    # the outside file's bytes were never read: no row carries its hash
    secret = hashlib.sha256(good_jpeg(seed=3)).hexdigest()
    assert all(r["content_sha256"] != secret for r in read_table(spark, lake, tables.REJECTS).collect())


@pytest.mark.slow  # 15 s; links out of a source folder are checked in the default tier
def test_a_manifest_row_through_a_link_out_of_its_folder_is_rejected(spark, lake, tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    (tmp_path / "private.jpg").write_bytes(good_jpeg(seed=5))
    (data / "a.jpg").write_bytes(good_jpeg(seed=6))
    (data / "b.jpg").symlink_to(tmp_path / "private.jpg")
    (data / "manifest.csv").write_text("path,slide_id,patient_id,label\na.jpg,S1,P1,L1\nb.jpg,S2,P2,L2\n")
    cfg = IngestConfig(sources=(SourceConfig(kind="manifest", path=str(data / "manifest.csv")),))
    run_ingest(spark, cfg, PrivacyConfig(patient_key="test-key", pseudonymise_names=False), lake)  # names as given
    assert _outcome(spark, lake) == {"a.jpg": ["slide"], "b.jpg": ["path_outside_root"]}


def test_companions_over_their_size_limits_are_rejected_unread(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    for folder in ("im", "xyc", "masks"):
        (root / folder).mkdir(parents=True)
    for i in (1, 2, 3):
        (root / "im" / f"Im00{i}_1.jpg").write_bytes(good_jpeg(seed=i))
    (root / "xyc" / "Im001_1.xyc").write_bytes(b"10 20\n" * 400)  # 2400 bytes
    (root / "xyc" / "Im002_1.xyc").write_bytes(b"10 20\n")
    (root / "masks" / "Im003_1.png").write_bytes(b"\0" * 50_000)

    run_ingest(spark, _allidb1(root, max_xyc_bytes=1000, max_file_bytes=40_000), PRIVACY, lake)

    rejects = {
        Path(r["source_path"]).name: (r["reason"], r["detail"])
        for r in read_table(spark, lake, tables.REJECTS).collect()
    }
    assert rejects["Im001_1.jpg"] == ("bad_xyc", "the .xyc file is 2400 bytes, above ingest.max_xyc_bytes=1000")
    assert rejects["Im003_1.jpg"] == ("bad_mask", "the mask is 50000 bytes, above ingest.max_file_bytes=40000")
    assert _outcome(spark, lake)["Im002_1.jpg"] == ["slide"]


def test_files_that_vanish_or_change_after_listing_become_rejects(spark, lake, tmp_path, monkeypatch):
    root = tmp_path / "ALL_IDB1"
    (root / "im").mkdir(parents=True)
    (root / "xyc").mkdir()
    for i in range(1, 6):
        (root / "im" / f"Im00{i}_1.jpg").write_bytes(good_jpeg(seed=i))
    (root / "xyc" / "Im005_1.xyc").write_bytes(b"1 2\n")
    sync = tmp_path / "sync"
    sync.mkdir()
    monkeypatch.setenv("ALLMTL_SYNC_DIR", str(sync))
    monkeypatch.setenv("ALLMTL_SYNC_POINTS", "ingest:listed:hold")
    monkeypatch.setenv("ALLMTL_SYNC_TIMEOUT", "120")
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(summary=run_ingest(spark, _allidb1(root), PRIVACY, lake)))
    job.start()
    deadline = time.time() + 300
    while not (sync / "ingest:listed.held").exists() and job.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert (sync / "ingest:listed.held").exists(), "ingest never reached the point between listing and reading"
    (root / "im" / "Im002_1.jpg").unlink()  # vanishes
    (root / "im" / "Im003_1.jpg").unlink()
    (root / "im" / "Im003_1.jpg").mkdir()  # replaced by something that is not a file
    (root / "im" / "Im004_1.jpg").write_bytes(good_jpeg(seed=40) + b"grown")  # changed: its new bytes count
    (root / "xyc" / "Im005_1.xyc").unlink()  # a companion vanishes
    (sync / "ingest:listed.release").touch()
    job.join(timeout=600)

    assert "summary" in result, "the ingest run failed"
    outcome = _outcome(spark, lake)
    assert outcome == {
        "Im001_1.jpg": ["slide"],
        "Im002_1.jpg": ["unreadable"],
        "Im003_1.jpg": ["unreadable"],
        "Im004_1.jpg": ["slide"],
        "Im005_1.jpg": ["bad_xyc"],
    }
    assert result["summary"].files_seen == 5
    # readable again: the next run ingests them and their unreadable rejects are gone
    shutil.rmtree(root / "im" / "Im003_1.jpg")
    (root / "im" / "Im003_1.jpg").write_bytes(good_jpeg(seed=3))
    (root / "im" / "Im002_1.jpg").write_bytes(good_jpeg(seed=2))
    monkeypatch.delenv("ALLMTL_SYNC_DIR")
    run_ingest(spark, _allidb1(root), PRIVACY, lake)
    outcome = _outcome(spark, lake)
    assert outcome["Im002_1.jpg"] == ["slide"] and outcome["Im003_1.jpg"] == ["slide"]


def test_files_skipped_by_name_are_counted(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    (root / "im" / ".thumbs").mkdir(parents=True)
    (root / "im" / "Im001_1.jpg").write_bytes(good_jpeg(seed=1))
    (root / "im" / ".DS_Store").write_bytes(b"x")
    (root / "im" / "_SUCCESS").write_bytes(b"")
    (root / "im" / ".thumbs" / "Im001_1.jpg").write_bytes(good_jpeg(seed=2))
    (root / "_notes.txt").write_text("x")
    summary = run_ingest(spark, _allidb1(root), PRIVACY, lake)
    assert summary.files_seen == 1 and summary.skipped_by_name == 4
    assert "skipped by name (leading . or _, as Spark does): 4 file(s)" in summary.format()


# ------------------------------------------------------------------------------------------ fuzz


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _huge_declared(rng: np.random.Generator) -> list[bytes]:
    """Small files whose headers declare enormous images, one per format."""
    jpeg = bytearray(good_jpeg(32, 32, seed=int(rng.integers(1000))))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    bmp = bytearray(_encode(np.zeros((32, 32, 3), np.uint8), "BMP"))
    bmp[18:26] = struct.pack("<ii", 200_000, 200_000)
    tiff = bytearray(_encode(np.zeros((32, 32, 3), np.uint8), "TIFF"))
    for tag in (256, 257):  # ImageWidth, ImageLength: patch their values in the first IFD (SHORT or LONG)
        for kind, value in ((3, struct.pack("<H", 65000)), (4, struct.pack("<I", 10_000_000))):
            entry = tiff.find(struct.pack("<HH", tag, kind))
            if entry > 0:
                tiff[entry + 8 : entry + 8 + len(value)] = value
    wide = png_bomb(int(rng.integers(50_000, 100_000)), int(rng.integers(50_000, 100_000)))
    return [bytes(jpeg), bytes(bmp), bytes(tiff), wide]


def fuzz_corpus(seed: int = 2026, n: int = 220) -> dict[str, bytes]:
    """``n`` hostile files named like ALL-IDB images: truncations at random offsets, mutated headers,
    wrong extensions, huge declared sizes, random bytes, plus a few valid and duplicate images."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    bases = {
        "jpg": good_jpeg(64, 48, seed=seed),
        "png": _encode(pixels, "PNG"),
        "tif": _encode(pixels, "TIFF"),
        "bmp": _encode(pixels, "BMP"),
    }
    corpus, extensions = {}, list(bases)
    for i in range(n):
        kind = i % 8
        ext = extensions[int(rng.integers(len(extensions)))]
        data = bases[ext]
        if kind in (0, 1):  # truncated at a random offset
            data = data[: int(rng.integers(0, len(data)))]
        elif kind in (2, 3):  # header bytes mutated
            data = bytearray(data)
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, min(64, len(data))))] = int(rng.integers(256))
            data = bytes(data)
        elif kind == 4:  # the right bytes under the wrong extension
            ext = extensions[(extensions.index(ext) + 1) % len(extensions)]
        elif kind == 5:
            data = _huge_declared(rng)[int(rng.integers(4))]
        elif kind == 6:  # noise, an empty file, one byte, 16-bit colour
            data = [rng.bytes(int(rng.integers(1, 4096))), b"", b"\xff", rgb16(".png"), rgb16(".tif")][i % 5]
        else:  # valid, with a few byte-identical repeats
            data = bases[ext] if rng.random() < 0.3 else _encode(rng.integers(0, 255, (40, 40, 3), np.uint8), "PNG")
        corpus[f"Im{i:03d}_{i % 2}.{ext}"] = data
    return corpus


def test_a_fuzz_corpus_ingests_with_every_file_accounted_for_exactly_once(spark, lake, tmp_path):
    corpus = fuzz_corpus()
    assert len(corpus) >= 200
    root = tmp_path / "ALL_IDB1"
    (root / "im").mkdir(parents=True)
    (root / "xyc").mkdir()
    rng = np.random.default_rng(7)
    for name, data in corpus.items():
        (root / "im" / name).write_bytes(data)
        if rng.random() < 0.2:  # hostile companions too: junk, negative, huge and non-UTF-8 lines
            junk = [b"1 2\n", b"-5 3\n", b"99999999999999999999 1\n", rng.bytes(64), b"\xff\xfe"][int(rng.integers(5))]
            (root / "xyc" / f"{name.rsplit('.', 1)[0]}.xyc").write_bytes(junk)

    started = time.perf_counter()
    summary = run_ingest(spark, _allidb1(root, max_pixels=4_000_000), PRIVACY, lake)
    seconds = time.perf_counter() - started

    outcome = _outcome(spark, lake)
    assert set(outcome) == set(corpus)  # every file accounted for ...
    assert [name for name, where in outcome.items() if len(where) != 1] == []  # ... exactly once
    assert summary.files_seen == len(corpus)
    reasons = Counter(where[0] for where in outcome.values())
    assert reasons["slide"] >= 10 and len(reasons) >= 6, reasons  # both outcomes, many reasons
    print(f"fuzz corpus: {len(corpus)} files in {seconds:.1f} s: {dict(reasons)}")
