"""Classifier inference loaded once per Python worker (the ``predict_batch_udf`` pattern).

``make_classifier_fn(model_file, sha256)`` returns a numpy-to-numpy ``predict(images) -> probs``;
the first call in a process verifies the hash and loads the model, later calls reuse it. The
cache and the load counter are shared with the U-Net's (``segmentation.predict``), so
``model_loads()`` counts every model a worker loaded. Nothing here imports Spark.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from allmtl_spark.checksums import verify_sha256
from allmtl_spark.segmentation import predict as shared

Classify = Callable[[np.ndarray], np.ndarray]


def make_classifier_fn(
    model_file: str, sha256: str, tf_threads: int = 0, batch_size: int = 32, freeze_after_load: bool = False
) -> Classify:
    """The cached classifier of ``model_file`` (hash-checked on first load in this process).

    ``freeze_after_load``: as ``segmentation.predict.make_predict_fn`` (for Spark Python workers).

    Returns:
        ``predict(images)``: (n, s, s, 3) uint8 RGB -> (n, k) float64 class probabilities (a sigmoid
        model's single output p becomes [1 - p, p]).
    """
    return shared.cached_model(
        (os.path.abspath(model_file), sha256, "classifier"),
        lambda: _load(model_file, sha256, tf_threads, batch_size),
        freeze_after_load,
    )


def _load(path: str, sha256: str, tf_threads: int, batch_size: int) -> Classify:
    verify_sha256(path, sha256, "classifier")
    import tensorflow as tf

    shared.set_tf_threads(tf_threads)
    model = tf.keras.models.load_model(path, compile=False)
    # One trace for every batch size: without the open batch dimension each new number of cells
    # on a slide would retrace the whole network (hundreds of ms each on a CPU).
    run = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]
    )

    def predict(images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, int(model.output_shape[-1]) if model.output_shape[-1] > 1 else 2))
        out = np.concatenate(
            [
                run(tf.convert_to_tensor(images[i : i + batch_size].astype(np.float32))).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )
        out = out.astype(np.float64)
        return np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out

    return predict
