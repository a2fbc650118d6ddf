"""Grad-CAM: which parts of the classifier input drove a class score (Selvaraju et al. 2017).

The gradient of the class score with respect to the last convolutional feature map, averaged
over space, weights that map's channels; their ReLU'd sum, upsampled, is the heatmap.
"""

from __future__ import annotations

import cv2
import numpy as np


def last_feature_layer(model) -> str:
    """Name of the layer feeding the global average pooling (the backbone's last feature map)."""
    return model.get_layer("pool").input._keras_history.layer.name  # noqa: SLF001 - Keras 2's graph link


def grad_cam(model, image: np.ndarray, class_index: int, layer_name: str | None = None) -> np.ndarray:
    """Heatmap in [0, 1] of shape image.shape[:2] for ``class_index``.

    Args:
        model: a classifier from ``networks.classifier`` (float32 RGB 0..255 input).
        image: size x size x 3 uint8 RGB, the classifier input.
        class_index: the class to explain (for a sigmoid model: 1 explains "positive", 0 its complement).
        layer_name: feature layer; default :func:`last_feature_layer`.
    """
    import tensorflow as tf

    layer = model.get_layer(layer_name or last_feature_layer(model))
    probe = tf.keras.Model(model.input, [layer.output, model.output])
    with tf.GradientTape() as tape:
        features, output = probe(image[None].astype(np.float32), training=False)
        score = output[:, class_index] if output.shape[-1] > 1 else (output[:, 0] if class_index else -output[:, 0])
    gradients = tape.gradient(score, features)[0]
    weights = tf.reduce_mean(gradients, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
    cam = cv2.resize(cam, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return cam / cam.max() if cam.max() > 0 else cam


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap (jet colours) blended over an RGB image; HxWx3 uint8 RGB."""
    colours = cv2.cvtColor(cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)
