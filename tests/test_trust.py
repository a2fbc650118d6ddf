"""The out-of-distribution checks: statistics, pooled features, Mahalanobis scores, validation thresholds, fusion,
reasons, the hashed file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from allmtl_spark.errors import ArtifactError
from allmtl_spark.trust import (
    FEATURES,
    MAX_COMPONENTS,
    OOD_FEATURES,
    FeatureOodModel,
    OodModel,
    fit_feature_ood,
    fit_fused,
    fit_ood,
    flagged_by_fused,
    fused_scores,
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


def _feature_classes(rng, n, d=64, shift=0.0):
    """Pooled-feature-like data: 3 classes, each a Gaussian around its own mean, correlated dimensions."""
    means = np.random.default_rng(99).normal(0, 3, (3, d))
    mixing = np.random.default_rng(98).normal(0, 1, (d, d)) / np.sqrt(d)
    labels = rng.integers(0, 3, n)
    return means[labels] + rng.normal(size=(n, d)) @ mixing + shift, labels


def test_feature_check_passes_the_asked_share_of_validation_and_flags_a_shifted_batch():
    rng = np.random.default_rng(4)
    train, labels = _feature_classes(rng, 300)
    val, _ = _feature_classes(rng, 60)
    held_out, _ = _feature_classes(rng, 400)
    model = fit_feature_ood(train, labels, val, pass_fraction=0.95)
    assert 0 < len(model.components) <= MAX_COMPONENTS and len(model.class_means) == 3
    assert np.mean(model.score(val) <= model.threshold) >= 0.95
    assert np.mean(model.score(val) <= model.threshold) < 1.0  # a validation quantile, not the max
    assert np.mean(model.score(held_out) > model.threshold) < 0.12
    shifted, _ = _feature_classes(rng, 400, shift=1.5)  # every feature moved: another stain, another focus
    assert np.median(model.score(shifted)) > np.median(model.score(held_out)) + 2.0
    assert np.mean(model.score(shifted) > model.threshold) > 0.9
    # the nearest class counts: a training class mean itself scores 0
    centre = np.asarray(model.mean) + np.asarray(model.class_means)[1] @ np.asarray(model.components)
    assert model.score(centre)[0] == pytest.approx(0.0, abs=1e-6)
    assert FeatureOodModel.from_dict(model.to_dict()) == model
    np.testing.assert_allclose(model.arrays().score(shifted), model.score(shifted))
    assert fit_feature_ood(train, labels, val, pass_fraction=1.0).threshold >= model.threshold


def test_feature_check_keeps_a_fixed_number_of_components():
    rng = np.random.default_rng(5)
    # one direction carries almost all the variance (as the demo's InceptionV3 features did): still 32 kept
    dominant = rng.normal(size=(200, 1)) @ rng.normal(size=(1, 50)) * 100 + rng.normal(size=(200, 50))
    assert len(fit_feature_ood(dominant, np.zeros(200, int), dominant[:20]).components) == MAX_COMPONENTS
    few = rng.normal(size=(10, 50))
    assert len(fit_feature_ood(few, np.zeros(10, int), few[:3]).components) == 9  # n - 1
    wide = rng.normal(size=(200, 300))
    assert len(fit_feature_ood(wide, np.zeros(200, int), wide[:20]).components) == MAX_COMPONENTS
    with pytest.raises(ValueError, match=">= 3 training"):
        fit_feature_ood(wide[:2], np.zeros(2, int), wide[:2])
    with pytest.raises(ValueError, match="expected"):
        fit_feature_ood(wide, np.zeros(199, int), wide[:5])


def test_a_feature_model_of_a_real_network_scores_a_restained_image_higher():
    """Pooled features of a small real CNN: views in another stain lie further from the training views."""
    import tensorflow as tf

    from allmtl_spark.scoring.predict import keras_predict

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((32, 32, 3)),
            tf.keras.layers.Rescaling(1 / 127.5, offset=-1),
            tf.keras.layers.Conv2D(16, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(name="pool"),
            tf.keras.layers.Dense(2, activation="softmax"),
        ]
    )
    predict = keras_predict(model, 16)
    rng = np.random.default_rng(6)

    def views(n, colour):
        return np.stack([cv2.resize(_cells_view(rng, colour=colour), (32, 32)) for _ in range(n)])

    train, val = views(80, (150, 60, 160)), views(30, (150, 60, 160))
    f_train, f_val = predict.with_features(train)[1], predict.with_features(val)[1]
    check = fit_feature_ood(f_train, np.arange(80) % 2, f_val)
    same = check.score(predict.with_features(views(30, (150, 60, 160)))[1])
    restained = check.score(predict.with_features(views(30, (60, 60, 200)))[1])
    assert np.median(restained) > 2 * np.median(same)
    assert np.mean(restained > check.threshold) > 0.9 and np.mean(same > check.threshold) < 0.2


def test_fused_threshold_keeps_the_union_of_both_checks_at_the_pass_fraction():
    rng = np.random.default_rng(7)
    inputs = fit_ood(_cloud(rng, 400), _cloud(rng, 200))
    train, labels = _feature_classes(rng, 400)
    val_f, _ = _feature_classes(rng, 200)
    val_x = _cloud(rng, 200)
    features = fit_feature_ood(train, labels, val_f)
    either = (inputs.score(val_x) > inputs.threshold) | (features.score(val_f) > features.threshold)
    assert either.mean() > 0.07  # two independent checks at 95 % each: the union flags ~10 %
    fused = fit_fused(inputs, val_x, features, val_f)
    scores, names = fused_scores(inputs, val_x, features, val_f)
    assert 0.94 <= np.mean(scores <= fused.threshold) < 1.0
    assert fused.threshold > 1.0  # above each check's own threshold (scores are ratios to them)
    # the reason names the check that is furthest beyond its own threshold
    shifted = val_f + 3.0
    _, shifted_names = fused_scores(inputs, val_x, features, shifted)
    assert shifted_names.count(FEATURES) > 190
    assert set(names) <= {*OOD_FEATURES, FEATURES}
    # (scores are ratios to each check's threshold: distance, range, features)
    only_inputs, _ = fused_scores(inputs, val_x, None, None)
    distance, beyond = inputs.score(val_x) / inputs.threshold, inputs.range_score(val_x) / inputs.range_threshold
    np.testing.assert_allclose(only_inputs, np.maximum(distance, beyond))


def _uniform_statistic(rng, n, low=-1.0, high=1.0):
    """Seven correlated Gaussian statistics and one spread evenly over a range (as the demo's log pixel size)."""
    x = _cloud(rng, n)
    x[:, 7] = rng.uniform(low, high, n)
    return x


def test_range_check_flags_one_statistic_beyond_the_training_range_that_the_distance_dilutes():
    rng = np.random.default_rng(11)
    train, val, held_out = _uniform_statistic(rng, 200), _uniform_statistic(rng, 60), _uniform_statistic(rng, 400)
    model = fit_ood(train, val, pass_fraction=0.95, range_margin=1.0)
    beyond = _uniform_statistic(rng, 400, low=1.6, high=2.2)  # 1.6-2.2x the training's largest, nothing else moved
    # the Mahalanobis distance alone lets many of them through ...
    assert np.mean(model.score(beyond) > model.threshold) < 0.7
    # ... the range check alone flags nearly all of them, and names the statistic
    assert np.mean(model.range_score(beyond) > model.range_threshold) > 0.95
    assert model.range_furthest(beyond).count(OOD_FEATURES[7]) > 380
    # in distribution, the range check is quiet: inside the training range is 0
    assert np.mean(model.range_score(held_out) > model.range_threshold) < 0.03
    assert model.range_threshold >= 1.0  # the margin is the floor of its threshold
    # fused without a feature check: one threshold for distance and range, still the validation pass fraction
    fused = fit_fused(model, val)
    scores, names = fused_scores(model, val, None, None)
    assert np.mean(scores <= fused.threshold) >= 0.95
    out_scores, out_names = fused_scores(model, beyond, None, None)
    assert np.mean(out_scores > fused.threshold) > 0.95
    # the flag decision is the score against the fused threshold, as scoring's review reasons make it
    np.testing.assert_array_equal(flagged_by_fused(fused, model, beyond), out_scores > fused.threshold)
    assert flagged_by_fused(fused, model, val).mean() <= 0.05
    assert out_names.count(OOD_FEATURES[7]) > 380
    # stored and read back with its range
    again = OodModel.from_dict(model.to_dict())
    np.testing.assert_allclose(again.range_score(beyond), model.range_score(beyond))


def test_a_model_fitted_before_the_range_check_scores_by_distance_only():
    rng = np.random.default_rng(12)
    model = fit_ood(_cloud(rng, 100), _cloud(rng, 20))
    old = {k: v for k, v in model.to_dict().items() if k not in ("low", "high", "range_threshold")}
    legacy = OodModel.from_dict(old)
    assert not legacy.has_range and model.has_range
    x = _cloud(rng, 10, shift=5.0)
    scores, _ = fused_scores(legacy, x, None, None)
    np.testing.assert_allclose(scores, legacy.score(x) / legacy.threshold)
    with pytest.raises(ValueError, match="range_margin"):
        fit_ood(_cloud(rng, 10), _cloud(rng, 5), range_margin=-1.0)
