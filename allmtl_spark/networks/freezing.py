"""Which layers train in a stage: a policy string applied to a model's ``trainable`` flags.

The builders build; the stage schedule decides what to freeze and calls :func:`set_trainable`
before compiling. Head layers are those named ``head_*`` (see ``classifier``); every other layer
with weights is backbone.
"""

from __future__ import annotations

import math

import tensorflow as tf

from allmtl_spark.networks.classifier import HEAD_PREFIX

POLICIES = ("all", "head", "top_fraction:<f>")


def _parse_policy(policy: str) -> tuple[str, float]:
    if policy in ("all", "head"):
        return policy, 1.0 if policy == "all" else 0.0
    kind, _, value = policy.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if kind != "top_fraction" or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"policy must be one of {POLICIES} with 0 <= f <= 1, got {policy!r}")
    return kind, fraction


def set_trainable(model: tf.keras.Model, policy: str = "all", train_batchnorm: bool = True) -> tf.keras.Model:
    """Set each layer's ``trainable`` flag by policy. Recompile the model afterwards.

    Args:
        model: a Keras model; classifier heads are recognised by the ``head_`` name prefix.
        policy: ``"all"`` (everything trains, the paper's fine-tuning), ``"head"`` (only ``head_*``
            layers train; the model must have some), or ``"top_fraction:f"`` (the head plus the last
            ``ceil(f * n)`` of the n backbone layers that have weights, in topological order).
        train_batchnorm: False keeps every BatchNormalization layer frozen (inference-mode
            statistics), the usual choice when fine-tuning on small batches.

    Returns:
        The same model object, for chaining.
    """
    kind, fraction = _parse_policy(policy)
    head = [la for la in model.layers if la.name.startswith(HEAD_PREFIX)]
    if kind == "head" and not head:
        raise ValueError(f"policy 'head' needs layers named {HEAD_PREFIX}*; model {model.name!r} has none")
    body = [la for la in model.layers if not la.name.startswith(HEAD_PREFIX) and la.weights]
    first_trained = len(body) - math.ceil(fraction * len(body))
    model.trainable = True
    for layer in model.layers:
        layer.trainable = not layer.weights  # weightless layers: the flag is moot, keep the default
    for i, layer in enumerate(body):
        layer.trainable = i >= first_trained
    for layer in head:
        layer.trainable = True
    if not train_batchnorm:
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.trainable = False
    return model
