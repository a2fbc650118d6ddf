"""Residual U-Net that segments the white cells of a smear (the paper's segmentation stage).

Encoder and decoder of residual blocks (3x3 conv-BN-ReLU-conv-BN plus a 1x1-projected shortcut,
then ReLU), 2x2 max-pooling down, upsampling up with the encoder's skip tensors concatenated, and a
1-channel sigmoid mask out. Layer names carry their level (``enc1_...``, ``bottleneck_...``,
``dec1_...``) so summaries and weight files are readable.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

layers = tf.keras.layers

UPSAMPLING_MODES = ("transpose", "nearest", "bilinear")


def _residual_block(x: tf.Tensor, filters: int, momentum: float, name: str) -> tf.Tensor:
    """conv3x3-BN-ReLU-conv3x3-BN, added to a 1x1-conv-BN projection of the input, then ReLU."""
    shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
    shortcut = layers.BatchNormalization(momentum=momentum, name=f"{name}_proj_bn")(shortcut)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _upsample(x: tf.Tensor, filters: int, mode: str, name: str) -> tf.Tensor:
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_up")(x)
    return layers.UpSampling2D(2, interpolation=mode, name=f"{name}_up")(x)


def _validate(
    input_size: int | None,
    channels: int,
    depth: int,
    base_filters: int,
    dropout: float,
    upsampling: str,
    momentum: float,
) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if input_size is not None and (input_size < 2**depth or input_size % (2**depth)):
        raise ValueError(f"input_size must be a positive multiple of 2**depth = {2**depth}, got {input_size}")
    if channels < 1 or base_filters < 1:
        raise ValueError(f"channels and base_filters must be >= 1, got {channels}, {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if upsampling not in UPSAMPLING_MODES:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"batchnorm_momentum must be in [0, 1), got {momentum}")


def build_residual_unet(
    input_size: int | None = 256,
    channels: int = 3,
    depth: int = 3,
    base_filters: int = 16,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    input_scale: float | None = 1.0 / 255.0,
    batchnorm_momentum: float = 0.99,
    name: str = "residual_unet",
) -> tf.keras.Model:
    """Build an uncompiled residual U-Net for binary (white cell / not) segmentation.

    Args:
        input_size: side of the square input, pixels; must be a multiple of ``2**depth``. None builds
            the fully convolutional model: input ``(batch, H, W, channels)`` for any H and W that are
            multiples of ``2**depth`` (see :func:`pad_to_multiple`), so weights trained on tiles run on
            a whole slide (same layers, same weight shapes).
        channels: input channels (3 for RGB).
        depth: number of 2x2 poolings; level ``i`` (0-based) has ``base_filters * 2**i`` filters and
            the bottleneck ``base_filters * 2**depth``.
        base_filters: filters of the first level.
        dropout: dropout rate at the bottleneck, in [0, 1); 0 adds no layer.
        upsampling: ``"transpose"`` (2x2 stride-2 Conv2DTranspose) or ``"nearest"``/``"bilinear"``
            (UpSampling2D; the decoder block's projection then sets the filter count).
        input_scale: factor applied inside the model, so callers feed float32 0..255 RGB
            (the default 1/255 maps that to 0..1); None feeds the input through unchanged.
        batchnorm_momentum: momentum of the BatchNormalization moving statistics (keras' 0.99 by
            default); on short runs of a few dozen steps use about 0.9, or inference-mode outputs
            still reflect the initial statistics.
        name: model name.

    Returns:
        Uncompiled ``tf.keras.Model``: input ``(batch, input_size, input_size, channels)`` float32,
        output ``(batch, input_size, input_size, 1)`` float32 probabilities of "white cell" (``None``
        in place of ``input_size`` for the fully convolutional model).
    """
    _validate(input_size, channels, depth, base_filters, dropout, upsampling, batchnorm_momentum)
    inputs = tf.keras.Input((input_size, input_size, channels), name="image")  # (None, None, c) when None
    x = layers.Rescaling(input_scale, name="rescale")(inputs) if input_scale is not None else inputs
    skips = []
    for level in range(depth):
        x = _residual_block(x, base_filters * 2**level, batchnorm_momentum, f"enc{level + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = _residual_block(x, base_filters * 2**depth, batchnorm_momentum, "bottleneck")
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = _upsample(x, filters, upsampling, f"dec{level + 1}")
        x = layers.Concatenate(name=f"dec{level + 1}_concat")([x, skips[level]])
        x = _residual_block(x, filters, batchnorm_momentum, f"dec{level + 1}")
    # float32 output keeps the sigmoid and the loss stable under a mixed-precision policy.
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad an HxWxC image at the bottom and right (edge pixels repeated) to multiples of ``multiple``.

    The fully convolutional U-Net needs H and W divisible by ``2**depth``; crop its output back
    with ``out[:h, :w]``.

    Args:
        image: HxW or HxWxC array.
        multiple: the required divisor (``2**depth``), >= 1.

    Returns:
        ``(padded, (h, w))``: the padded array and the original height and width.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = image.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image, (h, w)
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="edge"), (h, w)
