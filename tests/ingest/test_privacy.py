"""The patient key: demo key for generated data only, a real key otherwise, one key per lakehouse, never shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from allmtl_spark import tables
from allmtl_spark.config import ConfigError, load_config
from allmtl_spark.config.schema import IngestConfig, PrivacyConfig, SourceConfig, SynthConfig
from allmtl_spark.ingest.privacy import DEMO_KEY, SYNTHETIC_MARKER, key_fingerprint, patient_key
from allmtl_spark.lakehouse import read_table, table_exists, table_version
from tests.ingest.malformed import good_jpeg

SECRET = "a-patient-key-that-must-never-show-0123456789"
DEMO = PrivacyConfig(allow_demo_key=True)  # as conf/demo.yaml


# ------------------------------------------------------------------------------ unit: which key


@pytest.mark.unit
def test_the_demo_key_only_for_synthetic_sources(monkeypatch):
    monkeypatch.delenv("ALLMTL_PATIENT_KEY", raising=False)
    assert patient_key(DEMO, synthetic=True).demo
    with pytest.raises(ConfigError, match=r"only for data written by `allmtl synth`.*export ALLMTL_PATIENT_KEY="):
        patient_key(DEMO, synthetic=False, sources="allidb1 source /data/real")
    with pytest.raises(ConfigError, match="no patient key for .*openssl rand"):
        patient_key(PrivacyConfig(), synthetic=True)  # the demo key must also be allowed
    with pytest.raises(ConfigError, match="is the public demo key"):
        patient_key(PrivacyConfig(patient_key=DEMO_KEY), synthetic=False)


@pytest.mark.unit
def test_the_fingerprint_identifies_the_key_without_revealing_it():
    assert key_fingerprint(b"a") == key_fingerprint(b"a") != key_fingerprint(b"b")
    assert SECRET not in key_fingerprint(SECRET.encode())


# ------------------------------------------------------------------------------ spark: ingest


def _folder(root: Path, n: int = 2) -> IngestConfig:
    (root / "im").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (root / "im" / f"Im00{i}_1.jpg").write_bytes(good_jpeg(seed=i))
    return IngestConfig(sources=(SourceConfig(kind="allidb1", path=str(root)),))


def _generated(tmp_path: Path) -> tuple[Path, IngestConfig]:
    from allmtl_spark.synth.dataset import write_dataset

    out = tmp_path / "synthetic"
    write_dataset(
        SynthConfig(output=str(out), n_slides=2, n_cells=0, slide_width=160, slide_height=128, workers=1), progress=None
    )
    return out, IngestConfig(sources=(SourceConfig(kind="allidb1", path=str(out / "ALL_IDB1")),))


@pytest.mark.spark
def test_real_data_without_a_key_is_refused_with_the_demo_config(spark, lake, tmp_path, monkeypatch):
    from allmtl_spark.ingest.job import run_ingest

    monkeypatch.delenv("ALLMTL_PATIENT_KEY", raising=False)
    with pytest.raises(ConfigError, match="are not marked as synthetic.*export ALLMTL_PATIENT_KEY"):
        run_ingest(spark, _folder(tmp_path / "real"), DEMO, lake)
    assert not table_exists(spark, lake, tables.SLIDES)  # refused before anything was written


@pytest.mark.spark
def test_generated_data_takes_the_demo_key_until_a_file_is_not_the_generators(spark, lake, tmp_path, monkeypatch):
    from allmtl_spark.ingest.job import run_ingest

    monkeypatch.delenv("ALLMTL_PATIENT_KEY", raising=False)
    out, cfg = _generated(tmp_path)
    assert (out / SYNTHETIC_MARKER).is_file()
    summary = run_ingest(spark, cfg, DEMO, lake)
    assert summary.inserted["slides"] == 2
    (stored,) = read_table(spark, lake, tables.PRIVACY_KEYS).collect()
    assert stored["demo_key"] and stored["key_fingerprint"] == key_fingerprint(DEMO_KEY.encode())

    (out / "ALL_IDB1" / "im" / "Im900_1.jpg").write_bytes(good_jpeg(seed=9))  # a real photo put beside them
    with pytest.raises(ConfigError, match=r"Im900_1\.jpg was not"):
        run_ingest(spark, cfg, DEMO, lake)
    (out / "ALL_IDB1" / "im" / "Im900_1.jpg").unlink()
    generated = sorted((out / "ALL_IDB1" / "im").iterdir())[0]
    generated.write_bytes(good_jpeg(seed=10))  # a generated name with other bytes
    with pytest.raises(ConfigError, match=rf"{generated.name} was not \(or changed since\)"):
        run_ingest(spark, cfg, DEMO, lake)


@pytest.mark.slow  # 22 s; the one-batch case runs in the default tier
@pytest.mark.spark
def test_a_folder_of_several_generated_batches_takes_the_demo_key(spark, lake, tmp_path, monkeypatch):
    # make demo-ood: four `allmtl synth` outputs under one folder, scored as one folder source
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.synth.dataset import write_dataset

    monkeypatch.delenv("ALLMTL_PATIENT_KEY", raising=False)
    batches = tmp_path / "batches"
    for seed, name in ((1, "stain"), (2, "blur")):
        synth = SynthConfig(
            output=str(batches / name), seed=seed, n_slides=1, n_cells=0, slide_width=160, slide_height=128, workers=1
        )
        write_dataset(synth, progress=None)
    cfg = IngestConfig(sources=(SourceConfig(kind="folder", path=str(batches), site="ood"),))
    summary = run_ingest(spark, cfg, DEMO, lake)
    assert summary.inserted["slides"] >= 2  # the slides (and the truth masks: a folder takes every image)

    (batches / "blur" / "photo.jpg").write_bytes(good_jpeg(seed=5))  # one file no marker names
    with pytest.raises(ConfigError, match=r"photo\.jpg was not"):
        run_ingest(spark, cfg, DEMO, lake)


@pytest.mark.spark
def test_the_synthetic_check_reads_each_marker_once_and_records_the_markers_that_named_files(
    spark, tmp_path, monkeypatch
):
    """One marker above two batch folders and one inside a batch: every marker is read once, whatever the file count."""
    from allmtl_spark.ingest import listing
    from allmtl_spark.ingest.job import _synthetic
    from allmtl_spark.ingest.sources import list_source

    root = tmp_path / "batches"
    names = {"top": ["a/x1.jpg", "a/x2.jpg", "a/deep/x3.jpg"], "b": ["y1.jpg", "y2.jpg"]}
    for folder, files in (("", names["top"]), ("b", names["b"])):
        for i, name in enumerate(files):
            (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_bytes(good_jpeg(seed=i))
        marker = {"written_by": "allmtl synth", "files": {n: f"{folder or 'top'}-{n}" for n in files}}
        (root / folder / SYNTHETIC_MARKER).write_text(json.dumps(marker))
    reads = []
    real = listing.read_small_file
    monkeypatch.setattr(listing, "read_small_file", lambda spark, uri, *a: reads.append(uri) or real(spark, uri, *a))
    listed = list_source(spark, SourceConfig(kind="folder", path=str(root)))

    recorded, why = _synthetic(spark, [listed])

    assert why is None
    assert sorted(v for v in recorded.values()) == sorted(
        [f"top-{n}" for n in names["top"]] + [f"b-{n}" for n in names["b"]]
    )
    assert len(reads) == len(set(reads)) and len(reads) <= 5  # a, a/deep, b, the root, the folder above it
    (root / "b" / "photo.jpg").write_bytes(good_jpeg(seed=9))  # named by no marker: not synthetic
    recorded, why = _synthetic(spark, [list_source(spark, SourceConfig(kind="folder", path=str(root)))])
    assert recorded == {} and "photo.jpg was not written by `allmtl synth`" in why


@pytest.mark.spark
def test_a_second_key_is_refused_by_the_lakehouse(spark, lake, tmp_path, monkeypatch):
    from allmtl_spark.ingest.job import run_ingest

    monkeypatch.setenv("ALLMTL_PATIENT_KEY", SECRET)
    run_ingest(spark, _folder(tmp_path / "a"), DEMO, lake)
    versions = [table_version(spark, lake, t) for t in (tables.SLIDES, tables.REJECTS)]
    monkeypatch.setenv("ALLMTL_PATIENT_KEY", SECRET + "-other")
    with pytest.raises(ConfigError, match="made with another secret key .* split one patient"):
        run_ingest(spark, _folder(tmp_path / "b", 3), DEMO, lake)
    assert [table_version(spark, lake, t) for t in (tables.SLIDES, tables.REJECTS)] == versions  # nothing written
    monkeypatch.setenv("ALLMTL_PATIENT_KEY", SECRET)
    assert run_ingest(spark, _folder(tmp_path / "b", 3), DEMO, lake).inserted["slides"] == 1


@pytest.mark.spark
def test_a_demo_lakehouse_refuses_a_real_key(spark, lake, tmp_path, monkeypatch):
    from allmtl_spark.ingest.job import run_ingest

    monkeypatch.delenv("ALLMTL_PATIENT_KEY", raising=False)
    _, cfg = _generated(tmp_path)
    run_ingest(spark, cfg, DEMO, lake)
    monkeypatch.setenv("ALLMTL_PATIENT_KEY", SECRET)
    with pytest.raises(ConfigError, match="public demo key.*new lakehouse"):
        run_ingest(spark, _folder(tmp_path / "real"), DEMO, lake)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.spark
@pytest.mark.slow  # 44-62 s, its own driver; tests/test_privacy_key.py checks the redaction pattern and printed config
def test_the_key_shows_in_no_log_and_not_in_sparks_ui(tmp_path):
    """A real ingest in its own driver, debug logging on, the key also in a Spark property: nowhere in clear."""
    root = tmp_path / "real"
    _folder(root)
    port, sync = _free_port(), tmp_path / "sync"
    sync.mkdir()
    env = {
        **os.environ,
        "ALLMTL_PATIENT_KEY": SECRET,
        "ALLMTL_SYNC_DIR": str(sync),
        "ALLMTL_SYNC_POINTS": "merged:slides:hold",  # the driver waits there while the test reads its UI
        "ALLMTL_SYNC_TIMEOUT": "180",
    }
    # the extra_conf below replaces conf/demo.yaml's: its JVM options (a short-lived driver) are kept
    demo = load_config(str(Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"))
    jvm = demo.spark.extra_conf["spark.driver.extraJavaOptions"]
    extra = (
        f"{{spark.ui.port: '{port}', spark.ui.enabled: 'true', spark.driver.extraJavaOptions: '{jvm}', "
        f"spark.executorEnv.ALLMTL_PATIENT_KEY: '{SECRET}'}}"
    )
    args = [
        sys.executable, "-m", "allmtl_spark.cli", "--verbose", "ingest",
        "--set", f"lakehouse.path={tmp_path}/lake",
        "--set", f"ingest.sources=[{{kind: allidb1, path: {root}}}]",
        "--set", "spark.master=local[1]",
        "--set", f"spark.extra_conf={extra}",
    ]  # fmt: skip
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 300
        while not (sync / "merged:slides.held").exists() and job.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (sync / "merged:slides.held").exists(), job.communicate(timeout=60)[0][-3000:]
        base = f"http://127.0.0.1:{port}/api/v1/applications"
        (app,) = json.load(urllib.request.urlopen(base, timeout=30))
        environment = urllib.request.urlopen(f"{base}/{app['id']}/environment", timeout=30).read().decode()
        assert "spark.executorEnv.ALLMTL_PATIENT_KEY" in environment  # the property is listed ...
        assert SECRET not in environment  # ... with its value redacted
    finally:
        (sync / "merged:slides.release").touch()
        output = job.communicate(timeout=600)[0]
    assert job.returncode == 0, output[-3000:]
    assert "INFO allmtl_spark" in output and SECRET not in output  # logging was on, the key not in it
