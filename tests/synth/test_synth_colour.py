"""A slide's colour must not give its class away: stain and optics are drawn independently of the class."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.synth.smear import SmearParams, render_slide

CLASSES = ("normal", "L1", "L2", "L3")
N_PER_CLASS = 10


def nearest_mean_loo_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of a nearest-class-mean classifier (Euclidean, features in 8-bit levels)."""
    z = np.asarray(features, dtype=np.float64)
    hits = 0
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        classes = np.unique(labels[keep])
        means = np.stack([z[keep][labels[keep] == c].mean(0) for c in classes])
        hits += classes[np.argmin(((means - z[i]) ** 2).sum(1))] == labels[i]
    return hits / len(z)


@pytest.fixture(scope="module")
def slide_colours() -> tuple[np.ndarray, np.ndarray]:
    # 640x480 with 12-18 px red cells keeps the white cells' share of the frame that of a full-size slide.
    params = SmearParams(rbc_diameter_px=(12.0, 18.0))
    features, labels = [], []
    for k, fab_class in enumerate(CLASSES):
        for i in range(N_PER_CLASS):
            s = render_slide(np.random.default_rng([21, k, i]), 640, 480, fab_class, params)
            features.append(s.image.reshape(-1, 3).mean(0))
            labels.append(fab_class)
    return np.array(features), np.array(labels)


@pytest.mark.unit
def test_classifier_finds_class_colour_when_there_is_one():
    # The check below is only worth something if this classifier does see a colour cue when one exists.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(CLASSES), N_PER_CLASS)
    features = rng.normal(190.0, 12.0, size=(len(labels), 3))
    features[:, 2] += 25.0 * np.array([CLASSES.index(c) for c in labels])  # a class-dependent blue cast
    assert nearest_mean_loo_accuracy(features, labels) > 0.6


@pytest.mark.unit
def test_mean_slide_colour_does_not_separate_classes(slide_colours):
    features, labels = slide_colours
    assert nearest_mean_loo_accuracy(features, labels) < 0.45  # chance is 0.25
    binary = np.where(labels == "normal", "normal", "ALL")
    assert nearest_mean_loo_accuracy(features, binary) < 0.75  # chance is 0.5


@pytest.mark.unit
def test_same_seed_gives_the_same_colour_whatever_the_class():
    # Optics are drawn before anything class-dependent: with one seed, the four classes differ only by the
    # white cells (about 1% of the frame) and where the red cells fall, so their mean colours agree to a
    # few levels, far below the tens of levels between slides.
    params = SmearParams(rbc_diameter_px=(12.0, 18.0))
    per_seed = np.array(
        [
            [
                render_slide(np.random.default_rng([33, seed]), 640, 480, c, params).image.reshape(-1, 3).mean(0)
                for c in CLASSES
            ]
            for seed in range(6)
        ]
    )  # seeds x classes x RGB
    within = np.abs(per_seed - per_seed[:, :1]).max()
    between = (per_seed[:, 0].max(0) - per_seed[:, 0].min(0)).max()
    assert within < 6.0
    assert between > 5 * within


@pytest.mark.unit
def test_slide_colours_vary_widely(slide_colours):
    features, _ = slide_colours
    assert (features.max(0) - features.min(0)).min() > 25  # every channel's mean spans > 25 levels
