"""SHA-256 of model artifacts, and loading exactly the bytes that were checked.

An artifact is read once; those bytes are hashed and, if they match the ``models`` table, loaded
from memory (``load_keras``, or a TFLite interpreter's ``model_content``). Hashing a file and then
opening it again by path would load whatever lies there by then. No Spark here; TensorFlow only
inside ``load_keras``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator

from allmtl_spark.errors import ArtifactError


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_verified(path: str, expected: str, what: str) -> bytes:
    """The bytes of ``path`` (named as ``what`` in messages), read once and checked against ``expected``.

    Raises:
        ArtifactError: missing file, or a hash mismatch (corrupted or replaced artifact).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, IsADirectoryError):
        raise ArtifactError(f"{what} artifact {path} is missing; retrain it or restore the file") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArtifactError(
            f"{what} artifact {path} has SHA-256 {actual[:16]}... but the models table recorded "
            f"{expected[:16]}...; the file is corrupted or was replaced. Refusing to use it."
        )
    return data


def verify_sha256(path: str, expected: str, what: str) -> None:
    """Refuse ``path`` if it is missing or its hash is not ``expected`` (see ``read_verified``)."""
    read_verified(path, expected, what)


def load_keras(data: bytes):
    """The Keras model in the HDF5 bytes ``data`` (from ``read_verified``), for inference (``compile=False``)."""
    import h5py

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from allmtl_spark.networks import losses  # noqa: F401 - registers the custom loss names

    with h5py.File(io.BytesIO(data), "r") as handle:
        return tf.keras.models.load_model(handle, compile=False)


@contextlib.contextmanager
def verified_copy(path: str, expected: str, what: str) -> Iterator[str]:
    """A private copy of ``path`` made from bytes checked against ``expected``, for loaders that take a path.

    The copy lives in a new folder only this user can open (``tempfile.mkdtemp``) and is deleted on
    exit, so what the loader reads is what was hashed, whatever happens to ``path`` meanwhile.
    """
    data = read_verified(path, expected, what)
    folder = tempfile.mkdtemp(prefix="allmtl-verified-")
    try:
        copy = os.path.join(folder, os.path.basename(path))
        with open(copy, "wb") as handle:
            handle.write(data)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
