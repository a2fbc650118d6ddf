"""Colour and stain normalisation: a cast or a stronger stain is undone, the reference is the smear's own stains."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.transforms import stain
from tests.transforms.conftest import drawn_smear

pytestmark = pytest.mark.unit


def _recoloured(image: np.ndarray, gains=(1.0, 1.0, 1.0), stain_power: float = 1.0) -> np.ndarray:
    """The same smear through another lab: per-channel camera gains and a stain ``stain_power`` times as dense."""
    transmission = (image.astype(np.float64) + 1) / 256
    return np.clip(256 * transmission**stain_power * np.asarray(gains) - 1, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
@pytest.mark.parametrize("change", [{"gains": (0.8, 1.0, 1.2)}, {"stain_power": 1.6}, {"stain_power": 0.7}])
def test_another_labs_colours_come_back_to_the_same_image(method, change):
    image = drawn_smear(25, seed=1)
    other = _recoloured(image, **change)
    before = np.abs(image.astype(float) - other).mean()
    after = np.abs(stain.normalize_colour(image, method).astype(float) - stain.normalize_colour(other, method)).mean()
    assert after < 0.2 * before and after < 4.0


def test_white_balance_alone_does_not_undo_a_stronger_stain():
    image = drawn_smear(25, seed=1)
    other = _recoloured(image, stain_power=1.6)
    before = np.abs(image.astype(float) - other).mean()
    after = np.abs(
        stain.normalize_colour(image, "grey_world").astype(float) - stain.normalize_colour(other, "grey_world")
    )
    assert after.mean() > 0.5 * before  # what Reinhard and Macenko add


def test_reference_stains_are_a_nuclear_stain_and_eosin():
    basis = stain._reference_stains()
    nuclear, eosin = basis.vectors
    assert nuclear[0] > eosin[0] and nuclear[2] < 0.1  # nuclei absorb red and green, hardly blue
    assert eosin[1] == max(eosin) and eosin[2] > 0.3  # haemoglobin absorbs green most, then blue


def test_blank_glass_and_shapes_and_unknown_method():
    glass = np.full((64, 64, 3), (190, 192, 188), np.uint8)
    out = stain.macenko(glass)
    assert out.shape == glass.shape and out.dtype == np.uint8 and out.min() >= 250  # balanced to white, no stains
    assert stain.reinhard(glass).shape == glass.shape
    with pytest.raises(ValueError, match="must be one of"):
        stain.normalize_colour(glass, "vahadane")
