"""The shape-blind baselines: colour of the cells' inner pixels (not their size), and the cells' areas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from allmtl_spark.evaluation.baselines import colour_features, fit_predict, legacy_baseline_rows, size_features
from allmtl_spark.evaluation.colour_baseline import colour_histograms, nonblack

pytestmark = pytest.mark.unit


def disc(radius: int, colour: tuple[int, int, int], size: int = 75) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)  # cells isolated on black, as the classifier gets them
    cv2.circle(image, (size // 2, size // 2), int(radius), tuple(int(c) for c in colour), -1)
    return image


def test_features_ignore_the_black_backdrop_so_cell_size_is_not_a_colour():
    small, large = disc(8, (140, 90, 200)), disc(30, (140, 90, 200))
    features = colour_features(np.stack([small, large]), bins=16)
    assert features.shape == (2, 48)
    np.testing.assert_allclose(features[0], features[1])  # same colour, 14x the area: the same histogram


def resized_disc(radius: int, colour: tuple[int, int, int], size: int = 160, out: int = 75) -> np.ndarray:
    """A disc isolated on black, then shrunk as the montage shrinks a cell tile (INTER_AREA blends the rim)."""
    return cv2.resize(disc(radius, colour, size), (out, out), interpolation=cv2.INTER_AREA)


def test_features_leave_out_the_rim_the_resize_blends_with_the_backdrop():
    # Rim pixels darkened by the black backdrop are a bigger share of a small cell: counted, they tell size.
    small, large = resized_disc(14, (140, 90, 200)), resized_disc(70, (140, 90, 200))
    rims_in = colour_histograms([small, large], [nonblack(small), nonblack(large)], bins=16)
    assert np.abs(rims_in[0] - rims_in[1]).sum() > 0.1
    features = colour_features(np.stack([small, large]), bins=16)
    np.testing.assert_allclose(features[0], features[1])


def test_a_colour_cue_is_found_and_size_alone_is_not():
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 1], n)
    hue_shift = [disc(int(rng.integers(10, 30)), (120 + 60 * y, 90, 200)) for y in labels]
    size_only = [disc(10 + 18 * y + int(rng.integers(0, 4)), (150, 90, 200)) for y in labels]
    for images, expect_high in ((hue_shift, True), (size_only, False)):
        x = colour_features(np.stack(images), bins=16)
        train = np.arange(2 * n) % 2 == 0
        scores = fit_predict(x[train], labels[train], 2, x[~train])
        accuracy = float(np.mean(scores.argmax(axis=1) == labels[~train]))
        assert (accuracy > 0.95) if expect_high else (accuracy < 0.7), (expect_high, accuracy)


def test_size_features_are_each_tiles_cell_share_and_separate_sizes_that_colour_cannot():
    rng = np.random.default_rng(2)
    montage = np.zeros((76, 76, 3), np.uint8)
    for (row, col), radius in zip([(0, 0), (0, 1), (1, 0), (1, 1)], (16, 12, 8, 0), strict=True):
        if radius:
            cv2.circle(montage, (19 + 38 * col, 19 + 38 * row), radius, (140, 90, 200), -1)
    shares = size_features(montage[None], grid=2)[0]
    assert shares.shape == (4,) and shares[3] == 0.0
    np.testing.assert_allclose(shares[:3], np.pi * np.array([16, 12, 8]) ** 2 / 38**2, rtol=0.1)
    assert size_features(montage[None], grid=1)[0, 0] == pytest.approx(shares.mean(), rel=0.01)
    labels = np.repeat([0, 1], 40)
    images = np.stack([disc(10 + 18 * y + int(rng.integers(0, 4)), (150, 90, 200)) for y in labels])
    train = np.arange(80) % 2 == 0
    for features, accurate in ((size_features(images), True), (colour_features(images, 16), False)):
        scores = fit_predict(features[train], labels[train], 2, features[~train])
        assert (np.mean(scores.argmax(axis=1) == labels[~train]) > 0.95) == accurate


def test_classes_missing_from_training_get_zero_probability():
    x = np.random.default_rng(1).random((6, 4))
    scores = fit_predict(x, np.array([0, 0, 0, 2, 2, 2]), 4, x[:2])
    assert scores.shape == (2, 4) and (scores[:, [1, 3]] == 0).all()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    only = fit_predict(x, np.zeros(6, int), 3, x[:1])
    assert only.tolist() == [[1.0, 0.0, 0.0]]


def test_rows_of_the_retired_rims_in_colour_baseline_are_told_apart_from_the_current_ones():
    approaches = ["colour", "colour", "size", "mtl"]
    backbones = ["histogram+logreg", "inner-histogram+logreg", "area+logreg", "histogram+logreg"]
    assert legacy_baseline_rows(approaches, backbones).tolist() == [True, False, False, False]
