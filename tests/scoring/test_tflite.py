"""The TFLite conversion of classifiers: cached once per version, checked against Keras, refused when stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from allmtl_spark.errors import ArtifactError
from allmtl_spark.scoring import tflite
from allmtl_spark.scoring.predict import make_classifier_fn

pytestmark = pytest.mark.unit


def _save_small_classifier(folder, outputs: int) -> tuple[str, str]:
    """A small real Keras CNN (softmax over ``outputs`` classes, or one sigmoid) saved as model.h5."""
    import tensorflow as tf

    from allmtl_spark.registry import save_artifact

    tf.keras.utils.set_random_seed(outputs)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((32, 32, 3)),
            tf.keras.layers.Rescaling(1 / 255.0),
            tf.keras.layers.Conv2D(8, 3, activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else "sigmoid"),
        ]
    )
    sha = save_artifact(model, str(folder), {})
    return os.path.join(str(folder), "model.h5"), sha


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite4")
    model_file, sha = _save_small_classifier(folder, 4)
    return model_file, sha, tflite.tflite_artifact(model_file, sha)


def test_conversion_is_cached_beside_the_artifact_named_by_its_hash(converted):
    model_file, sha, (path, tflite_sha) = converted
    folder = os.path.dirname(model_file)
    spec = json.loads(Path(folder, tflite.CONVERSION_SPEC).read_text())
    assert spec["source_sha256"] == sha and spec["sha256"] == tflite_sha
    assert os.path.basename(path) == f"model-{tflite_sha[:12]}.tflite" == spec["file"]
    assert spec["max_probe_difference"] <= tflite.PARITY_TOLERANCE
    assert not [name for name in os.listdir(folder) if ".tmp" in name]


def test_second_call_reuses_the_cached_file_without_converting(converted, monkeypatch):
    model_file, sha, first = converted

    def refuse(*_):
        raise AssertionError("converted again although a valid conversion is cached")

    monkeypatch.setattr(tflite, "convert_checked", refuse)
    assert tflite.tflite_artifact(model_file, sha) == first


@pytest.mark.parametrize("n", [0, 1, 5, 8, 11])
def test_tflite_and_keras_give_the_same_probabilities(converted, n):
    model_file, sha, (path, tflite_sha) = converted
    images = np.random.default_rng(n).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    keras = make_classifier_fn(model_file, sha, batch_size=8)(images)
    lite = make_classifier_fn(path, tflite_sha, batch_size=8)(images)
    assert lite.shape == keras.shape == (n, 4)
    np.testing.assert_allclose(lite, keras, atol=1e-4)
    if n:
        np.testing.assert_allclose(lite.sum(axis=1), 1.0, atol=1e-5)


def test_sigmoid_model_gives_two_columns(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 1)
    path, tflite_sha = tflite.tflite_artifact(model_file, sha)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    lite = make_classifier_fn(path, tflite_sha)(images)
    np.testing.assert_allclose(lite, make_classifier_fn(model_file, sha)(images), atol=1e-4)
    assert lite.shape == (3, 2)


def test_a_new_artifact_or_a_tampered_conversion_is_converted_again(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    path, tflite_sha = tflite.tflite_artifact(model_file, sha)
    assert tflite.cached_conversion(str(tmp_path), "0" * 64) is None  # a retrained model.h5
    with open(path, "r+b") as handle:  # bit rot in the cached conversion
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    assert tflite.cached_conversion(str(tmp_path), sha) is None
    again, again_sha = tflite.tflite_artifact(model_file, sha)
    assert again_sha == tflite.file_sha256(again)
    assert tflite.cached_conversion(str(tmp_path), sha) == (again, again_sha)


def test_worker_refuses_a_conversion_whose_hash_changed(converted, tmp_path):
    _, _, (path, tflite_sha) = converted
    copy = tmp_path / "model-copy.tflite"
    copy.write_bytes(Path(path).read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="SHA-256"):
        make_classifier_fn(str(copy), tflite_sha)


def test_disagreeing_conversion_is_refused_with_the_keras_fallback(tmp_path, monkeypatch):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    monkeypatch.setattr(tflite, "PARITY_TOLERANCE", -1.0)  # no difference, however small, passes
    with pytest.raises(ArtifactError, match="score.runtime=keras"):
        tflite.tflite_artifact(model_file, sha)
    assert tflite.cached_conversion(str(tmp_path), sha) is None


def test_corrupted_keras_artifact_is_refused_before_converting(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    with open(model_file, "ab") as handle:
        handle.write(b"junk")
    with pytest.raises(ArtifactError, match="SHA-256"):
        tflite.tflite_artifact(model_file, sha)
