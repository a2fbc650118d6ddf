"""Pseudonymised names (privacy.pseudonymise_names): ids and stored paths are keyed hashes of the file names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
from allmtl_spark.ingest.privacy import DEMO_KEY, hash_patient_id
from allmtl_spark.ingest.pseudonyms import (
    id_pseudonym,
    name_pseudonym,
    pseudonymise_items,
    pseudonymise_source,
    redact,
)
from allmtl_spark.ingest.sources import Item
from tests.ingest.malformed import good_jpeg

KEY = b"test-key"
ON = PrivacyConfig(patient_key="test-key", pseudonymise_names=True)


@pytest.mark.unit
def test_a_pseudonym_is_a_keyed_hash_of_the_name():
    first = name_pseudonym("ward3/patient1_smear1", KEY)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert name_pseudonym("ward3/patient1_smear1", KEY) == first  # the same on every run
    assert name_pseudonym("ward3/patient1_smear1", b"other") != first  # not recomputable without the key
    assert name_pseudonym("ward3/patient1_smear2", KEY) != first
    # a name never hashes to what its text gives as a patient id
    assert not hash_patient_id("ward3/patient1_smear1", KEY).startswith(first)
    assert name_pseudonym("ward3/patient1_smear1", KEY, prefix_chars=7) == f"ward3_p-{first}"


@pytest.mark.unit
def test_allidb_ids_are_kept_and_other_ids_replaced():
    assert id_pseudonym("Im001_1", KEY) == "Im001_1"
    assert id_pseudonym("Im001_1_ward3", KEY) == name_pseudonym("Im001_1_ward3", KEY)


@pytest.mark.unit
def test_which_sources_are_pseudonymised_by_default():
    auto = PrivacyConfig()
    demo = DEMO_KEY.encode()
    assert pseudonymise_source(auto, KEY, "folder") and pseudonymise_source(auto, demo, "folder")
    assert pseudonymise_source(auto, KEY, "manifest")
    assert not pseudonymise_source(auto, demo, "manifest")  # the synthetic demo data
    assert not pseudonymise_source(auto, KEY, "allidb1")  # ImNNN_L names
    assert pseudonymise_source(PrivacyConfig(pseudonymise_names=True), KEY, "allidb1")
    assert not pseudonymise_source(PrivacyConfig(pseudonymise_names=False), KEY, "folder")


@pytest.mark.unit
def test_items_lose_their_names_and_a_cell_keeps_its_slide():
    root = "file:/data/ward3"
    slide = Item(f"{root}/patient1/smear1.JPG", "slides", "manifest", "s", "patient1_smear1", 10)
    cell = Item(f"{root}/cells/patient1_c1.png", "cells", "manifest", "s", "patient1_c1", 10)
    cell.source_slide_id = "patient1_smear1"
    missing = Item(f"{root}/patient2/smear9.jpg", "slides", "manifest", "s", "smear9", 0)
    missing.pre_reason = "missing_file"
    missing.pre_detail = "'patient2/smear9.jpg' listed in the manifest does not exist"
    kept = PrivacyConfig(patient_key="k", pseudonymise_names=True, pseudonym_keep_extension=True)
    pseudonymise_items([slide, cell, missing], root, KEY, kept)

    assert slide.item_id == name_pseudonym("patient1_smear1", KEY) == cell.source_slide_id
    assert slide.stored_path == f"{root}/{name_pseudonym('patient1/smear1.JPG', KEY)}.jpg"
    assert slide.item_path == f"{root}/patient1/smear1.JPG"  # still read from the real file
    hidden = name_pseudonym("patient2/smear9.jpg", KEY)
    assert missing.pre_detail == f"'{hidden}.jpg' listed in the manifest does not exist"
    for item in (slide, cell, missing):
        assert "patient" not in item.item_id + item.stored_path + (item.pre_detail or "") + (item.source_slide_id or "")


@pytest.mark.unit
def test_redact_replaces_longest_names_first_in_one_pass():
    names = {"ward3/p1.jpg": "AAAA", "p1": "BBBB", "A": "never"}
    assert redact("ward3/p1.jpg and p1", names) == "AAAA and BBBB"


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _strings(rows) -> str:
    """Every value of every row as text (arrays and structs included)."""
    return " ".join(str(value) for row in rows for value in row.asDict(recursive=True).values())


@pytest.mark.spark
def test_ingest_stores_no_name_of_a_pseudonymised_manifest(spark, lake, tmp_path):
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import read_table

    root = tmp_path / "ward3_archive"
    _write(
        root,
        {
            "ward3/patient1_smear1.jpg": good_jpeg(seed=1),
            "ward3/patient1_smear2.jpg": good_jpeg(seed=2),
            "ward3/patient1_cell1.jpg": good_jpeg(48, 48, seed=3),
            "ward3/patient1_broken.jpg": b"not a jpeg",
        },
    )
    (root / "manifest.csv").write_text(
        "path,kind,slide_id,patient_id,label,source_slide_id\n"
        "ward3/patient1_smear1.jpg,slide,patient1_smear1,P1,L1,\n"
        "ward3/patient1_smear2.jpg,slide,patient1_smear2,P1,L1,\n"
        "ward3/patient1_cell1.jpg,cell,patient1_cell1,P1,L1,patient1_smear1\n"
        "ward3/patient1_broken.jpg,slide,patient1_broken,P1,L1,\n"
        "ward3/patient1_smear3.jpg,slide,patient1_smear3,P1,L1,\n"
    )
    cfg = IngestConfig(sources=(SourceConfig(kind="manifest", path=str(root / "manifest.csv")),), link_cells=False)
    privacy = PrivacyConfig(patient_key="test-key")  # pseudonymise_names null: a manifest with a real key

    summary = run_ingest(spark, cfg, privacy, lake)
    assert summary.inserted == {"slides": 2, "cells": 1, "rejects": 2}
    slides = read_table(spark, lake, tables.SLIDES).drop("content").collect()
    cells = read_table(spark, lake, tables.CELLS).drop("content").collect()
    rejects = read_table(spark, lake, tables.REJECTS).collect()
    stored = _strings(slides + cells + rejects)
    assert "patient1" not in stored and "smear" not in stored and "ward3/" not in stored
    assert {r["slide_id"] for r in slides} == {name_pseudonym(f"patient1_smear{i}", KEY) for i in (1, 2)}
    assert cells[0]["cell_id"] == name_pseudonym("patient1_cell1", KEY)
    assert cells[0]["source_slide_id"] == name_pseudonym("patient1_smear1", KEY)  # the link holds
    base = f"file:{root}/"
    assert {r["source_path"] for r in slides} == {
        base + name_pseudonym(f"ward3/patient1_smear{i}.jpg", KEY) for i in (1, 2)
    }
    assert sorted(r["reason"] for r in rejects) == ["missing_file", "not_an_image"]
    assert all(r["source_path"].startswith(base) for r in rejects)  # `score --source` finds rows by the folder

    again = run_ingest(spark, cfg, privacy, lake)  # the same pseudonyms: nothing new
    assert again.inserted == {"slides": 0, "cells": 0, "rejects": 0}
