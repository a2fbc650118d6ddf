import numpy as np
import pytest
import tensorflow as tf

from allmtl_spark.networks.freezing import set_trainable

pytestmark = pytest.mark.unit

layers = tf.keras.layers


def _tiny_classifier():
    """Body conv1 -> bn -> conv2 (3 layers with weights), pool, head_dense_1 -> head_out: the classifier's naming."""
    image = tf.keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv1")(image)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(4, 3, name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(4, activation="relu", name="head_dense_1")(x)
    return tf.keras.Model(image, layers.Dense(1, activation="sigmoid", name="head_out")(x))


def _trainable(model):
    return {la.name for la in model.layers if la.weights and la.trainable}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("all", {"conv1", "bn", "conv2", "head_dense_1", "head_out"}),
        ("head", {"head_dense_1", "head_out"}),
        ("top_fraction:0.5", {"bn", "conv2", "head_dense_1", "head_out"}),  # ceil(0.5 * 3) = 2 body layers
        ("top_fraction:0.3", {"conv2", "head_dense_1", "head_out"}),
        ("top_fraction:0", {"head_dense_1", "head_out"}),
    ],
)
def test_policies_choose_the_trainable_layers(policy, expected):
    model = set_trainable(_tiny_classifier(), policy)
    assert _trainable(model) == expected


def test_policies_can_be_reapplied_and_batchnorm_can_stay_frozen():
    model = _tiny_classifier()
    set_trainable(model, "head")
    assert _trainable(set_trainable(model, "all")) == {"conv1", "bn", "conv2", "head_dense_1", "head_out"}
    assert "bn" not in _trainable(set_trainable(model, "all", train_batchnorm=False))


def test_head_policy_really_freezes_the_backbone_in_training():
    tf.keras.utils.set_random_seed(0)
    model = set_trainable(_tiny_classifier(), "head")
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    body_before = [w.numpy().copy() for w in model.get_layer("conv1").weights]
    head_before = model.get_layer("head_out").kernel.numpy().copy()
    model.train_on_batch(np.random.default_rng(0).normal(size=(4, 8, 8, 3)), np.array([[0], [1], [0], [1]]))
    for before, weight in zip(body_before, model.get_layer("conv1").weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), before)
    assert not np.array_equal(model.get_layer("head_out").kernel.numpy(), head_before)


@pytest.mark.parametrize("policy", ["some", "top_fraction", "top_fraction:1.5", "top_fraction:x", "head:0.3"])
def test_bad_policies_are_rejected(policy):
    with pytest.raises(ValueError, match="policy"):
        set_trainable(_tiny_classifier(), policy)


def test_head_policy_needs_a_head():
    image = tf.keras.Input((4,))
    model = tf.keras.Model(image, layers.Dense(1, name="out")(image))
    with pytest.raises(ValueError, match="head_"):
        set_trainable(model, "head")


def test_head_policy_on_the_real_classifier(classifiers):
    model = classifiers("InceptionV3")
    try:
        set_trainable(model, "head")
        trainable = {w.name.split("/")[0] for w in model.trainable_weights}
        assert trainable == {"head_out"}
        set_trainable(model, "top_fraction:0.1")
        assert len(model.trainable_weights) > 2 and "head_out/kernel:0" in {w.name for w in model.trainable_weights}
    finally:
        set_trainable(model, "all")
