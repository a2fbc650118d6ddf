import numpy as np
import pytest
import tensorflow as tf

from allmtl_spark.networks.losses import dice_bce_loss, dice_coefficient
from allmtl_spark.networks.resunet import build_residual_unet

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("depth", "size"), [(2, 32), (3, 32), (4, 32), (3, 64)])
def test_unet_output_is_a_full_size_probability_mask(depth, size):
    model = build_residual_unet(input_size=size, depth=depth, base_filters=4)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, size, size, 1)
    assert sum(1 for la in model.layers if la.name.endswith("_pool")) == depth
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32), verbose=0)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert model.optimizer is None  # uncompiled


def test_unet_blocks_are_residual_with_projected_shortcuts():
    model = build_residual_unet(input_size=32, depth=2, base_filters=4, dropout=0.2, upsampling="bilinear")
    add = model.get_layer("enc1_add")
    assert {t.node.layer.name for t in add.input} == {"enc1_proj_bn", "enc1_bn2"}
    assert model.get_layer("bottleneck_conv1").filters == 16  # base_filters * 2**depth
    assert model.get_layer("dec1_concat").input[1].node.layer.name == "enc1_out"  # skip connection
    assert isinstance(model.get_layer("dec2_up"), tf.keras.layers.UpSampling2D)
    assert model.get_layer("bottleneck_dropout").rate == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_size": 30, "depth": 2}, "input_size"),
        ({"input_size": 32, "depth": 6}, "input_size"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"base_filters": 0}, "base_filters"),
        ({"upsampling": "cubic"}, "upsampling"),
        ({"batchnorm_momentum": 1.0}, "batchnorm_momentum"),
    ],
)
def test_unet_rejects_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_residual_unet(**kwargs)


def test_dice_coefficient_and_loss_values():
    truth = np.zeros((2, 4, 4, 1), np.float32)
    truth[0, :2] = 1.0  # image 0: 8 px foreground; image 1 empty
    dice = dice_coefficient(truth, truth, smooth=1e-6).numpy()
    np.testing.assert_allclose(dice, [1.0, 1.0], atol=1e-5)  # empty vs empty counts as perfect
    disjoint = dice_coefficient(truth, 1.0 - truth, smooth=0.0).numpy()
    assert disjoint[0] == pytest.approx(0.0)
    good = dice_bce_loss(truth, np.clip(truth, 0.01, 0.99)).numpy()
    bad = dice_bce_loss(truth, np.full_like(truth, 0.5)).numpy()
    assert good.shape == (2,) and (good < bad).all()


def _disc_images(n, size, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size, 1), np.float32)
    for i in range(n):
        cx, cy, r = rng.uniform(9, size - 9), rng.uniform(9, size - 9), rng.uniform(4, 8)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        images[i] = np.where(disc[..., None], (133, 96, 213), (193, 194, 189)) + rng.normal(0, 8, (size, size, 3))
        masks[i, ..., 0] = disc
    return images, masks


@pytest.mark.slow
def test_unet_short_training_lowers_the_loss():
    tf.keras.utils.set_random_seed(0)
    images, masks = _disc_images(8, 32, seed=0)
    # momentum 0.8: the moving BN statistics settle within the 40 steps, so inference mode is fair.
    model = build_residual_unet(input_size=32, depth=2, base_filters=8, batchnorm_momentum=0.8)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss=dice_bce_loss, metrics=[dice_coefficient])
    before = model.evaluate(images, masks, verbose=0)[0]
    history = model.fit(images, masks, batch_size=4, epochs=20, verbose=0).history["loss"]
    after, dice = model.evaluate(images, masks, verbose=0)
    assert history[-1] < 0.3 * history[0]
    assert after < 0.2 * before and dice > 0.9
