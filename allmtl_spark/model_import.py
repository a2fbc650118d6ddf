"""Copy the models a scoring run needs from one lakehouse into another (``allmtl import-models``).

A lakehouse records which patient key made its hashes and refuses any other (``docs/privacy.md``), so
the demo's lakehouse (public demo key, synthetic data) can never hold real slides. Real slides go into
a lakehouse of their own; this brings the models over: the slide classifier ``allmtl score`` would
choose in the source with the same config, its stage-2 cell model and its U-Net segmenter. Each
artifact folder is hash-checked before and after the copy and registered in the target's ``models``
table under the same ``model_id``, with its provenance (run, data versions, split) unchanged. Nothing
about patients travels: a model row holds no slide or patient.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace

from allmtl_spark.config.schema import AppConfig
from allmtl_spark.errors import ArtifactError
from allmtl_spark.lakehouse import Lakehouse
from allmtl_spark.registry import ModelRecord, register_model, resolve_model, verify_artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedModel:
    model_id: str
    role: str  # classifier | cell model | segmenter
    copied: bool  # False: the target already held it

    def format(self) -> str:
        return f"  {self.role:<10} {self.model_id}: {'copied' if self.copied else 'already there'}"


def models_to_import(spark, cfg: AppConfig, source: Lakehouse) -> list[tuple[str, ModelRecord]]:
    """(role, record) of what ``allmtl score`` would use in ``source``: classifier, cell model, segmenter."""
    from allmtl_spark.scoring.job import resolve_classifiers
    from allmtl_spark.segmentation.job import resolve_segmenter

    classifier, cell = resolve_classifiers(spark, source, cfg)
    chosen = [("classifier", resolve_model(spark, source, classifier.model_id))]
    if cell is not None:
        chosen.append(("cell model", resolve_model(spark, source, cell.model_id)))
    segmenter = resolve_segmenter(spark, source, cfg.segment, cfg.roi)
    if segmenter.record is not None:  # mask_source: roi needs no model
        chosen.append(("segmenter", segmenter.record))
    return chosen


def copy_model(spark, record: ModelRecord, target: Lakehouse) -> bool:
    """Copy ``record``'s artifact folder into ``target``'s models folder and register it there.

    Returns:
        True when copied, False when ``target`` already held the same artifact under this id.

    Raises:
        ArtifactError: the source artifact fails its hash check, or the target holds another
            artifact under this model id.
    """
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.lakehouse import read_table, table_exists

    verify_artifact(record)
    if table_exists(spark, target, tables.MODELS):
        held = read_table(spark, target, tables.MODELS).where(F.col("model_id") == record.model_id).collect()
        if held:
            if held[0]["artifact_sha256"] != record.artifact_sha256:
                raise ArtifactError(
                    f"{target.path(tables.MODELS)} already holds another model {record.model_id!r} "
                    f"(artifact {held[0]['artifact_sha256'][:12]}, importing {record.artifact_sha256[:12]}); "
                    "nothing was copied"
                )
            return False
    destination = os.path.join(target.models, record.model_id)
    if os.path.exists(destination):
        raise ArtifactError(f"{destination} exists but no models row names it: move it away, then import again")
    shutil.copytree(record.artifact_path, destination)
    # The TFLite conversion and the MLflow links belong to the source's cache and store: the target
    # converts again on first use (keyed by the same artifact hash) and has its own MLflow store.
    copied = replace(
        record, artifact_path=destination, tflite_sha256=None, mlflow_model_uri=None, registered_model_uri=None
    )
    verify_artifact(copied)
    register_model(spark, target, copied)
    return True


def import_models(spark, cfg: AppConfig, source: Lakehouse, target: Lakehouse) -> list[ImportedModel]:
    """Copy the models ``allmtl score`` would use in ``source`` into ``target`` (idempotent)."""
    if os.path.realpath(source.root) == os.path.realpath(target.root):
        raise ArtifactError(f"--from names the lakehouse being written ({target.root}): name the other one")
    target.check_writable()
    imported = []
    for role, record in models_to_import(spark, cfg, source):
        imported.append(ImportedModel(record.model_id, role, copy_model(spark, record, target)))
        log.info("import-models: %s %s from %s", role, record.model_id, source.root)
    return imported
