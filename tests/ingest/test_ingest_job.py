"""The ingest job on real local Spark + Delta."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig
from allmtl_spark.errors import LakehouseError, SourceError
from allmtl_spark.ingest.job import run_ingest
from allmtl_spark.lakehouse import Lakehouse, read_table, table_version
from tests.ingest.malformed import good_jpeg, malformed_files

pytestmark = pytest.mark.spark
PRIVACY = PrivacyConfig(patient_key="test-key", pseudonymise_names=False)  # names checked as given (test_pseudonyms)


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _allidb1(root: Path) -> IngestConfig:
    return IngestConfig(sources=(SourceConfig(kind="allidb1", path=str(root)),))


def _rejects_by_name(spark, lake) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in read_table(spark, lake, tables.REJECTS).collect():
        out.setdefault(Path(row["source_path"]).name, []).append(row["reason"])
    return out


def test_malformed_folder_ends_in_rejects_while_valid_files_land(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    bad = malformed_files()
    _write(root / "im", {name: data for name, (data, _) in bad.items()})
    _write(
        root / "im",
        {
            "Im001_1.jpg": good_jpeg(seed=1),
            "Im002_0.jpg": good_jpeg(seed=2),
            "Im003_1.jpg": good_jpeg(seed=3),
            "Im004_1.jpg": good_jpeg(seed=4),
        },
    )
    _write(
        root / "xyc",
        {
            "Im001_1.xyc": b"10 20\n30 40\n",
            "Im002_0.xyc": b"",
            "Im003_1.xyc": b"10 20\nten 20\n",
            "Im004_1.xyc": b"500 20\n",
        },
    )

    summary = run_ingest(spark, _allidb1(root), PRIVACY, lake)

    slides = {r["slide_id"]: r for r in read_table(spark, lake, tables.SLIDES).collect()}
    assert set(slides) == {"Im001_1", "Im002_0"}
    assert [(p["x"], p["y"]) for p in slides["Im001_1"]["blast_centroids"]] == [(10, 20), (30, 40)]
    assert slides["Im002_0"]["blast_centroids"] == [] and slides["Im002_0"]["has_xyc"]
    assert slides["Im001_1"]["label_binary"] == 1 and slides["Im002_0"]["label_binary"] == 0
    rejects = _rejects_by_name(spark, lake)
    expected = {name: [reason] for name, (_, reason) in bad.items()}
    expected.update({"Im003_1.jpg": ["bad_xyc"], "Im004_1.jpg": ["bad_xyc"]})
    assert rejects == expected
    assert summary.files_seen == len(bad) + 4 == len(slides) + len(rejects)
    assert summary.rejects_this_run["bad_xyc"] == 2


def test_reingest_changes_nothing(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    _write(root / "im", {"Im001_1.jpg": good_jpeg(seed=1), "Im002_0.jpg": good_jpeg(seed=2), "Im009_1.jpg": b"junk"})
    first = run_ingest(spark, _allidb1(root), PRIVACY, lake)
    versions = [table_version(spark, lake, t) for t in (tables.SLIDES, tables.REJECTS)]
    before = sorted(
        (r["content_sha256"], r["source_path"], r["ingest_run_id"])
        for r in read_table(spark, lake, tables.SLIDES).collect()
    )

    second = run_ingest(spark, _allidb1(root), PRIVACY, lake)

    after = sorted(
        (r["content_sha256"], r["source_path"], r["ingest_run_id"])
        for r in read_table(spark, lake, tables.SLIDES).collect()
    )
    assert first.inserted["slides"] == 2 and second.inserted["slides"] == 0
    assert after == before  # same rows, still stamped with the first run
    assert [table_version(spark, lake, t) for t in (tables.SLIDES, tables.REJECTS)] == versions  # nothing written
    assert second.totals == first.totals


def test_same_bytes_two_names(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    same, other = good_jpeg(seed=5), good_jpeg(seed=6)
    _write(root / "im", {"Im001_1.jpg": same, "Im002_1.jpg": same, "Im003_1.jpg": other, "Im004_0.jpg": other})

    run_ingest(spark, _allidb1(root), PRIVACY, lake)

    slides = read_table(spark, lake, tables.SLIDES).collect()
    assert len(slides) == 1  # same labels: one row that records both paths
    assert Path(slides[0]["source_path"]).name == "Im001_1.jpg"
    assert [Path(p).name for p in slides[0]["duplicate_paths"]] == ["Im002_1.jpg"]
    assert _rejects_by_name(spark, lake) == {
        "Im003_1.jpg": ["conflicting_labels"],
        "Im004_0.jpg": ["conflicting_labels"],
    }


@pytest.mark.slow  # 36 s, three ingests; test_same_bytes_two_names checks conflicts in the default tier
def test_conflict_with_stored_row_is_rejected_and_new_duplicate_path_recorded(spark, lake, tmp_path):
    first, second, third = (tmp_path / name / "ALL_IDB1" for name in "abc")
    data = good_jpeg(seed=7)
    _write(first / "im", {"Im001_1.jpg": data})
    _write(second / "im", {"Im008_1.jpg": data})
    _write(third / "im", {"Im007_0.jpg": data})
    for root in (first, second, third):
        run_ingest(spark, _allidb1(root), PRIVACY, lake)
    slides = read_table(spark, lake, tables.SLIDES).collect()
    assert len(slides) == 1 and slides[0]["label_binary"] == 1
    assert [Path(p).name for p in slides[0]["duplicate_paths"]] == ["Im008_1.jpg"]
    assert _rejects_by_name(spark, lake) == {"Im007_0.jpg": ["conflicting_labels"]}


def test_manifest_labels_patients_and_bad_rows(spark, lake, tmp_path):
    data_dir = tmp_path / "set"
    _write(data_dir / "imgs", {"a.jpg": good_jpeg(seed=11), "b.jpg": good_jpeg(seed=12), "c.jpg": good_jpeg(seed=13)})
    (tmp_path / "secret.jpg").write_bytes(good_jpeg(seed=14))
    (data_dir / "manifest.csv").write_text(
        "path,slide_id,patient_id,label,kind\n"
        "imgs/a.jpg,S1,PAT-1,L3,slide\n"
        "imgs/b.jpg,C1,PAT-2,normal,cell\n"
        "imgs/c.jpg,S3,PAT-1,L9,slide\n"
        "../secret.jpg,S4,PAT-3,L1,slide\n"
        "imgs/missing.jpg,S5,PAT-3,L1,slide\n"
    )
    cfg = IngestConfig(sources=(SourceConfig(kind="manifest", path=str(data_dir / "manifest.csv"), site="lab7"),))

    run_ingest(spark, cfg, PRIVACY, lake)

    slide = read_table(spark, lake, tables.SLIDES).collect()
    cell = read_table(spark, lake, tables.CELLS).collect()
    assert [(r["slide_id"], r["label_fab"], r["label_binary"], r["site"]) for r in slide] == [("S1", "L3", 1, "lab7")]
    assert [(r["cell_id"], r["label_fab"], r["label_binary"]) for r in cell] == [("C1", "normal", 0)]
    assert slide[0]["patient_hash"] and "PAT-1" not in slide[0]["patient_hash"]
    assert _rejects_by_name(spark, lake) == {
        "c.jpg": ["bad_label"],
        "secret.jpg": ["path_outside_root"],
        "missing.jpg": ["missing_file"],
    }


@pytest.mark.slow  # 30 s; two threads on one session (the default tier's real overlap test is test_reliability's)
def test_concurrent_ingests_leave_one_row_per_file(spark, lake, tmp_path):
    root = tmp_path / "ALL_IDB1"
    _write(root / "im", {f"Im{i:03d}_{i % 2}.jpg": good_jpeg(seed=100 + i) for i in range(1, 7)})
    _write(root / "im", {"Im050_1.jpg": b"junk"})
    errors = []

    def ingest():
        try:
            run_ingest(spark, _allidb1(root), PRIVACY, lake)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    slides = read_table(spark, lake, tables.SLIDES).groupBy("content_sha256").count().collect()
    assert len(slides) == 6 and all(r["count"] == 1 for r in slides)
    assert read_table(spark, lake, tables.REJECTS).count() == 1


def test_missing_source_and_unwritable_lakehouse_fail_clearly(spark, lake, tmp_path):
    with pytest.raises(SourceError, match="ALL_IDB1/im not found"):
        run_ingest(spark, _allidb1(tmp_path / "ALL_IDB1"), PRIVACY, lake)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    from allmtl_spark.config.schema import LakehouseConfig

    bad_lake = Lakehouse.from_config(LakehouseConfig(path=str(blocker / "lake")))
    _write(tmp_path / "ok" / "im", {"Im001_1.jpg": good_jpeg()})
    with pytest.raises(LakehouseError, match="not writable"):
        run_ingest(spark, _allidb1(tmp_path / "ok"), PRIVACY, bad_lake)


def test_cli_exit_codes(spark, tmp_path):
    from allmtl_spark.cli import main

    lake_arg = f"lakehouse.path={tmp_path / 'lake'}"
    missing = f"ingest.sources=[{{kind: allidb1, path: {tmp_path / 'none'}}}]"
    assert main(["ingest", "--set", lake_arg, "--set", missing, "--set", "privacy.patient_key=k"]) == 3
    assert main(["ingest", "--set", "ingest.sources=[{kind: zip, path: x}]"]) == 2
