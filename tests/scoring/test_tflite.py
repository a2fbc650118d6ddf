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


def _save_small_classifier(folder, outputs: int, pool_name: str | None = None) -> tuple[str, str]:
    """A small real Keras CNN (softmax over ``outputs`` classes, or one sigmoid) saved as ``folder/model/model.h5``.

    ``pool_name="pool"`` names its pooling layer as ``networks.classifier`` does (pooled features come along).

    Its conversions go to ``folder/cache`` (``_cache``), as a lakehouse's go to ``Lakehouse.cache``.
    """
    import tensorflow as tf

    from allmtl_spark.registry import save_artifact

    tf.keras.utils.set_random_seed(outputs)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((32, 32, 3)),
            tf.keras.layers.Rescaling(1 / 255.0),
            tf.keras.layers.Conv2D(8, 3, activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.GlobalAveragePooling2D(name=pool_name),
            tf.keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else "sigmoid"),
        ]
    )
    sha = save_artifact(model, os.path.join(str(folder), "model"), {})
    return os.path.join(str(folder), "model", "model.h5"), sha


def _cache(model_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(model_file)), "cache")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite4")
    model_file, sha = _save_small_classifier(folder, 4)
    return model_file, sha, tflite.tflite_artifact(model_file, sha, _cache(model_file))


def test_conversion_is_cached_under_the_artifact_hash_never_beside_the_artifact(converted):
    model_file, sha, (path, tflite_sha) = converted
    folder = tflite.conversion_folder(_cache(model_file), sha)
    assert os.path.dirname(path) == folder == os.path.join(_cache(model_file), "tflite", sha)
    assert sorted(os.listdir(os.path.dirname(model_file))) == [
        "model.h5",
        "model.json",
    ]  # the model's folder: untouched
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
    assert tflite.tflite_artifact(model_file, sha, _cache(model_file)) == first


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


def test_conversion_and_interpreters_print_no_native_notices(tmp_path):
    """TensorFlow Lite's C++ notices (converter summary, XNNPACK delegate) never reach a job's output.

    In a fresh process: the runtime announces XNNPACK once per process, which earlier tests here used up.
    """
    import subprocess
    import sys

    script = (
        "import numpy as np, sys\n"
        "from tests.scoring.test_tflite import _cache, _save_small_classifier\n"
        "from allmtl_spark.scoring import tflite\n"
        "from allmtl_spark.scoring.predict import make_classifier_fn\n"
        "model_file, sha = _save_small_classifier(sys.argv[1], 2)\n"
        "path, tflite_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))\n"
        "print(make_classifier_fn(path, tflite_sha, batch_size=8)(np.zeros((3, 32, 32, 3), np.uint8)).shape)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=repo, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0 and "(3, 2)" in done.stdout, done.stderr[-3000:]
    assert "non-converted ops" not in done.stderr and "arith.constant" not in done.stderr
    assert "XNNPACK" not in done.stderr


def test_pooled_features_come_out_of_both_runtimes(tmp_path):
    """A classifier with a ``pool`` layer: the conversion has a second output, its pooled features (feature OOD)."""
    import tensorflow as tf

    model_file, sha = _save_small_classifier(tmp_path, 4, pool_name="pool")
    path, tflite_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))
    images = np.random.default_rng(5).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    model = tf.keras.models.load_model(model_file, compile=False)
    pooled = tf.keras.Model(model.input, model.get_layer("pool").output)(images.astype(np.float32)).numpy()
    keras_p, keras_f = make_classifier_fn(model_file, sha, batch_size=2).with_features(images)
    lite_p, lite_f = make_classifier_fn(path, tflite_sha, batch_size=2).with_features(images)
    assert keras_f.shape == lite_f.shape == (5, 8)
    np.testing.assert_allclose(keras_f, pooled, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lite_f, pooled, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lite_p, keras_p, atol=1e-4)
    np.testing.assert_allclose(make_classifier_fn(path, tflite_sha)(images), lite_p)  # plain call: probabilities
    # one image (the slide path) and none
    one_p, one_f = make_classifier_fn(path, tflite_sha).with_features(images[:1])
    np.testing.assert_allclose(one_f, pooled[:1], rtol=1e-4, atol=1e-4)
    assert make_classifier_fn(path, tflite_sha).with_features(images[:0])[1].shape == (0, 8)
    # a model without the layer: no features
    plain_file, plain_sha = _save_small_classifier(tmp_path / "plain", 4)
    assert make_classifier_fn(plain_file, plain_sha).with_features(images)[1] is None


def test_sigmoid_model_gives_p_normal_then_p_positive(tmp_path):
    import tensorflow as tf

    model_file, sha = _save_small_classifier(tmp_path, 1)
    path, tflite_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    lite = make_classifier_fn(path, tflite_sha)(images)
    sigmoid = tf.keras.models.load_model(model_file, compile=False)(images.astype(np.float32)).numpy()[:, 0]
    assert lite.shape == (3, 2)
    np.testing.assert_allclose(lite[:, 1], sigmoid, atol=1e-4)
    np.testing.assert_allclose(lite[:, 0], 1 - sigmoid, atol=1e-4)


def test_a_retrained_artifact_is_converted_again(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    _, first_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))
    model_file, retrained = _save_small_classifier(tmp_path, 3)  # new weights under the same name
    assert (
        retrained != sha
        and tflite.cached_conversion(tflite.conversion_folder(_cache(model_file), retrained), retrained) is None
    )
    path, tflite_sha = tflite.tflite_artifact(model_file, retrained, _cache(model_file))
    assert tflite_sha != first_sha
    assert make_classifier_fn(path, tflite_sha)(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 3)


def test_a_conversion_by_another_tensorflow_is_stale(converted, tmp_path):
    model_file, sha, (path, _) = converted
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (os.path.basename(path), tflite.CONVERSION_SPEC):
        (folder / name).write_bytes(Path(os.path.dirname(path), name).read_bytes())
    assert tflite.cached_conversion(str(folder), sha) is not None
    spec = json.loads((folder / tflite.CONVERSION_SPEC).read_text())
    (folder / tflite.CONVERSION_SPEC).write_text(json.dumps({**spec, "tensorflow": "2.0.0"}))
    assert tflite.cached_conversion(str(folder), sha) is None


def test_unwritable_cache_falls_back_to_keras(tmp_path, monkeypatch, caplog):
    model_file, sha = _save_small_classifier(tmp_path, 4)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(tflite.os, "replace", refuse)  # what a read-only volume does to the rename
    with caplog.at_level("WARNING"):
        assert tflite.tflite_artifact(model_file, sha, _cache(model_file)) is None
    assert "scoring with the Keras artifact" in caplog.text
    assert sorted(os.listdir(os.path.dirname(model_file))) == ["model.h5", "model.json"]
    assert os.listdir(tflite.conversion_folder(_cache(model_file), sha)) == []  # no temporary file left behind


def test_a_tampered_conversion_is_converted_again(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    path, tflite_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))
    with open(path, "r+b") as handle:  # bit rot in the cached conversion
        handle.seek(100)
        byte = handle.read(1)[0]
        handle.seek(100)
        handle.write(bytes([byte ^ 0xFF]))
    assert tflite.cached_conversion(tflite.conversion_folder(_cache(model_file), sha), sha) is None
    again, again_sha = tflite.tflite_artifact(model_file, sha, _cache(model_file))
    assert again_sha == tflite.file_sha256(again)
    assert tflite.cached_conversion(tflite.conversion_folder(_cache(model_file), sha), sha) == (again, again_sha)


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
        tflite.tflite_artifact(model_file, sha, _cache(model_file))
    assert tflite.cached_conversion(tflite.conversion_folder(_cache(model_file), sha), sha) is None


def test_corrupted_keras_artifact_is_refused_before_converting(tmp_path):
    model_file, sha = _save_small_classifier(tmp_path, 4)
    with open(model_file, "ab") as handle:
        handle.write(b"junk")
    with pytest.raises(ArtifactError, match="SHA-256"):
        tflite.tflite_artifact(model_file, sha, _cache(model_file))


def test_a_cached_conversion_other_than_the_recorded_one_is_made_again(converted, tmp_path):
    model_file, sha, (path, tflite_sha) = converted
    again = tflite.tflite_artifact(model_file, sha, _cache(model_file), recorded=tflite_sha)
    assert again == (path, tflite_sha)  # the recorded one: used as cached
    # models recorded another conversion: the cached one is not used but made again
    remade = tflite.tflite_artifact(model_file, sha, _cache(model_file), recorded="f" * 64)
    assert remade[1] == tflite_sha and Path(remade[0]).is_file()  # made again from the checked h5
