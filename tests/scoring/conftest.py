"""A tiny scored-ready lakehouse: synthetic slides ingested, untrained tiny models registered.

Untrained classifiers are enough to test the scoring machinery (rows, idempotence, hashes,
model loading); accuracy is the training tests' business.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from allmtl_spark.config import load_config

SLIDES = 6


def cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "allmtl_spark.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def overrides(root) -> list[str]:
    return [
        f"lakehouse.path={root}/lakehouse",
        "segment.mask_source=roi",
        "score.slides_per_partition=1",
        "privacy.patient_key=test",
        "spark.master=local[2]",
        "score.source=null",
    ]


def register_tiny_models(spark, lake, run_id: str) -> dict:
    """Untrained InceptionV3 classifiers at 75 px: a stage-3 fab4 model and a stage-2 cell model."""
    from allmtl_spark.networks.classifier import build_classifier
    from allmtl_spark.registry import ModelRecord, register_model, save_artifact

    made = {}
    for stage, task, classes, head in (
        ("stage3", "fab4", ["normal", "L1", "L2", "L3"], "dense"),
        ("stage2", "cell_binary", ["normal", "blast"], "simple"),
    ):
        model = build_classifier(
            "InceptionV3", input_size=75, num_outputs=len(classes) if len(classes) > 2 else 1, head=head
        )
        model_id = f"{run_id}-{stage}-{task}"
        folder = os.path.join(lake.models, model_id)
        view = {"kind": "montage" if stage == "stage3" else "cell", "size": 75, "grid": 2, "isolate": True}
        sha = save_artifact(model, folder, {"view": view, "class_names": classes})
        record = ModelRecord(
            model_id=model_id,
            run_id=run_id,
            kind="classifier",
            stage=stage,
            task=task,
            class_names=classes,
            artifact_path=folder,
            artifact_sha256=sha,
            config_json="{}",
            approach="mtl" if stage == "stage3" else None,
            backbone="InceptionV3",
            input_size=75,
        )
        register_model(spark, lake, record)
        made[stage] = record
    return made


def copy_model(spark, lake, record, new_id: str, keep_conversions: bool = True, **changes):
    """Register a copy of ``record``'s artifact under another id (a new model version).

    ``keep_conversions=False`` leaves out cached TFLite conversions, so scoring converts again;
    ``changes``: other fields of the copy's record (e.g. a ``run_id`` of its own, so that it is never
    the cell model that the shared lake's classifier resolves to).
    """
    from allmtl_spark.registry import register_model
    from allmtl_spark.scoring.tflite import CONVERSION_SPEC

    folder = os.path.join(lake.models, new_id)
    skip = None if keep_conversions else shutil.ignore_patterns("*.tflite", CONVERSION_SPEC)
    shutil.copytree(record.artifact_path, folder, ignore=skip)
    copy = replace(record, model_id=new_id, artifact_path=folder, **changes)
    register_model(spark, lake, copy)
    return copy


@pytest.fixture(scope="session")
def scoring_lake(spark, tmp_path_factory):
    """(config, lake, models) over SLIDES ingested synthetic slides; shared by every scoring test module
    (each test scores its own copy of the models, a model version of its own)."""
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.lakehouse import Lakehouse
    from allmtl_spark.synth.dataset import write_dataset

    root = tmp_path_factory.mktemp("scoring")
    cfg = load_config(
        "conf/demo.yaml",
        overrides(root)
        + [
            f"synth.output={root}/data",
            f"synth.n_slides={SLIDES}",
            "synth.n_cells=0",
            "synth.slide_width=320",
            "synth.slide_height=240",
            "synth.workers=1",
            f"ingest.sources=[{{kind: allidb1, path: {root}/data/ALL_IDB1}}]",
        ],
    )
    write_dataset(cfg.synth, progress=None)
    lake = Lakehouse.from_config(cfg.lakehouse)
    run_ingest(spark, cfg.ingest, cfg.privacy, lake)
    models = register_tiny_models(spark, lake, "tiny")
    return cfg, lake, models
