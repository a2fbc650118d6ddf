"""Classifier artifacts converted to TensorFlow Lite for scoring (``score.runtime: tflite``).

Why: every Spark Python worker loads the slide and cell classifiers itself, and with Keras that is
most of a worker's start-up. Measured on the demo's InceptionV3 (96 px, one thread): Keras
``load_model`` of the h5 2.4 s plus 0.8 s tracing the first call, a batch-of-1 call 0.046 s; the
TFLite interpreter 0.001 s to load, 0.1 s for the first call, 0.013 s a call after that.

The conversion runs on the driver once per model version and is cached in the lakehouse being
written, never beside the Keras artifact (which may belong to another lakehouse, or be read-only):
``<lakehouse.cache_path or <lakehouse>/_cache>/tflite/<SHA-256 of the Keras artifact>/`` holds
``model-<sha12>.tflite`` (named by its own hash, so two runs converting at once can only ever
write the same bytes under one name) and ``tflite.json`` recording which file, its SHA-256, the
SHA-256 of the Keras artifact it came from and the TensorFlow and converter versions. A cached
conversion is used only if all of them still match. Before a conversion is cached, both runtimes
classify the same probe images and must agree within ``PARITY_TOLERANCE`` in every class
probability; otherwise scoring stops and says to use ``score.runtime: keras``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid

import numpy as np

from allmtl_spark import quiet
from allmtl_spark.checksums import file_sha256, load_keras, read_verified
from allmtl_spark.errors import ArtifactError

log = logging.getLogger(__name__)

CONVERSION_SPEC = "tflite.json"
CONVERTER_VERSION = 2  # bump when the conversion settings change, so old caches are converted again
# 2: a classifier with a ``pool`` layer is converted with its pooled features as a second output
PARITY_TOLERANCE = 1e-3  # max |p_keras - p_tflite|; float32 reorderings differ by ~1e-6
PROBE_IMAGES = 4


def conversion_folder(cache_dir: str, sha256: str) -> str:
    """The cache folder of the conversion of the Keras artifact with SHA-256 ``sha256``."""
    return os.path.join(cache_dir, "tflite", sha256)


def tflite_artifact(
    model_file: str, sha256: str, cache_dir: str, recorded: str | None = None
) -> tuple[str, str] | None:
    """The TFLite conversion of the Keras classifier ``model_file``: (path, SHA-256), converted if needed.

    Args:
        model_file, sha256: the Keras artifact and its SHA-256 from ``models``.
        cache_dir: the lakehouse's cache (``Lakehouse.cache``); the conversion lives in
            ``conversion_folder(cache_dir, sha256)``, nothing is written beside ``model_file``.
        recorded: the conversion's hash ``models`` recorded (``tflite_sha256``), if any: a cached
            conversion with another hash is not used but made again from the checked Keras bytes
            (the caller records the new hash).

    Returns None when the conversion cannot be cached (a read-only cache folder): scoring then runs
    the Keras artifact, with a warning.

    Raises:
        ArtifactError: on a cache miss, the Keras artifact fails its hash check, or the conversion
            disagrees with it.
    """
    folder = conversion_folder(cache_dir, sha256)
    cached = cached_conversion(folder, sha256)
    if cached and recorded and cached[1] != recorded:
        log.warning(
            "%s has SHA-256 %s..., the models table recorded %s... for this model's conversion; converting again",
            cached[0],
            cached[1][:12],
            recorded[:12],
        )
        cached = None
    if cached:
        return cached
    data = read_verified(model_file, sha256, "classifier")
    log.info("converting %s to TensorFlow Lite (once per model version) ...", model_file)
    blob, max_difference = convert_checked(data, model_file)
    tflite_sha = hashlib.sha256(blob).hexdigest()
    name = f"model-{tflite_sha[:12]}.tflite"
    spec = {
        **_stamp(),
        "file": name,
        "sha256": tflite_sha,
        "source_sha256": sha256,
        "max_probe_difference": max_difference,
    }
    try:
        os.makedirs(folder, exist_ok=True)
        _write_atomically(os.path.join(folder, name), blob)
        _write_atomically(os.path.join(folder, CONVERSION_SPEC), json.dumps(spec, indent=2).encode())
    except OSError as err:
        log.warning(
            "cannot cache the TensorFlow Lite conversion in %s (%s); scoring with the Keras artifact. "
            "Give the job write access there (lakehouse.cache_path), or set score.runtime: keras to skip converting.",
            folder,
            err,
        )
        return None
    log.info("cached %s (probe images agree within %.1e)", name, max_difference)
    return os.path.join(folder, name), tflite_sha


def cached_conversion(folder: str, source_sha256: str) -> tuple[str, str] | None:
    """(path, SHA-256) of a cached conversion of the artifact ``source_sha256``, or None if absent or stale.

    Stale: made from another artifact, by another TensorFlow version or converter settings, or
    the file no longer has the hash recorded for it.
    """
    try:
        with open(os.path.join(folder, CONVERSION_SPEC)) as handle:
            spec = json.load(handle)
    except (OSError, ValueError):
        return None
    path = os.path.join(folder, os.path.basename(str(spec.get("file", ""))))
    if spec.get("source_sha256") != source_sha256 or not os.path.isfile(path):
        return None
    if any(spec.get(key) != value for key, value in _stamp().items()):
        log.info("%s was made by another TensorFlow or converter version; converting again", path)
        return None
    if file_sha256(path) != spec.get("sha256"):
        log.warning("%s does not match %s; converting again", path, CONVERSION_SPEC)
        return None
    return path, spec["sha256"]


def _stamp() -> dict:
    """What a conversion depends on besides the artifact: the TensorFlow version and our settings."""
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "converter_version": CONVERTER_VERSION}


def convert_checked(data: bytes, model_file: str = "the classifier") -> tuple[bytes, float]:
    """Convert the Keras model in the HDF5 bytes ``data`` (open batch size) and check it on probe images.

    A classifier with a ``pool`` layer gets its pooled features as a second output
    (``predict.batch_function``), checked like the probabilities (relative to their largest value).

    Args:
        data: the artifact's bytes, as ``read_verified`` checked them.
        model_file: its path, for messages.

    Returns:
        (the TFLite flatbuffer, the largest probability difference on the probe images).

    Raises:
        ArtifactError: the two runtimes disagree by more than ``PARITY_TOLERANCE``.
    """
    import tensorflow as tf

    from allmtl_spark.scoring.predict import batch_function, keras_predict, tflite_predict

    model = load_keras(data)
    blob = convert_function(batch_function(model).get_concrete_function(), model)
    # both through the functions the workers run, so the check covers their batching too
    probe = probe_images(model.input_shape[1:])
    expected, expected_features = keras_predict(model, PROBE_IMAGES).with_features(probe)
    actual, actual_features = tflite_predict(tf.lite.Interpreter(model_content=blob), PROBE_IMAGES).with_features(probe)
    difference = float(np.abs(expected - actual).max())
    if (expected_features is None) != (actual_features is None):
        raise ArtifactError(f"the TensorFlow Lite conversion of {model_file} lost the pooled-features output")
    if expected_features is not None:
        # relative to the features' scale: pooled activations are not bounded like probabilities
        scale = max(float(np.abs(expected_features).max()), 1.0)
        difference = max(difference, float(np.abs(expected_features - actual_features).max()) / scale)
    if not difference <= PARITY_TOLERANCE:
        raise ArtifactError(
            f"the TensorFlow Lite conversion of {model_file} disagrees with the Keras model by "
            f"{difference:.2e} (tolerance {PARITY_TOLERANCE:.0e}) on probe images; score with "
            "`--set score.runtime=keras`"
        )
    return blob, difference


def convert_function(concrete, model) -> bytes:
    """The TFLite flatbuffer of ``concrete``, a traced function of ``model``.

    The converter saves the object it is handed as a SavedModel first. Handed the Keras model, that
    save traced every layer's call functions (5,356 traces for an InceptionV3); a module holding only
    the variables the function reads gives the same bytes in a quarter of the time
    (``allmtl bench convert``).
    """
    import tensorflow as tf

    weights = tf.Module()
    weights.variables_read = list(model.variables)
    with quiet.native_stderr(log):  # the converter's notices about flags and constants
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], weights).convert()


def probe_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """``PROBE_IMAGES`` fixed random uint8-valued images as float32 (what ``predict`` feeds the model).

    Half full-range noise, half low-contrast noise around mid-grey: a trained classifier tends to
    be certain (probabilities at 0 or 1) on full-range noise, which would let any conversion pass.
    """
    rng = np.random.default_rng(seed)
    loud = rng.integers(0, 256, size=(PROBE_IMAGES - PROBE_IMAGES // 2, *shape))
    quiet = 128 + rng.integers(-12, 13, size=(PROBE_IMAGES // 2, *shape))
    return np.concatenate([loud, quiet]).astype(np.float32)


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
