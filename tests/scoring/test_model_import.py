"""allmtl import-models: the models a scoring run needs, copied into a lakehouse of its own (real data never
shares a lakehouse with the demo key's synthetic data)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from allmtl_spark import tables
from allmtl_spark.errors import ArtifactError
from allmtl_spark.lakehouse import Lakehouse, read_table
from allmtl_spark.model_import import import_models
from allmtl_spark.scoring.job import resolve_classifiers

pytestmark = pytest.mark.spark


def _into(cfg, models, folder):
    """(config writing the lakehouse at ``folder``, that lakehouse), scoring the fixture's stage-3 model.

    Pinned: ``latest`` in the session's shared lakehouse depends on which other scoring tests ran first.
    """
    mine = replace(
        cfg,
        lakehouse=replace(cfg.lakehouse, path=str(folder)),
        score=replace(cfg.score, model=models["stage3"].model_id),
    )
    return mine, Lakehouse.from_config(mine.lakehouse)


def test_the_scoring_models_are_copied_hash_checked_once_and_chosen_the_same_way(spark, scoring_lake, tmp_path):
    cfg, source, models = scoring_lake
    mine, target = _into(cfg, models, tmp_path / "mine")

    imported = import_models(spark, mine, source, target)

    wanted = {models["stage3"].model_id: "classifier", models["stage2"].model_id: "cell model"}
    assert {m.model_id: m.role for m in imported} == wanted and all(m.copied for m in imported)
    rows = {r["model_id"]: r for r in read_table(spark, target, tables.MODELS).collect()}
    assert set(rows) == set(wanted)
    for model_id, row in rows.items():
        original = models["stage3" if wanted[model_id] == "classifier" else "stage2"]
        assert row["artifact_sha256"] == original.artifact_sha256
        assert row["artifact_path"] == f"_models/{model_id}"  # inside the target: a copy of it is whole
        assert os.path.isfile(os.path.join(target.models, model_id, "model.h5"))
        assert row["run_id"] == original.run_id and row["purpose"] == original.purpose
        assert row["tflite_sha256"] is None  # the target converts on first use, into its own cache
    # scoring in the target chooses the same models by the same rules
    classifier, cell = resolve_classifiers(spark, target, mine)
    assert (classifier.model_id, cell.model_id) == (models["stage3"].model_id, models["stage2"].model_id)

    again = import_models(spark, mine, source, target)  # idempotent
    assert not any(m.copied for m in again)
    assert read_table(spark, target, tables.MODELS).count() == 2


def test_another_model_under_the_same_id_is_refused(spark, scoring_lake, tmp_path):
    cfg, source, models = scoring_lake
    mine, target = _into(cfg, models, tmp_path / "other")
    stage3 = models["stage3"]
    from allmtl_spark.registry import register_model

    register_model(spark, target, replace(stage3, artifact_sha256="0" * 64))  # same id, other bytes

    with pytest.raises(ArtifactError, match="already holds another model"):
        import_models(spark, mine, source, target)
    with pytest.raises(ArtifactError, match="names the lakehouse being written"):
        import_models(spark, cfg, source, source)
