"""Grad-CAM: which parts of the classifier input drove a class score (Selvaraju et al. 2017).

The gradient of the class's pre-softmax score (its logit) with respect to a convolutional feature
map, averaged over space, weights that map's channels; their ReLU'd sum, upsampled, is the heatmap.
Two choices make the map say something at the small inputs used here:

- the layer: the backbone's last feature map is 1x1 at 96 px for InceptionV3 (a uniform tint), so
  :func:`feature_layer` takes the deepest block output (concatenation, addition, or the activation
  right after one) whose map is still at least ``min_side`` x ``min_side`` (7x7 by default);
- the score: probabilities saturate (a softmax output near 1 has almost no gradient), logits do not,
  so the gradient is taken of the logit of the output layer (``head_out``), computed from its input
  with its own kernel and bias.
"""

from __future__ import annotations

import cv2
import numpy as np

MERGE_LAYERS = ("Concatenate", "Add")


def last_feature_layer(model) -> str:
    """Name of the layer feeding the global average pooling (the backbone's last feature map)."""
    return model.get_layer("pool").input._keras_history.layer.name  # noqa: SLF001 - Keras 2's graph link


def _spatial(layer) -> tuple[int, int] | None:
    shape = getattr(layer, "output_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 4 or shape[1] is None:
        return None
    return int(shape[1]), int(shape[2])


def _is_block_output(layer) -> bool:
    kind = type(layer).__name__
    if kind in MERGE_LAYERS:
        return True
    if kind != "Activation":
        return False
    inbound = [node.inbound_layers for node in layer._inbound_nodes]  # noqa: SLF001 - Keras 2's graph
    parents = [p for group in inbound for p in (group if isinstance(group, list) else [group])]
    return bool(parents) and all(type(p).__name__ != "BatchNormalization" for p in parents)


def feature_layer(model, min_side: int = 7) -> str:
    """The deepest block output of the backbone whose feature map is at least ``min_side`` on both sides.

    Block outputs are merges (InceptionV3's ``mixedN`` concatenations, Xception's additions) and
    activations that follow one (InceptionResNetV2's ``blockN_ac``); a branch's activation after a
    BatchNormalization is not. Falls back to the deepest 4-D layer of that size, then to the last
    feature map.
    """
    pool = model.layers.index(model.get_layer("pool"))
    big = [layer for layer in model.layers[:pool] if (s := _spatial(layer)) and min(s) >= min_side]
    blocks = [layer for layer in big if _is_block_output(layer)]
    if blocks:
        return blocks[-1].name
    return big[-1].name if big else last_feature_layer(model)


def grad_cam(model, image: np.ndarray, class_index: int, layer_name: str | None = None) -> np.ndarray:
    """Heatmap in [0, 1] of shape image.shape[:2] for ``class_index``.

    Args:
        model: a classifier from ``networks.classifier`` (float32 RGB 0..255 input, output layer ``head_out``).
        image: size x size x 3 uint8 RGB, the classifier input.
        class_index: the class to explain (for a sigmoid model: 1 explains "positive", 0 its complement).
        layer_name: feature layer; default :func:`feature_layer`.

    Returns:
        float32 HxW in [0, 1] (all zeros when no location raises the class score).
    """
    import tensorflow as tf

    layer = model.get_layer(layer_name or feature_layer(model))
    head = model.get_layer("head_out")
    probe = tf.keras.Model(model.input, [layer.output, head.input])
    kernel, bias = head.kernel, head.bias
    with tf.GradientTape() as tape:
        features, head_input = probe(image[None].astype(np.float32), training=False)
        logits = tf.matmul(head_input, kernel) + bias  # the output layer before its sigmoid / softmax
        score = logits[:, class_index] if logits.shape[-1] > 1 else (logits[:, 0] if class_index else -logits[:, 0])
    gradients = tape.gradient(score, features)[0]
    weights = tf.reduce_mean(gradients, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy().astype(np.float32)
    cam = cv2.resize(cam, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return cam / cam.max() if cam.max() > 0 else cam


def heat_on_cells(image: np.ndarray, heatmap: np.ndarray, black: int = 30) -> float:
    """Mean heat on the cells over mean heat on the rest, for an input of isolated cells on black.

    Above 1: the map favours the cells; about 1 or below: it does not single them out (on the demo's
    models it was 0.82-0.95, docs/evaluation.md). NaN when the input is all cells or all background.

    Args:
        image: HxWx3 uint8 RGB classifier input (the montage or isolated view: cells on black).
        heatmap: HxW in [0, 1] from :func:`grad_cam`.
        black: a pixel whose brightest channel is at most this is background.
    """
    cells = image.max(axis=2) > black
    if cells.all() or not cells.any():
        return float("nan")
    off = float(heatmap[~cells].mean())
    return float(heatmap[cells].mean()) / off if off > 0 else float("inf")


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap (jet colours) blended over an RGB image; HxWx3 uint8 RGB."""
    colours = cv2.cvtColor(cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, colours, alpha, 0)


def readable_panel(image: np.ndarray, heatmap: np.ndarray, side: int = 384) -> np.ndarray:
    """The input and its overlay side by side, each scaled up to ``side`` pixels (a 96 px input is a stamp).

    Returns:
        side x (2 * side + gap) x 3 uint8 RGB.
    """
    big = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
    heat = cv2.resize(heatmap, (side, side), interpolation=cv2.INTER_LINEAR)
    gap = np.full((side, 8, 3), 255, np.uint8)
    return np.hstack([big, gap, overlay(big, heat)])
