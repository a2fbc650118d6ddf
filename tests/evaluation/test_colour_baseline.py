"""The colour-only baseline: histograms, grouped cross-validation, and that it finds colour cues when they exist."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.evaluation.colour_baseline import (
    colour_histograms,
    compute_colour_baseline,
    compute_grouped_cv_accuracy,
    nonblack,
)

pytestmark = pytest.mark.unit


def _patch(rgb, size=8, noise=0.0, rng=None):
    image = np.empty((size, size, 3), np.float64)
    image[:] = rgb
    if noise:
        image += rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_histograms_count_each_channel_in_its_bins_and_respect_masks():
    image = _patch((0, 128, 255), size=4)
    image[0, 0] = (255, 255, 255)
    h = colour_histograms([image], bins=16)
    assert h.shape == (1, 48)
    red, green, blue = h[0, :16], h[0, 16:32], h[0, 32:]
    assert red[0] == pytest.approx(15 / 16) and red[15] == pytest.approx(1 / 16)
    assert green[8] == pytest.approx(15 / 16) and green[15] == pytest.approx(1 / 16)
    assert blue[15] == pytest.approx(1.0)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    masked = colour_histograms([image], [mask], bins=16)[0]
    assert masked[15] == masked[31] == masked[47] == 1.0  # only the white pixel counts


def test_an_item_of_several_crops_pools_their_pixels():
    a, b = _patch((0, 0, 0), size=2), _patch((255, 255, 255), size=4)  # 4 black and 16 white pixels
    pooled = colour_histograms([[a, b]], bins=4)[0]
    assert pooled[0] == pytest.approx(4 / 20) and pooled[3] == pytest.approx(16 / 20)
    with_masks = colour_histograms([[a, b]], [[None, np.zeros((4, 4), bool)]], bins=4)[0]
    assert with_masks[0] == 1.0  # b masked out entirely
    assert np.array_equal(nonblack(np.stack([a[0, :2], b[0, :2]])), np.array([[False, False], [True, True]]))


def _items(n_patients: int, per_patient: int, cue: float, seed: int = 0, spread: float = 40.0, noise: float = 12.0):
    """Patients in turn of each class; each item a noisy patch around its patient's colour (drawn within
    ``spread`` levels), its blue shifted by ``cue`` levels per class index."""
    rng = np.random.default_rng(seed)
    classes = np.array(["normal", "L1", "L2", "L3"])
    images, labels, groups = [], [], []
    for p in range(n_patients):
        label = p % 4
        base = rng.uniform(100, 100 + spread, size=3)  # a patient's own stain
        for _ in range(per_patient):
            rgb = base + rng.normal(0, 4, 3)
            rgb[2] += cue * label
            images.append(_patch(rgb, noise=noise, rng=rng))
            labels.append(classes[label])
            groups.append(f"P{p}")
    return images, labels, groups


def test_a_colour_cue_is_found_and_its_absence_gives_chance():
    images, labels, groups = _items(40, 2, cue=40.0)
    found = compute_colour_baseline(images, labels, groups, bins=16, folds=5)
    assert found.accuracy > 0.8
    assert found.n_items == 80 and found.n_groups == 40 and found.n_classes == 4 and len(found.fold_accuracies) == 5
    images, labels, groups = _items(40, 2, cue=0.0)
    blind = compute_colour_baseline(images, labels, groups, bins=16, folds=5, repeats=3)
    assert blind.accuracy < 0.45  # chance is 0.25
    assert len(blind.fold_accuracies) == 15 and blind.accuracy_min <= blind.accuracy <= blind.accuracy_max
    assert blind.chance == pytest.approx(0.25)


def test_grouping_by_patient_stops_a_model_from_recognising_patients():
    # No class cue at all, but each patient's items share a colour: split by item, a model scores well above
    # chance by recognising the patient; split by patient it cannot.
    images, labels, groups = _items(24, 4, cue=0.0, seed=1, spread=150.0, noise=4.0)
    features = colour_histograms(images, bins=16)
    by_item = compute_grouped_cv_accuracy(features, labels, np.arange(len(labels)), folds=4, regularisation=1.0)
    by_patient = compute_grouped_cv_accuracy(features, labels, groups, folds=4)
    assert by_item.accuracy > 0.7
    assert by_patient.accuracy < 0.45


def test_bad_input_is_rejected():
    images, labels, groups = _items(4, 1, cue=0.0)
    with pytest.raises(ValueError, match="folds must be in 2..4"):
        compute_colour_baseline(images, labels, groups, folds=5)
    with pytest.raises(ValueError, match="HxWx3"):
        colour_histograms([np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="two classes"):
        compute_grouped_cv_accuracy(np.zeros((4, 2)), ["a"] * 4, [1, 2, 3, 4], folds=2)
