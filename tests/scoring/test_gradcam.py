"""Grad-CAM points at the evidence: a model whose evidence is known, and the layer it reads at small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from allmtl_spark.scoring.gradcam import feature_layer, grad_cam, heat_on_cells, readable_panel

pytestmark = pytest.mark.unit
layers = tf.keras.layers


def red_detector(logit_gain: float = 1000.0) -> tf.keras.Model:
    """A classifier with the product's layer names whose class 1 is "there is red": evidence known by construction.

    Channel 0 of ``mixed0`` is relu(r - g - b) (after the -1..1 scaling): positive only on red pixels.
    Class 1's logit is ``logit_gain`` times its spatial mean, so its softmax saturates near 1.
    """
    image = tf.keras.Input((32, 32, 3))
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(image)
    red = layers.Conv2D(1, 1, activation="relu", name="red")(scaled)
    other = layers.Conv2D(1, 1, activation="relu", name="other")(scaled)
    merged = layers.Concatenate(name="mixed0")([red, other])
    pooled = layers.GlobalAveragePooling2D(name="pool")(merged)
    out = layers.Dense(2, activation="softmax", name="head_out")(pooled)
    model = tf.keras.Model(image, out)
    model.get_layer("red").set_weights([np.array([1.0, -1.0, -1.0]).reshape(1, 1, 3, 1), np.zeros(1)])
    model.get_layer("other").set_weights([np.zeros((1, 1, 3, 1)), np.zeros(1)])
    model.get_layer("head_out").set_weights([np.array([[0.0, logit_gain], [0.0, 0.0]]), np.zeros(2)])
    return model


def test_heatmap_peaks_on_the_evidence_even_when_the_softmax_saturates():
    model = red_detector()
    image = np.full((32, 32, 3), 128, np.uint8)
    image[20:27, 4:11] = (255, 0, 0)  # the only red: the evidence for class 1
    probability = float(model(image[None].astype(np.float32))[0, 1])
    assert probability == 1.0  # saturated in float32: d(probability)/d(features) is exactly 0 here
    heat = grad_cam(model, image, class_index=1)
    assert heat.shape == (32, 32)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 20 <= y < 27 and 4 <= x < 11
    inside = heat[20:27, 4:11].mean()
    outside = np.delete(heat.ravel(), np.ravel_multi_index(np.mgrid[20:27, 4:11].reshape(2, -1), heat.shape)).mean()
    assert inside > 0.8 and outside < 0.1


def test_layer_choice_keeps_at_least_7x7_at_small_inputs():
    from allmtl_spark.networks.classifier import build_classifier

    for size, expected_side in ((75, 7), (96, 9)):
        model = build_classifier("InceptionV3", size, 4, head="dense", dense_units=(8,))
        name = feature_layer(model)
        side = model.get_layer(name).output_shape[1]
        assert side == expected_side and name.startswith("mixed"), (size, name, side)
        # the last feature map is what Grad-CAM used to read: 1x1 here, a uniform tint
        assert model.get_layer("pool").input_shape[1] == 1
    assert feature_layer(red_detector()) == "mixed0"


def test_readable_panel_scales_the_stamp_up():
    panel = readable_panel(np.zeros((96, 96, 3), np.uint8), np.ones((96, 96), np.float32), side=384)
    assert panel.shape == (384, 2 * 384 + 8, 3)


def test_heat_on_cells_tells_a_map_on_the_cells_from_one_beside_them():
    image = np.zeros((40, 40, 3), np.uint8)
    image[5:15, 5:15] = (200, 120, 160)  # one cell on black
    on = np.zeros((40, 40), np.float32)
    on[5:15, 5:15] = 1.0
    beside = np.zeros((40, 40), np.float32)
    beside[25:35, 25:35] = 1.0
    assert heat_on_cells(image, on) == float("inf")  # no heat off the cell
    assert heat_on_cells(image, beside) == 0.0
    assert heat_on_cells(image, np.full((40, 40), 0.5, np.float32)) == pytest.approx(1.0)  # a uniform tint
