import numpy as np
import pytest

from allmtl_spark.training.augment import AugmentParams, augment_image, copies_per_item, copy_rng

pytestmark = pytest.mark.unit


def _cell_image(size=64):
    image = np.zeros((size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 4) ** 2] = (120, 90, 200)
    image[size // 2 - 2 : size // 2 + 2, size // 2 + 4 : size // 2 + 10] = (250, 250, 250)  # asymmetric mark
    return image


def test_augmentation_keeps_shape_dtype_and_the_cell():
    image = _cell_image()
    for copy in range(1, 6):
        out = augment_image(image, copy_rng(5, "key", copy), AugmentParams())
        assert out.shape == image.shape and out.dtype == np.uint8
        # the purple cell survives: same order of purple pixel count (scale 0.9..1.1 -> area 0.8..1.2)
        ratio = (out[..., 2] > 150).sum() / (image[..., 2] > 150).sum()
        assert 0.7 < ratio < 1.3


def test_copies_are_seeded_and_differ():
    image = _cell_image()
    a = augment_image(image, copy_rng(5, "key", 1), AugmentParams())
    assert np.array_equal(a, augment_image(image, copy_rng(5, "key", 1), AugmentParams()))
    assert not np.array_equal(a, augment_image(image, copy_rng(5, "key", 2), AugmentParams()))
    assert not np.array_equal(a, augment_image(image, copy_rng(6, "key", 1), AugmentParams()))


def test_no_op_parameters_return_the_image():
    image = _cell_image()
    params = AugmentParams(flip=False, rotate_max_deg=0.0, shift_fraction=0.0, scale_range=(1.0, 1.0))
    assert np.array_equal(augment_image(image, copy_rng(1, "k", 1), params), image)


def test_copies_without_balancing():
    assert copies_per_item(["a", "b", "a"], 4, None) == [4, 4, 4]


def test_balancing_reaches_target_per_class():
    labels = ["normal"] * 6 + ["L1"] * 2 + ["L3"] * 1
    copies = copies_per_item(labels, 4, balance_to=30)
    totals = {}
    for label, n in zip(labels, copies, strict=True):
        totals[label] = totals.get(label, 0) + 1 + n
    assert totals == {"normal": 10, "L1": 10, "L3": 10}
