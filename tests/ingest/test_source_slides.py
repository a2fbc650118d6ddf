"""Locating single-cell crops in the slides they were cut from (template matching)."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.ingest.source_slides import locate_crop, rank_candidates, score_at, thumbnail
from allmtl_spark.synth.smear import SmearParams, render_slide

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def slides():
    params = SmearParams()
    return [render_slide(np.random.default_rng([5, i]), 320, 240, "L1", params).image for i in range(4)]


def test_crop_is_found_at_its_place_with_a_near_perfect_score(slides):
    slide = slides[2]
    crop = slide[70:134, 150:214].copy()
    match = locate_crop(crop, slide, factor=4)
    assert (match.x, match.y) == (150, 70)
    assert match.score > 0.99
    # The same crop is not in another slide: its best place there scores far lower.
    assert locate_crop(crop, slides[0], factor=4).score < 0.85


def test_the_right_slide_ranks_first_among_candidates(slides):
    crop = slides[1][100:164, 40:104].copy()
    thumbs = {f"s{i}": thumbnail(s, 4) for i, s in enumerate(slides)}
    ranked = rank_candidates(thumbnail(crop, 4), thumbs, top=2)
    assert ranked[0][0] == "s1" and len(ranked) == 2


def test_a_crop_recompressed_as_jpeg_still_matches(slides):
    import cv2

    crop = slides[3][20:84, 200:264].copy()
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])
    noisy = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    match = locate_crop(noisy, slides[3], factor=4)
    assert (match.x, match.y) == (200, 20) and match.score > 0.9


def test_score_at_a_given_place_checks_a_manifests_crop_position(slides):
    crop = slides[0][10:74, 10:74].copy()
    assert score_at(crop, slides[0], 10, 10).score > 0.999
    assert score_at(crop, slides[0], 60, 90).score < 0.85
    assert score_at(crop, slides[0], 300, 200) is None  # does not fit there


@pytest.mark.spark
def test_ingest_links_allidb2_crops_and_manifest_cells_to_their_slides(spark, lake, tmp_path, slides):
    import cv2

    from allmtl_spark import tables
    from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import read_table

    def save(path, image):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])

    idb1, idb2 = tmp_path / "ALL_IDB1", tmp_path / "ALL_IDB2"
    for i, slide in enumerate(slides[:3]):
        save(idb1 / "im" / f"Im00{i + 1}_1.jpg", slide)
    save(idb2 / "img" / "Im101_1.tif", slides[1][60:124, 100:164])  # cut from Im002 at (100, 60)
    save(idb2 / "img" / "Im102_0.tif", slides[2][150:214, 20:84])  # cut from Im003 at (20, 150)
    save(idb2 / "img" / "Im103_0.tif", slides[3][0:64, 0:64])  # from a slide that is not ingested
    manifest = tmp_path / "m"
    save(manifest / "c.png", slides[0][30:94, 200:264])
    (manifest / "manifest.csv").write_text(
        "path,kind,slide_id,patient_id,label,source_slide_id,crop_x,crop_y\nc.png,cell,C1,P1,L1,Im001_1,200,30\n"
    )
    cfg = IngestConfig(
        sources=(
            SourceConfig(kind="allidb1", path=str(idb1)),
            SourceConfig(kind="allidb2", path=str(idb2)),
            SourceConfig(kind="manifest", path=str(manifest / "manifest.csv")),
        )
    )
    names_as_given = PrivacyConfig(patient_key="k", pseudonymise_names=False)  # ids checked as given
    summary = run_ingest(spark, cfg, names_as_given, lake)
    assert summary.linked == {"given": 1, "given_scored": 1, "given_mismatch": 0, "matched": 2, "unmatched": 1}
    cells = {r["cell_id"]: r for r in read_table(spark, lake, tables.CELLS).collect()}
    slide_hash = {r["slide_id"]: r["content_sha256"] for r in read_table(spark, lake, tables.SLIDES).collect()}
    got = {k: (r["source_slide_id"], r["source_crop_x"], r["source_crop_y"]) for k, r in cells.items()}
    assert got == {
        "Im101_1": ("Im002_1", 100, 60),
        "Im102_0": ("Im003_1", 20, 150),
        "Im103_0": (None, None, None),
        "C1": ("Im001_1", 200, 30),
    }
    assert cells["Im101_1"]["source_slide_sha256"] == slide_hash["Im002_1"]
    assert cells["C1"]["source_slide_sha256"] == slide_hash["Im001_1"]
    assert cells["Im101_1"]["source_match_score"] > 0.95 and cells["C1"]["source_match_score"] > 0.95
    assert cells["Im103_0"]["source_match_score"] < 0.9  # searched, below the threshold: stays unlinked
    again = run_ingest(spark, cfg, names_as_given, lake)  # nothing left to link
    assert not any(again.linked.values())
