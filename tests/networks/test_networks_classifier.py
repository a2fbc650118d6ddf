import numpy as np
import pytest
import tensorflow as tf

from allmtl_spark.networks import classifier
from allmtl_spark.networks.classifier import backbone_of, build_classifier, replace_head

pytestmark = pytest.mark.unit

SIZE = 75  # the smallest input all three backbones accept


def _images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _predict(model, images):
    # An eager call: model.predict traces a graph of ~800 layers, seconds per call on 2 busy cores.
    return model(images, training=False).numpy()


def _backbone_weights(model):
    return backbone_of(model).get_weights()


def _assert_same_arrays(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        np.testing.assert_array_equal(a, b)


def test_imagenet_urls_are_keras_own():
    from keras.src.applications import inception_resnet_v2, inception_v3, xception

    assert classifier.imagenet_weights_url("InceptionV3") == inception_v3.WEIGHTS_PATH_NO_TOP
    assert classifier.imagenet_weights_url("Xception") == xception.TF_WEIGHTS_PATH_NO_TOP
    assert classifier.imagenet_weights_url("InceptionResNetV2") == (
        inception_resnet_v2.BASE_WEIGHT_URL + "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert classifier.imagenet_weights_url("Xception", "https://mirror.example/k/") == (
        "https://mirror.example/k/xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_size": 74}, "input_size"),
        ({"backbone": "ResNet50"}, "backbone"),
        ({"head": "mlp"}, "head"),
        ({"num_outputs": 0}, "num_outputs"),
        ({"head": "dense", "dense_units": ()}, "dense_units"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_build_classifier_rejects_nonsense_before_building(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_classifier(**{"input_size": SIZE, **kwargs})


def test_preprocessing_inside_the_model_matches_keras_preprocess_input(classifiers):
    model = classifiers("InceptionV3")
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    scaled = model.get_layer(classifier.PREPROCESS_LAYER)(pixels).numpy()
    np.testing.assert_allclose(scaled, tf.keras.applications.inception_v3.preprocess_input(pixels.copy()), atol=1e-6)
    np.testing.assert_allclose(scaled.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["InceptionV3", "Xception", "InceptionResNetV2"])
def test_each_backbone_builds_at_75_px_and_trains_one_step(classifiers, backbone):
    model = classifiers(backbone)
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 1)
    assert model.get_layer(classifier.HEAD_OUTPUT_LAYER).activation.__name__ == "sigmoid"
    first_conv = next(la for la in backbone_of(model).layers if isinstance(la, tf.keras.layers.Conv2D))
    kernel_before = first_conv.kernel.numpy().copy()
    head_before = model.get_layer(classifier.HEAD_OUTPUT_LAYER).kernel.numpy().copy()
    # Eager: tracing the train step of InceptionResNetV2 takes over a minute on 2 cores and tests keras, not us.
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(_images(), np.array([[0.0], [1.0]], np.float32))
    assert np.isfinite(loss)
    assert not np.array_equal(first_conv.kernel.numpy(), kernel_before)  # the backbone trains (no freezing here)
    assert not np.array_equal(model.get_layer(classifier.HEAD_OUTPUT_LAYER).kernel.numpy(), head_before)
    probabilities = _predict(model, _images())
    assert probabilities.shape == (2, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_dense_head_softmax_layers_and_outputs(classifiers):
    model = classifiers("InceptionV3", head="dense", num_outputs=4)
    names = [la.name for la in model.layers if la.name.startswith(classifier.HEAD_PREFIX)]
    assert names == ["head_dense_1", "head_dropout_1", "head_dense_2", "head_dropout_2", "head_out"]
    assert [model.get_layer(n).units for n in ("head_dense_1", "head_dense_2", "head_out")] == [256, 128, 4]
    out = _predict(model, _images())
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_backbone_of_shares_the_classifier_layers(classifiers):
    model = classifiers("InceptionV3")
    backbone = backbone_of(model)
    assert backbone.output_shape == (None, 1, 1, 2048)
    assert all(model.get_layer(la.name) is la for la in backbone.layers)
    assert not any(la.name.startswith(classifier.HEAD_PREFIX) for la in backbone.layers)


def test_replace_head_keeps_backbone_weights_and_builds_a_new_head(classifiers):
    old = classifiers("InceptionV3")
    before = _backbone_weights(old)
    new = replace_head(old, num_outputs=4, head="dense", dense_units=(32,), dropout=0.3)
    assert new.output_shape == (None, 4)
    assert new.get_layer("head_out") is not old.get_layer("head_out")
    assert [la.name for la in new.layers if la.name.startswith("head_")] == [
        "head_dense_1",
        "head_dropout_1",
        "head_out",
    ]
    _assert_same_arrays(_backbone_weights(new), before)
    conv = next(la for la in backbone_of(old).layers if la.weights)
    assert new.get_layer(conv.name) is conv  # the same layer objects, not copies
    np.testing.assert_allclose(_predict(backbone_of(new), _images()), _predict(backbone_of(old), _images()))


def test_weights_from_a_local_file_round_trip(classifiers, tmp_path):
    model = classifiers("InceptionV3")
    path = tmp_path / "stage2.h5"
    model.save_weights(str(path))
    rebuilt = build_classifier("InceptionV3", input_size=SIZE, weights=str(path))
    np.testing.assert_allclose(_predict(rebuilt, _images()), _predict(model, _images()), atol=1e-6)

    # Stage 3: the stage-2 backbone under a new 4-class dense head (load_head=False).
    stage3 = build_classifier(
        "InceptionV3", input_size=SIZE, num_outputs=4, head="dense", weights=path, load_head=False
    )
    _assert_same_arrays(_backbone_weights(stage3), _backbone_weights(model))
    with pytest.raises(ValueError, match=r"stage2\.h5.*expected shapes \[\(2048, 256\), \(256,\)\]"):
        build_classifier("InceptionV3", input_size=SIZE, num_outputs=4, head="dense", weights=path)


def test_backbone_only_file_and_the_imagenet_download_path(classifiers, tmp_path, monkeypatch):
    source = classifiers("InceptionV3")
    notop = tmp_path / classifier.imagenet_weights_file("InceptionV3")
    backbone_of(source).save_weights(str(notop))  # the layout of keras' notop ImageNet files
    calls = []

    def fake_get_file(fname, origin, cache_subdir, file_hash, cache_dir):
        calls.append((fname, origin, cache_subdir, file_hash, cache_dir))
        return str(notop)

    monkeypatch.setattr(tf.keras.utils, "get_file", fake_get_file)
    model = build_classifier(
        "InceptionV3",
        input_size=SIZE,
        weights="imagenet",
        imagenet_base_url="https://mirror.example/ka",
        cache_dir="/c",
    )
    assert calls == [
        (
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://mirror.example/ka/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "models",
            "bcbd6486424b2319ff4ef7d526e38f63",
            "/c",
        )
    ]
    _assert_same_arrays(_backbone_weights(model), _backbone_weights(source))


def test_missing_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "w2.h5"
    with pytest.raises(FileNotFoundError, match="w2.h5"):
        build_classifier("InceptionV3", input_size=SIZE, weights=str(missing))


def test_weights_of_another_backbone_are_rejected_with_file_and_shapes(classifiers, tmp_path):
    path = tmp_path / "xception_stage2.h5"
    classifiers("Xception").save_weights(str(path))
    with pytest.raises(ValueError) as info:
        build_classifier("InceptionV3", input_size=SIZE, weights=str(path))
    message = str(info.value)
    assert "xception_stage2.h5" in message and "InceptionV3" in message
    # Both start with a 3x3x3x32 conv; then InceptionV3's BatchNormalization has no scale (3 weights)
    # where Xception's has 4: the first difference, reported as expected vs found shapes.
    assert "expected shapes [(32,), (32,), (32,)]" in message and "found [(32,), (32,), (32,), (32,)]" in message


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_weights_from_a_full_saved_model_file(classifiers, tmp_path):
    model = classifiers("InceptionV3")
    path = tmp_path / "full_model.h5"
    model.save(str(path))  # weights under "model_weights", next to the architecture
    rebuilt = build_classifier("InceptionV3", input_size=SIZE, weights=path)
    np.testing.assert_allclose(_predict(rebuilt, _images()), _predict(model, _images()), atol=1e-6)


def test_new_keras_format_file_names_are_refused(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.weights\.h5"):
        build_classifier("InceptionV3", input_size=SIZE, weights=str(path))
