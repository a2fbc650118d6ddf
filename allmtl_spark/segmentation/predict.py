"""U-Net inference for whole slides, loaded once per Python process (the ``predict_batch_udf`` pattern).

``make_predict_fn(model_file, sha256, spec_sha256=...)`` returns a numpy-to-numpy
``predict(image) -> probability``. The first call in a process reads the model file and its
``model.json`` once each, checks both bytes against the hashes the ``models`` table recorded, builds
the Keras model from those bytes and caches the function in a module-level dict keyed by (path,
hashes); later calls, from any batch or task that the same Python worker runs, get the cached
function. ``model_loads()`` counts real loads in this process, so a job can check it stays at one
per worker. Nothing here imports Spark.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from collections.abc import Callable, Iterable

import numpy as np

from allmtl_spark.checksums import load_keras, read_verified
from allmtl_spark.errors import ArtifactError

SPEC_FILE = "model.json"  # as registry.SPEC_FILE; not imported, so this module stays free of pyspark

Predict = Callable[[np.ndarray], np.ndarray]

_PREDICTORS: dict[tuple[str, str], Predict] = {}
_LOADS: list[tuple[str, str]] = []  # every real load in this process, in order
_LOCK = threading.Lock()


def model_loads(files: Iterable[tuple[str, str]] | None = None) -> int:
    """How many times this Python process has loaded a model from disk.

    Args:
        files: count only loads of these (path, SHA-256) files, a job's own models (Python workers
            outlive jobs, one worker may have loaded other models for an earlier job, and two
            versions' folders may hold identical bytes); None: all.
    """
    if files is None:
        return len(_LOADS)
    wanted = {(os.path.abspath(path), sha256) for path, sha256 in files}
    return sum(1 for key in _LOADS if key[:2] in wanted)


def clear_cache() -> None:
    """Forget the cached models and the load count (tests only)."""
    with _LOCK:
        _PREDICTORS.clear()
        _LOADS.clear()


def make_predict_fn(
    model_file: str,
    sha256: str,
    tf_threads: int = 0,
    freeze_after_load: bool = False,
    *,
    spec_sha256: str | None,
) -> Predict:
    """The cached predict function of a saved segmenter, loading it on first use in this process.

    Args:
        model_file: path of the ``model.h5`` artifact (``model.json`` beside it).
        sha256: the SHA-256 recorded in ``models``; the file must match it.
        spec_sha256: the SHA-256 of ``model.json`` recorded in ``models`` (``spec_sha256``); the
            builder keywords and white balance are parsed from bytes that match it. None only for a
            segmenter registered before those hashes were recorded (its ``model.json`` is read unchecked,
            as ``ModelRecord.spec`` does on the driver).
        tf_threads: TensorFlow intra-op threads for this process (set before TensorFlow starts;
            ignored if it already runs); 0 leaves TensorFlow's default.
        freeze_after_load: after a real load, take the objects alive in this process out of the
            cyclic garbage collector's sight (:func:`freeze_long_lived_objects`): for Spark Python
            workers; leave it off in a driver or notebook process.

    Returns:
        ``predict(image)``: HxWx3 uint8 RGB at the working scale -> HxW float32 probabilities of
        "white cell", any H and W (white-balanced as in training, padded to the U-Net's multiple and
        cropped back).

    Raises:
        ArtifactError: the model file or ``model.json`` is missing or its hash differs from the recorded one.
    """
    return cached_model(
        (os.path.abspath(model_file), sha256, spec_sha256),
        lambda: _load(os.path.abspath(model_file), sha256, spec_sha256, tf_threads),
        freeze_after_load,
    )


def cached_model(key: tuple, load: Callable[[], Predict], freeze_after_load: bool = False) -> Predict:
    """The predict function cached under ``key`` in this process, made by ``load()`` on first use.

    Shared by every model kind (U-Net, slide and cell classifiers), so :func:`model_loads`
    counts all the models a worker loaded. ``freeze_after_load``: see :func:`make_predict_fn`.
    """
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = load()
            _LOADS.append(key)
            if freeze_after_load:
                freeze_long_lived_objects()
        return _PREDICTORS[key]


def freeze_long_lived_objects() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    PySpark's daemon runs ``gc.collect()`` in a reused Python worker after every task. With
    TensorFlow and a few Keras models loaded that is a full walk over ~400,000 objects, 0.2-0.3 s
    of one core per task (measured: 0.23 s for the three scoring models, 0.001 s once frozen),
    before the worker takes its next task. The models stay cached for the life of the process, so
    the collector has nothing to find in them. Frozen objects are still freed by reference
    counting; what is alive now and later becomes garbage inside a reference cycle is never freed:
    harmless in a worker whose long-lived state is its models, a slow leak in a driver or notebook
    that keeps working after loading a model (so only the Spark worker code asks for it).
    """
    gc.collect()  # what is garbage now goes first, so it is not frozen with the rest
    gc.freeze()


def set_tf_threads(tf_threads: int) -> None:
    """Set TensorFlow's intra-op threads if TensorFlow has not started yet in this process (0: keep)."""
    import tensorflow as tf

    if tf_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already initialised in this process: keep its setting
            pass


def _load(path: str, sha256: str, spec_sha256: str | None, tf_threads: int) -> Predict:
    data = read_verified(path, sha256, "segmenter")  # loaded from these bytes, not from the path again
    spec = _spec(path, spec_sha256)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    set_tf_threads(tf_threads)
    model = fully_convolutional(load_keras(data), spec)
    return whole_slide_predictor(model, spec.get("input_normalize", "none"))


def whole_slide_predictor(model, normalize: str = "none") -> Predict:
    """A numpy-to-numpy predict function around a fully convolutional U-Net.

    Args:
        model: a Keras U-Net with input ``(None, None, None, c)`` (see :func:`fully_convolutional`).
        normalize: the white balance the model was trained with (``model.json`` ``input_normalize``).

    Returns:
        ``predict(image)``: HxWx3 uint8 RGB at the working scale -> HxW float32 probabilities; the
        image is white-balanced, padded to a multiple of ``2**depth`` and the output cropped back.
    """
    import tensorflow as tf

    from allmtl_spark.networks.resunet import pad_to_multiple
    from allmtl_spark.segmentation.pipeline import unet_input

    multiple = 2 ** sum(isinstance(layer, tf.keras.layers.MaxPooling2D) for layer in model.layers)
    # One trace for every slide size: the signature leaves height and width open.
    run = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, model.input_shape[-1]], tf.float32)],
    )

    def predict(image: np.ndarray) -> np.ndarray:
        padded, (h, w) = pad_to_multiple(unet_input(np.asarray(image), normalize), multiple)
        return run(tf.convert_to_tensor(padded[None].astype(np.float32))).numpy()[0, :h, :w, 0]

    return predict


def _spec(path: str, spec_sha256: str | None) -> dict:
    """The ``model.json`` beside ``path``, parsed from bytes read once and checked against ``spec_sha256``.

    Without a recorded hash (a segmenter registered before they were kept) it is read unchecked, and a
    missing file is an empty spec; with one, a missing or different file is refused.
    """
    spec_path = os.path.join(os.path.dirname(path), SPEC_FILE)
    if spec_sha256:
        return json.loads(read_verified(spec_path, spec_sha256, "segmenter model.json"))
    if not os.path.isfile(spec_path):
        return {}
    with open(spec_path) as handle:
        return json.load(handle)


def fully_convolutional(model, spec: dict):
    """The same U-Net with input ``(None, None, channels)``, carrying ``model``'s weights.

    A tile-trained model is saved with a fixed input size; the builder keywords in ``model.json``
    (``spec["builder"]``) rebuild it with ``input_size=None``: same layers, same weight shapes.
    A model that is already fully convolutional is returned as is.
    """
    if model.input_shape[1] is None and model.input_shape[2] is None:
        return model
    if "builder" not in spec:
        raise ArtifactError(
            "segmenter has a fixed input size and model.json has no 'builder' keywords to "
            "rebuild it fully convolutional"
        )
    from allmtl_spark.networks.resunet import build_residual_unet

    rebuilt = build_residual_unet(**{**spec["builder"], "input_size": None})
    rebuilt.set_weights(model.get_weights())
    return rebuilt
