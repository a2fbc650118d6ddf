"""Segmentation loss and metric (TensorFlow ops) for the residual U-Net.

Both take ``y_true`` and ``y_pred`` of shape (batch, H, W, 1): ``y_true`` 0/1 (any numeric dtype),
``y_pred`` sigmoid probabilities. Dice is computed per image and then averaged, so a small cell on
one image counts as much as a large one on another. Registered as Keras serializables, so a saved
model that was compiled with them reloads by name.
"""

from __future__ import annotations

import tensorflow as tf

_SPATIAL_AXES = (1, 2, 3)


@tf.keras.utils.register_keras_serializable(package="allmtl")
def dice_coefficient(y_true: tf.Tensor, y_pred: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Soft Dice per image: (2 sum(t p) + smooth) / (sum(t) + sum(p) + smooth).

    ``smooth`` keeps the ratio defined on empty images: an empty truth with an empty prediction
    scores 1.0, as ``transforms.masks.dice`` does.

    Returns:
        (batch,) float32 in [0, 1].
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    intersection = tf.reduce_sum(y_true * y_pred, axis=_SPATIAL_AXES)
    total = tf.reduce_sum(y_true, axis=_SPATIAL_AXES) + tf.reduce_sum(y_pred, axis=_SPATIAL_AXES)
    return (2.0 * intersection + smooth) / (total + smooth)


@tf.keras.utils.register_keras_serializable(package="allmtl")
def dice_bce_loss(y_true: tf.Tensor, y_pred: tf.Tensor, smooth: float = 1.0) -> tf.Tensor:
    """Binary cross-entropy plus (1 - soft Dice), per image.

    Cross-entropy gives smooth per-pixel gradients early on; the Dice term keeps the small
    foreground (white cells cover a few percent of a smear) from being drowned by background.

    Returns:
        (batch,) float32 losses; Keras averages them (and applies sample weights).
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    return bce + (1.0 - dice_coefficient(y_true, y_pred, smooth))
