"""Classifier inference loaded once per Python worker (the ``predict_batch_udf`` pattern).

``make_classifier_fn(model_file, sha256)`` returns a numpy-to-numpy ``predict(images) -> probs``
(a ``Classifier``; ``predict.with_features(images)`` also gives the pooled features of a classifier
built by ``networks.classifier``, for the out-of-distribution check); the first call in a process
verifies the hash and loads the model, later calls reuse it. The
cache and the load counter are shared with the U-Net's (``segmentation.predict``), so
``model_loads()`` counts every model a worker loaded. A Keras ``.h5`` runs as a traced
``tf.function``; a ``.tflite`` conversion (``scoring.tflite``) in a TFLite interpreter. Nothing
here imports Spark.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import numpy as np

from allmtl_spark import quiet
from allmtl_spark.checksums import load_keras, read_verified
from allmtl_spark.segmentation import predict as shared

log = logging.getLogger(__name__)

Classify = Callable[[np.ndarray], np.ndarray]


class Classifier:
    """``predict(images) -> probabilities``; ``predict.with_features(images) -> (probabilities, features)``.

    ``features``: the (n, d) output of the classifier's ``pool`` layer (global average pooling of
    the backbone), None for a model without one.
    """

    def __init__(self, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]):
        self._run = run

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)[0]

    def with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._run(images)


def make_classifier_fn(
    model_file: str, sha256: str, tf_threads: int = 0, batch_size: int = 8, freeze_after_load: bool = False
) -> Classify:
    """The cached classifier of ``model_file`` (hash-checked on first load in this process).

    Args:
        model_file: a Keras ``.h5`` artifact or its ``.tflite`` conversion.
        sha256: the file's expected SHA-256.
        tf_threads: TensorFlow / TFLite threads (0: the runtime's default).
        batch_size: images per model call (``score.classifier_batch``).
        freeze_after_load: as ``segmentation.predict.make_predict_fn`` (for Spark Python workers).

    Returns:
        ``predict(images)``: (n, s, s, 3) uint8 RGB -> (n, k) float64 class probabilities (a sigmoid
        model's single output p becomes [1 - p, p]).
    """
    load = _load_tflite if model_file.endswith(".tflite") else _load
    return shared.cached_model(
        (os.path.abspath(model_file), sha256, "classifier"),
        lambda: load(model_file, sha256, tf_threads, batch_size),
        freeze_after_load,
    )


def pooled_model(model):
    """``model`` with a second output, its ``pool`` layer (the pooled backbone features); None without that layer."""
    import tensorflow as tf

    from allmtl_spark.networks.classifier import POOL_LAYER

    try:
        pool = model.get_layer(POOL_LAYER)
    except ValueError:
        return None
    return tf.keras.Model(model.input, [model.output, pool.output])


def batch_function(model):
    """``model`` in inference mode as a ``tf.function`` traced once for any batch size.

    Without the open batch dimension each new number of cells on a slide would retrace the whole
    network (hundreds of ms each on a CPU). Also what the TFLite conversion starts from. A
    classifier with a ``pool`` layer returns (probabilities, pooled features): the features are on
    the way to the probabilities, so the second output costs a copy, not a computation.
    """
    import tensorflow as tf

    both = pooled_model(model)
    run = both if both is not None else model
    return tf.function(
        lambda x: run(x, training=False), input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]
    )


def _as_probabilities(out: np.ndarray) -> np.ndarray:
    out = out.astype(np.float64)
    return np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out


def _load(path: str, sha256: str, tf_threads: int, batch_size: int) -> Classify:
    data = read_verified(path, sha256, "classifier")  # loaded from these bytes, not from the path again
    shared.set_tf_threads(tf_threads)
    return keras_predict(load_keras(data), batch_size)


def keras_predict(model, batch_size: int) -> Classify:
    """``predict(images)`` of a loaded Keras classifier, ``batch_size`` images per call."""
    import tensorflow as tf

    run = batch_function(model)
    both = pooled_model(model)
    pooled = both is not None
    width = int(both.output_shape[1][-1]) if pooled else 0

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(images) == 0:
            empty = np.zeros((0, int(model.output_shape[-1]) if model.output_shape[-1] > 1 else 2))
            return empty, (np.zeros((0, width)) if pooled else None)
        outs = [
            run(tf.convert_to_tensor(images[i : i + batch_size].astype(np.float32)))
            for i in range(0, len(images), batch_size)
        ]
        if not pooled:
            return _as_probabilities(np.concatenate([o.numpy() for o in outs])), None
        probabilities = np.concatenate([o[0].numpy() for o in outs])
        return _as_probabilities(probabilities), np.concatenate([o[1].numpy() for o in outs]).astype(np.float64)

    return Classifier(predict)


def _load_tflite(path: str, sha256: str, tf_threads: int, batch_size: int) -> Classify:
    data = read_verified(path, sha256, "classifier (TensorFlow Lite)")
    import tensorflow as tf

    # 0 means the runtime's default, which for TFLite is one thread: ask for the cores this process
    # may use instead, as TensorFlow would (a plain process, a notebook); Spark workers pass 1.
    interpreter = tf.lite.Interpreter(model_content=data, num_threads=tf_threads or len(os.sched_getaffinity(0)))
    return tflite_predict(interpreter, batch_size)


def _output_index(detail: dict) -> int:
    suffix = str(detail["name"]).rsplit(":", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def tflite_predict(interpreter, batch_size: int) -> Classify:
    """``predict(images)`` of a TFLite classifier ``interpreter``, in batches of one or ``batch_size``."""
    input_detail = interpreter.get_input_details()[0]
    # A converted tuple (probabilities, features) keeps its order in the output names' ":<index>".
    details = sorted(interpreter.get_output_details(), key=_output_index)
    output_detail = details[0]
    feature_detail = details[1] if len(details) > 1 else None
    image_shape = tuple(int(d) for d in input_detail["shape"][1:])
    outputs = int(output_detail["shape"][-1])
    lock = threading.Lock()  # one interpreter, and a driver (report, notebook) may call from threads
    allocated_shape: tuple[int, ...] | None = None

    def call(batch: np.ndarray) -> np.ndarray:
        nonlocal allocated_shape
        # An interpreter plans its memory per input shape (~45 ms each time the shape changes), so
        # calls come in two fixed shapes: one image (a slide) or ``batch_size`` (cells, padded).
        if batch.shape != allocated_shape:
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            with quiet.native_stderr(log):  # the runtime announces its XNNPACK delegate on the first one
                interpreter.allocate_tensors()
            allocated_shape = batch.shape
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        features = interpreter.get_tensor(feature_detail["index"]).copy() if feature_detail else None
        return interpreter.get_tensor(output_detail["index"]).copy(), features

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(images) == 0:
            empty = np.zeros((0, outputs if outputs > 1 else 2))
            return empty, (np.zeros((0, int(feature_detail["shape"][-1]))) if feature_detail else None)
        step = 1 if len(images) == 1 else batch_size
        parts, features = [], []
        with lock:
            for i in range(0, len(images), step):
                chunk = images[i : i + step]
                padded = np.zeros((step, *image_shape), np.float32)
                padded[: len(chunk)] = chunk
                probabilities, pooled = call(padded)
                parts.append(probabilities[: len(chunk)])
                if pooled is not None:
                    features.append(pooled[: len(chunk)])
        pooled_all = np.concatenate(features).astype(np.float64) if feature_detail else None
        return _as_probabilities(np.concatenate(parts)), pooled_all

    return Classifier(predict)
