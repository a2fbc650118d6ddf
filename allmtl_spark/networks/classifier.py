"""Transfer-learning classifier: a keras.applications backbone, global average pooling and a head.

The model takes float32 RGB in 0..255 (``(batch, input_size, input_size, 3)``): the backbone's
``preprocess_input`` runs inside it, so Spark UDFs and datasets feed decoded pixels unchanged. The
three backbones all use keras' ``"tf"`` mode, x / 127.5 - 1, done here by a ``Rescaling`` layer
(serialisable, unlike a ``Lambda``).

Layer names are the contract with later stages: ``preprocess`` (input scaling), then the backbone's
own layers, ``pool`` (global average pooling, the backbone's output), and ``head_*`` layers ending
in ``head_out``. :func:`backbone_of` and :func:`replace_head` find the parts by those names, and
``freezing.set_trainable`` tells head from backbone by the ``head_`` prefix. The backbone's layers
sit directly in the model (not as a nested sub-model) so HDF5 weight files keep one fixed layer
order whatever a stage has frozen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from allmtl_spark.networks import h5weights

layers = tf.keras.layers

PREPROCESS_LAYER = "preprocess"
POOL_LAYER = "pool"
HEAD_PREFIX = "head_"
HEAD_OUTPUT_LAYER = "head_out"
HEADS = ("simple", "dense")
MIN_INPUT_SIZE = 75  # InceptionV3 and InceptionResNetV2 reject smaller inputs (Xception 71)
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"


@dataclass(frozen=True)
class BackboneSpec:
    """Where keras keeps a backbone's ImageNet weights without the top (classifier) layers."""

    subdir: str  # folder under the keras-applications URL, also the file-name stem
    file_hash: str  # keras' MD5 of the notop file, so a mirror serving a wrong file is caught


BACKBONES = {
    "InceptionV3": BackboneSpec("inception_v3", "bcbd6486424b2319ff4ef7d526e38f63"),
    "Xception": BackboneSpec("xception", "b0042744bf5b25fce3cb969f33bebb97"),
    "InceptionResNetV2": BackboneSpec("inception_resnet_v2", "d19885ff4a710c122648d3b5c3b684e4"),
}


def imagenet_weights_file(backbone: str) -> str:
    """Keras' file name of a backbone's ImageNet weights without top, e.g. ``xception_weights_..._notop.h5``."""
    return f"{_spec(backbone).subdir}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def imagenet_weights_url(backbone: str, base_url: str | None = None) -> str:
    """Download URL of the notop ImageNet weights: ``<base_url>/<subdir>/<file>``.

    Args:
        backbone: one of :data:`BACKBONES`.
        base_url: a mirror laid out like keras' storage; None is keras' own
            ``https://storage.googleapis.com/tensorflow/keras-applications``.
    """
    base = (base_url or KERAS_APPLICATIONS_URL).rstrip("/")
    return f"{base}/{_spec(backbone).subdir}/{imagenet_weights_file(backbone)}"


def fetch_imagenet_weights(backbone: str, base_url: str | None = None, cache_dir: str | None = None) -> str:
    """Download (once, then cached) the notop ImageNet weights with ``tf.keras.utils.get_file``.

    Args:
        backbone: one of :data:`BACKBONES`.
        base_url: see :func:`imagenet_weights_url`.
        cache_dir: cache root; the file goes to ``<cache_dir>/models/``. None is keras' ``~/.keras``.

    Returns:
        Local path of the verified file.
    """
    return tf.keras.utils.get_file(
        imagenet_weights_file(backbone),
        origin=imagenet_weights_url(backbone, base_url),
        cache_subdir="models",
        file_hash=_spec(backbone).file_hash,
        cache_dir=cache_dir,
    )


def _spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    return BACKBONES[backbone]


def _validate_head(num_outputs: int, head: str, dense_units: Sequence[int], dropout: float) -> None:
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "dense" and (not dense_units or any(int(u) < 1 for u in dense_units)):
        raise ValueError(f"dense_units must be a non-empty sequence of positive sizes, got {dense_units!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _head(features: tf.Tensor, num_outputs: int, head: str, dense_units: Sequence[int], dropout: float) -> tf.Tensor:
    """'simple': one Dense; 'dense': (Dense + ReLU + Dropout) per entry of dense_units, then the Dense out."""
    x = features
    if head == "dense":
        for i, units in enumerate(dense_units, start=1):
            x = layers.Dense(int(units), activation="relu", name=f"{HEAD_PREFIX}dense_{i}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout_{i}")(x)
    activation = "sigmoid" if num_outputs == 1 else "softmax"
    # float32 output keeps the probabilities and the loss stable under a mixed-precision policy.
    return layers.Dense(num_outputs, activation=activation, dtype="float32", name=HEAD_OUTPUT_LAYER)(x)


def build_classifier(
    backbone: str = "InceptionV3",
    input_size: int = 299,
    num_outputs: int = 1,
    head: str = "simple",
    dense_units: Sequence[int] = (256, 128),
    dropout: float = 0.5,
    weights: str | os.PathLike | None = None,
    load_head: bool = True,
    imagenet_base_url: str | None = None,
    cache_dir: str | None = None,
    name: str | None = None,
) -> tf.keras.Model:
    """Build an uncompiled backbone + global-average-pooling + head classifier.

    Args:
        backbone: ``"InceptionV3"``, ``"Xception"`` or ``"InceptionResNetV2"``.
        input_size: side of the square RGB input, pixels, >= 75.
        num_outputs: 1 gives a sigmoid unit (binary: blast / ALL vs normal); k >= 2 a softmax over k.
        head: ``"simple"`` (one Dense, the stage-2 head) or ``"dense"`` (Dense + ReLU + Dropout per
            entry of ``dense_units``, then the output Dense, the stage-3 head).
        dense_units: hidden sizes of the ``dense`` head.
        dropout: dropout rate after each hidden Dense of the ``dense`` head; the ``simple`` head has none.
        weights: None (random init), ``"imagenet"`` (keras' notop file, backbone only), or the path of
            a Keras 2 ``.h5`` file: either a backbone-only file in keras' notop layout, or a file from
            ``save_weights``/``save`` of a model built here (loads backbone and head, see
            ``load_head``). Weights do not depend on ``input_size``, so files move between sizes.
        load_head: with a file of a whole classifier, also load its head (the head must then match);
            False takes only its backbone, e.g. to start stage 3 from the stage-2 model with a new head.
        imagenet_base_url: mirror of keras' weight storage for ``weights="imagenet"``; None is keras' URL.
        cache_dir: download cache root for ``weights="imagenet"``; None is keras' ``~/.keras``.
        name: model name; None is ``"<backbone>_classifier"`` in lower case.

    Returns:
        Uncompiled ``tf.keras.Model``: input ``(batch, input_size, input_size, 3)`` float32 RGB
        0..255, output ``(batch, num_outputs)`` float32 probabilities.

    Raises:
        ValueError: unknown backbone/head, input_size < 75, bad sizes or rates, or a weights file
            that does not fit (the message names the file and the expected and found shapes).
        FileNotFoundError: ``weights`` names a file that does not exist.
    """
    _spec(backbone)
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be >= {MIN_INPUT_SIZE} for the keras backbones, got {input_size}")
    _validate_head(num_outputs, head, dense_units, dropout)
    if weights not in (None, "imagenet"):
        h5weights.check_weights_path(weights)  # fail on a missing file before the costly build
    image = tf.keras.Input((input_size, input_size, 3), name="image")
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)(image)
    # input_tensor puts the backbone's layers directly into this graph (see the module docstring).
    base = getattr(tf.keras.applications, backbone)(include_top=False, weights=None, input_tensor=scaled)
    features = layers.GlobalAveragePooling2D(name=POOL_LAYER)(base.output)
    outputs = _head(features, num_outputs, head, dense_units, dropout)
    model = tf.keras.Model(image, outputs, name=name or f"{backbone.lower()}_classifier")
    if weights is not None:
        _load_weights(model, backbone, weights, load_head, imagenet_base_url, cache_dir)
    return model


def backbone_of(model: tf.keras.Model) -> tf.keras.Model:
    """The backbone part of a classifier built here, as a model sharing its layers (and so weights).

    Returns:
        ``tf.keras.Model`` from the classifier's input (float32 RGB 0..255) to the last feature map
        before pooling; its layers are the classifier's own layer objects.
    """
    return tf.keras.Model(model.input, model.get_layer(POOL_LAYER).input, name="backbone")


def replace_head(
    model: tf.keras.Model,
    num_outputs: int,
    head: str = "dense",
    dense_units: Sequence[int] = (256, 128),
    dropout: float = 0.5,
    name: str | None = None,
) -> tf.keras.Model:
    """A new model: the same backbone layer objects (weights kept and shared) with a freshly initialised head.

    The old model keeps working but shares the backbone: training either one changes both.

    Args:
        model: a classifier from :func:`build_classifier`.
        num_outputs: see :func:`build_classifier`.
        head: see :func:`build_classifier`; ``"dense"`` is the stage-3 head.
        dense_units: see :func:`build_classifier`.
        dropout: see :func:`build_classifier`.
        name: model name; None keeps the old one.

    Returns:
        Uncompiled ``tf.keras.Model`` with the same input and a ``(batch, num_outputs)`` output.
    """
    _validate_head(num_outputs, head, dense_units, dropout)
    outputs = _head(model.get_layer(POOL_LAYER).output, num_outputs, head, dense_units, dropout)
    return tf.keras.Model(model.input, outputs, name=name or model.name)


def _load_weights(
    model: tf.keras.Model,
    backbone: str,
    weights: str | os.PathLike,
    load_head: bool,
    base_url: str | None,
    cache_dir: str | None,
) -> None:
    """Fill ``model`` from ImageNet or a file, checking the file's layout first (see ``h5weights``)."""
    path = h5weights.check_weights_path(
        fetch_imagenet_weights(backbone, base_url, cache_dir) if weights == "imagenet" else weights
    )
    found = h5weights.file_layout(path)
    whole_classifier = any(g.name == HEAD_OUTPUT_LAYER for g in found)
    if whole_classifier and load_head:
        target, wanted, part = model, found, ""
    elif whole_classifier:
        wanted = [g for g in found if not g.name.startswith(HEAD_PREFIX)]
        target, part = backbone_of(model), " (backbone only)"
    else:  # a backbone-only file such as keras' notop ImageNet weights
        target, wanted, part = backbone_of(model), found, " (backbone)"
    h5weights.check_layout(h5weights.layer_layout(target.layers), wanted, path, f"the {backbone} classifier{part}")
    if wanted is not found:
        h5weights.assign_from_file(target.layers, path, wanted)  # keras only loads whole files
        return
    try:
        target.load_weights(str(path))
    except ValueError as err:  # rare once the layout check passed, but still name the file
        raise ValueError(
            f"weights file {path} could not be loaded into the {backbone} classifier{part}: {err}"
        ) from err
