"""The out-of-distribution check: statistics, Mahalanobis score, validation threshold, reasons, the hashed file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from allmtl_spark.errors import ArtifactError
from allmtl_spark.trust import (
    OOD_FEATURES,
    OodModel,
    fit_ood,
    ood_features,
    read_trust,
    review_reasons,
    view_statistics,
    write_trust,
)

pytestmark = pytest.mark.unit


def _cells_view(rng: np.random.Generator, colour=(150, 60, 160), size: int = 75) -> np.ndarray:
    view = np.zeros((size, size, 3), np.uint8)
    for cx, cy in ((18, 18), (56, 18), (18, 56), (56, 56)):
        cv2.circle(view, (cx, cy), 14, colour, -1)
    texture = rng.integers(-40, 40, view.shape)
    return np.where(view > 0, np.clip(view.astype(int) + texture, 9, 255), 0).astype(np.uint8)


def test_view_statistics_see_stain_blur_and_emptiness():
    rng = np.random.default_rng(0)
    view = _cells_view(rng)
    base = view_statistics(view)
    blurred = view_statistics(np.where(view > 0, cv2.GaussianBlur(view, (7, 7), 3), 0).astype(np.uint8))
    blue = view_statistics(_cells_view(np.random.default_rng(0), colour=(60, 60, 200)))
    assert blurred[4] < base[4] - 1.0  # sharpness falls with blur
    assert blue[0] < base[0] - 0.2 and blue[2] > base[2] + 0.1  # stain colour moves
    assert 0.4 < base[5] < 0.7  # four circles of radius 14 in 75 x 75
    assert view_statistics(np.zeros((75, 75, 3), np.uint8)).tolist() == [0.0] * 6
    features = ood_features(view, 12, 0.155)
    assert features.shape == (len(OOD_FEATURES),)
    assert features[6] == pytest.approx(np.log1p(12)) and features[7] == pytest.approx(np.log(0.155))
    assert np.isnan(ood_features(view, 12, None)[7])


def _cloud(rng, n, shift=0.0):
    cov = np.eye(8) + 0.5
    return rng.multivariate_normal(np.zeros(8) + shift, cov, n)


def test_threshold_passes_the_asked_share_of_validation_and_flags_a_shifted_batch():
    rng = np.random.default_rng(1)
    train, val, held_out = _cloud(rng, 400), _cloud(rng, 60), _cloud(rng, 400)
    model = fit_ood(train, val, pass_fraction=0.95)
    assert np.mean(model.score(val) <= model.threshold) >= 0.95
    assert np.mean(model.score(val) <= model.threshold) < 1.0  # the threshold is a validation quantile, not the max
    assert np.mean(model.score(held_out) > model.threshold) < 0.12
    shifted = held_out.copy()
    shifted[:, 0] += 8.0  # one statistic far off, e.g. the stain's red
    assert np.mean(model.score(shifted) > model.threshold) > 0.9
    assert model.furthest(shifted).count(OOD_FEATURES[0]) > 350
    # stricter pass fraction, higher threshold
    assert fit_ood(train, val, pass_fraction=1.0).threshold >= model.threshold


def test_score_is_the_mahalanobis_distance_of_the_standardised_statistics():
    rng = np.random.default_rng(2)
    train = _cloud(rng, 200)
    model = fit_ood(train, _cloud(rng, 20))
    x = rng.normal(size=8)
    z = (x - np.asarray(model.mean)) / np.asarray(model.scale)
    assert model.score(x)[0] == pytest.approx(mahalanobis(z, np.zeros(8), np.asarray(model.precision)))
    # an unknown statistic counts as typical: NaN scores like the training mean there
    with_nan = x.copy()
    with_nan[7] = np.nan
    at_mean = x.copy()
    at_mean[7] = model.mean[7]
    assert model.score(with_nan)[0] == pytest.approx(model.score(at_mean)[0])
    assert OodModel.from_dict(model.to_dict()) == model


def test_fit_ood_refuses_too_few_slides_and_wrong_columns():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match=">= 3 training"):
        fit_ood(_cloud(rng, 2), _cloud(rng, 5))
    with pytest.raises(ValueError, match="expected"):
        fit_ood(rng.normal(size=(10, 3)), rng.normal(size=(5, 3)))


def test_review_reasons():
    assert review_reasons(2.0, 3.0, "sharpness", None) == []
    assert review_reasons(4.0, 3.0, "sharpness", None) == ["out_of_distribution:sharpness"]
    assert review_reasons(None, None, None, "leukemia_without_blasts") == [
        "slide_cell_disagreement:leukemia_without_blasts"
    ]
    assert review_reasons(4.0, 3.0, "pixel_size", "normal_with_most_cells_blasts") == [
        "out_of_distribution:pixel_size",
        "slide_cell_disagreement:normal_with_most_cells_blasts",
    ]


def test_trust_file_is_refused_when_changed(tmp_path):
    sha = write_trust(str(tmp_path), {"temperature": 1.5})
    assert read_trust(str(tmp_path), sha, "model m")["temperature"] == 1.5
    (tmp_path / "trust.json").write_text('{"temperature": 1.0}')
    with pytest.raises(ArtifactError, match="corrupted or was replaced"):
        read_trust(str(tmp_path), sha, "model m")
