"""A plain folder of slide photos as a source (``kind: folder``): pure listing rules, then real Spark + Delta."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from allmtl_spark import tables
from allmtl_spark.config.loader import ConfigError
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
from allmtl_spark.errors import SourceError
from allmtl_spark.ingest.folder import list_entries, patient_of, slide_id_of
from allmtl_spark.ingest.job import run_ingest
from allmtl_spark.ingest.privacy import hash_patient_id
from allmtl_spark.ingest.pseudonyms import name_pseudonym
from allmtl_spark.lakehouse import read_table
from tests.ingest.malformed import _encode, good_jpeg

PRIVACY = PrivacyConfig(patient_key="test-key")
PATTERN = r"(?P<patient>ward\d+_patient\d+)_smear"


@pytest.mark.unit
def test_slide_ids_are_paths_inside_the_folder_without_the_extension():
    assert slide_id_of("ward3_patient1_smear1.jpg") == "ward3_patient1_smear1"
    assert slide_id_of("day2/ward3_patient1_smear1.JPG") == "day2/ward3_patient1_smear1"
    assert slide_id_of("a.b/c.d.tif") == "a.b/c.d"


@pytest.mark.unit
def test_patient_pattern_and_labels_csv():
    import re

    assert patient_of("day2/ward3_patient12_smear1.jpg", re.compile(PATTERN)) == "ward3_patient12"
    assert patient_of("scan_0001.jpg", re.compile(PATTERN)) is None
    labels = pd.DataFrame(
        {"path": ["./ward3_patient1_smear1.jpg", "gone.jpg", "x/other.png"], "label": ["L2", "0", "normal"]}
    )
    labels["patient_id"] = ["", "", "P-77"]
    listing = list_entries(
        ["ward3_patient1_smear1.jpg", "ward3_patient1_smear2.jpg", "x/other.png", "labels.csv", "notes.TXT"],
        PATTERN,
        labels,
    )
    by_id = {e.slide_id: e for e in listing.entries}
    assert sorted(by_id) == ["ward3_patient1_smear1", "ward3_patient1_smear2", "x/other"]
    assert by_id["ward3_patient1_smear1"].label == "L2" and by_id["ward3_patient1_smear2"].label is None
    assert by_id["ward3_patient1_smear1"].patient_id == by_id["ward3_patient1_smear2"].patient_id == "ward3_patient1"
    assert by_id["x/other"].patient_id == "P-77"  # the CSV's patient_id wins where the pattern finds none
    assert listing.not_images == {".csv": 1, ".txt": 1}
    assert listing.unknown_label_paths == ["gone.jpg"] and listing.unmatched_patients == 0


@pytest.mark.unit
def test_folder_keys_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"needs a named group \(\?P<patient>"):
        SourceConfig(kind="folder", path="x", patient_pattern=r"ward\d+")
    with pytest.raises(ConfigError, match="not a regular expression"):
        SourceConfig(kind="folder", path="x", patient_pattern="(?P<patient>")
    with pytest.raises(ConfigError, match="applies to kind: folder only"):
        SourceConfig(kind="manifest", path="m.csv", labels="l.csv")


@pytest.mark.spark
def test_a_plain_folder_is_ingested_with_ids_patients_labels_and_rejects(spark, lake, tmp_path):
    folder = tmp_path / "my_slides"
    (folder / "day2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {
        "ward3_patient1_smear1.jpg": good_jpeg(seed=1),
        "ward3_patient1_smear2.JPG": good_jpeg(seed=2),
        "day2/ward3_patient2_smear1.png": _encode(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), "PNG"),
        "day2/ward4_patient9_smear1.tif": _encode(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), "TIFF"),
        "broken_smear.jpg": b"not a jpeg",
        "notes.txt": b"not an input",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (tmp_path / "labels.csv").write_text("path,label\nward3_patient1_smear1.jpg,L1\nday2/ward3_patient2_smear1.png,0\n")
    source = SourceConfig(
        kind="folder", path=str(folder), site="ward3", patient_pattern=PATTERN, labels=str(tmp_path / "labels.csv")
    )

    summary = run_ingest(spark, IngestConfig(sources=(source,)), PRIVACY, lake)

    # privacy.pseudonymise_names is null (the default): a plain folder's names are stored as keyed hashes
    key = b"test-key"
    names = [
        "day2/ward3_patient2_smear1",
        "day2/ward4_patient9_smear1",
        "ward3_patient1_smear1",
        "ward3_patient1_smear2",
    ]
    stored = read_table(spark, lake, tables.SLIDES).collect()
    by_pseudonym = {r["slide_id"]: r for r in stored}
    assert sorted(by_pseudonym) == sorted(name_pseudonym(n, key) for n in names)
    slides = {n: by_pseudonym[name_pseudonym(n, key)] for n in names}
    assert {r["source_path"] for r in stored} == {f"file:{folder}/{name_pseudonym(n, key)}" for n in [*files][:4]}
    shown = [str(v) for r in stored for k, v in r.asDict().items() if k not in ("site", "content")]  # site: configured
    assert not any("patient" in v or "smear" in v for v in shown)
    assert {r["source_kind"] for r in slides.values()} == {"folder"} and {r["site"] for r in slides.values()} == {
        "ward3"
    }
    assert (slides["ward3_patient1_smear1"]["label_fab"], slides["ward3_patient1_smear1"]["label_binary"]) == ("L1", 1)
    assert slides["day2/ward3_patient2_smear1"]["label_binary"] == 0
    assert slides["ward3_patient1_smear2"]["label_binary"] is None
    assert slides["ward3_patient1_smear1"]["patient_hash"] == hash_patient_id("ward3_patient1", key)
    assert slides["ward3_patient1_smear2"]["patient_hash"] == slides["ward3_patient1_smear1"]["patient_hash"]
    assert slides["day2/ward4_patient9_smear1"]["patient_hash"] == hash_patient_id("ward4_patient9", key)
    assert {r["format"] for r in slides.values()} == {"JPEG", "PNG", "TIFF"}
    assert all(r["pixel_size_source"] in ("estimated", "default") for r in slides.values())
    rejects = [
        (r["source_path"].rsplit("/", 1)[-1], r["reason"]) for r in read_table(spark, lake, tables.REJECTS).collect()
    ]
    assert rejects == [(name_pseudonym("broken_smear.jpg", key), "not_an_image")]
    assert summary.files_seen == 5  # the five images; notes.txt is not an input


@pytest.mark.spark
def test_a_missing_folder_or_a_file_is_a_clear_error(spark, lake, tmp_path):
    with pytest.raises(SourceError, match="folder source .*nowhere not found"):
        run_ingest(
            spark, IngestConfig(sources=(SourceConfig(kind="folder", path=str(tmp_path / "nowhere")),)), PRIVACY, lake
        )
    (tmp_path / "m.csv").write_text("path,label\n")
    with pytest.raises(SourceError, match="is a file, not a folder"):
        run_ingest(
            spark, IngestConfig(sources=(SourceConfig(kind="folder", path=str(tmp_path / "m.csv")),)), PRIVACY, lake
        )
