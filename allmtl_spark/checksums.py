"""SHA-256 of model artifacts and the check before every load. Pure Python: no Spark, no TensorFlow."""

from __future__ import annotations

import hashlib
import os

from allmtl_spark.errors import ArtifactError


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str, what: str) -> None:
    """Refuse ``path`` (named as ``what`` in the message) if it is missing or its hash is not ``expected``.

    Raises:
        ArtifactError: missing file, or a hash mismatch (corrupted or replaced artifact).
    """
    if not os.path.isfile(path):
        raise ArtifactError(f"{what} artifact {path} is missing; retrain it or restore the file")
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactError(
            f"{what} artifact {path} has SHA-256 {actual[:16]}... but the models table recorded "
            f"{expected[:16]}...; the file is corrupted or was replaced. Refusing to use it."
        )
