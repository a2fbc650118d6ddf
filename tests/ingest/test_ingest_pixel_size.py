"""Every ingested slide and cell carries its pixel size: given, estimated from red cells, or the default."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from allmtl_spark import tables
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
from allmtl_spark.ingest.job import run_ingest
from allmtl_spark.lakehouse import read_table
from tests.ingest.malformed import good_jpeg
from tests.transforms.conftest import drawn_smear

pytestmark = pytest.mark.spark
PRIVACY = PrivacyConfig(patient_key="test-key", pseudonymise_names=False)  # names checked as given (test_pseudonyms)


def _png(image) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_given_estimated_default_and_bad_pixel_sizes(spark, lake, tmp_path: Path):
    data = tmp_path / "set"
    data.mkdir()
    (data / "given.png").write_bytes(_png(drawn_smear(24, size=(240, 320), seed=1)))
    (data / "measured.png").write_bytes(_png(drawn_smear(24, size=(240, 320), seed=2)))  # 7.75 / 24 um per px
    (data / "noise.jpg").write_bytes(good_jpeg(seed=3))  # no red cells: the source default
    (data / "bad.png").write_bytes(_png(drawn_smear(24, size=(240, 320), seed=4)))
    (data / "cell.png").write_bytes(_png(drawn_smear(24, size=(120, 120), seed=5)))
    (data / "manifest.csv").write_text(
        "path,kind,slide_id,patient_id,label,pixel_size_um\n"
        "given.png,slide,S1,P1,normal,0.25\n"
        "measured.png,slide,S2,P2,L1,\n"
        "noise.jpg,slide,S3,P3,L2,\n"
        "bad.png,slide,S4,P4,L3,lots\n"
        "cell.png,cell,C1,P5,normal,\n"
    )
    source = SourceConfig(kind="manifest", path=str(data / "manifest.csv"), default_pixel_size_um=0.4)

    summary = run_ingest(spark, IngestConfig(sources=(source,)), PRIVACY, lake)

    slides = {r["slide_id"]: r for r in read_table(spark, lake, tables.SLIDES).collect()}
    assert (slides["S1"]["pixel_size_um"], slides["S1"]["pixel_size_source"]) == (0.25, "given")
    assert slides["S1"]["pixel_size_confidence"] is None
    assert slides["S2"]["pixel_size_source"] == "estimated"
    assert slides["S2"]["pixel_size_um"] == pytest.approx(7.75 / 24, rel=0.1)
    assert slides["S2"]["pixel_size_confidence"] >= 0.5
    assert (slides["S3"]["pixel_size_um"], slides["S3"]["pixel_size_source"]) == (0.4, "default")
    assert "S4" not in slides
    reject = read_table(spark, lake, tables.REJECTS).collect()
    assert [(Path(r["source_path"]).name, r["reason"]) for r in reject] == [("bad.png", "bad_pixel_size")]
    cell = read_table(spark, lake, tables.CELLS).collect()[0]
    assert cell["pixel_size_source"] in ("estimated", "default") and cell["pixel_size_um"] > 0
    text = summary.format()
    assert "slides given 1" in text and "slides estimated 1" in text and "slides default 1" in text
    assert "S3 0.4 (no red cells measured)" in text and "ingest.sources[].pixel_size_um" in text


@pytest.mark.slow  # 19 s; given/estimated/default sizes run in the default tier
def test_a_source_pixel_size_applies_to_every_image_of_it(spark, lake, tmp_path: Path):
    root = tmp_path / "ALL_IDB1"
    (root / "im").mkdir(parents=True)
    (root / "im" / "Im001_1.jpg").write_bytes(good_jpeg(seed=1))
    source = SourceConfig(kind="allidb1", path=str(root), pixel_size_um=0.12)
    run_ingest(spark, IngestConfig(sources=(source,)), PRIVACY, lake)
    row = read_table(spark, lake, tables.SLIDES).first()
    assert (row["pixel_size_um"], row["pixel_size_source"]) == (0.12, "given")
