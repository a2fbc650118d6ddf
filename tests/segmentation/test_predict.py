"""Whole-slide U-Net inference: the fully convolutional rebuild and ``make_predict_fn`` (no Spark)."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.errors import ArtifactError
from allmtl_spark.networks.resunet import build_residual_unet, pad_to_multiple
from allmtl_spark.registry import save_artifact
from allmtl_spark.segmentation import predict as predict_module
from allmtl_spark.segmentation.predict import fully_convolutional, make_predict_fn

pytestmark = pytest.mark.unit

BUILDER = {"input_size": 32, "channels": 3, "depth": 2, "base_filters": 4, "batchnorm_momentum": 0.9}


@pytest.fixture
def tile_model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(3)
    model = build_residual_unet(**BUILDER)
    # Non-trivial batch-norm statistics, so inference mode is really tested.
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(np.random.default_rng(0).normal(0, 0.3, mean.shape))
            var.assign(np.random.default_rng(1).uniform(0.5, 2.0, var.shape))
    return model


@pytest.fixture(autouse=True)
def _fresh_cache():
    predict_module.clear_cache()
    yield
    predict_module.clear_cache()


def test_fully_convolutional_model_matches_the_tile_model(tile_model):
    whole = fully_convolutional(tile_model, {"builder": BUILDER})
    assert whole.input_shape == (None, None, None, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(whole(x, training=False).numpy(), tile_model(x, training=False).numpy(), atol=1e-5)
    big = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    out = whole(big, training=False).numpy()
    assert out.shape == (1, 64, 96, 1)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_builder_accepts_input_size_none_and_still_rejects_nonsense():
    model = build_residual_unet(input_size=None, depth=3, base_filters=2)
    assert model.input_shape == (None, None, None, 3) and model.output_shape == (None, None, None, 1)
    with pytest.raises(ValueError, match="input_size"):
        build_residual_unet(input_size=36, depth=3)


def test_pad_to_multiple_pads_bottom_right_and_reports_the_size():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    padded, (h, w) = pad_to_multiple(image, 4)
    assert padded.shape == (8, 8, 3) and (h, w) == (5, 7)
    assert np.array_equal(padded[:5, :7], image) and np.array_equal(padded[7, 7], image[4, 6])
    same, _ = pad_to_multiple(np.zeros((8, 8)), 4)
    assert same.shape == (8, 8)


def test_make_predict_fn_loads_once_and_predicts_any_size(tile_model, tmp_path):
    sha = save_artifact(tile_model, str(tmp_path / "seg"), {"builder": BUILDER, "pixel_size_um": 0.31})
    model_file = str(tmp_path / "seg" / "model.h5")
    predict = make_predict_fn(model_file, sha, spec_sha256=None)
    assert make_predict_fn(model_file, sha, spec_sha256=None) is predict  # cached: the second call loads nothing
    assert predict_module.model_loads() == 1

    image = np.random.default_rng(2).integers(0, 255, (21, 30, 3), dtype=np.uint8)  # not a multiple of 4
    probability = predict(image)
    assert probability.shape == (21, 30) and probability.dtype == np.float32
    assert probability.min() >= 0.0 and probability.max() <= 1.0
    whole = fully_convolutional(tile_model, {"builder": BUILDER})
    padded, _ = pad_to_multiple(image, 4)
    expected = whole(padded[None].astype(np.float32), training=False).numpy()[0, :21, :30, 0]
    np.testing.assert_allclose(probability, expected, atol=1e-5)  # the saved model, rebuilt, is the same net
    assert predict_module.model_loads() == 1


def test_make_predict_fn_refuses_a_replaced_artifact(tile_model, tmp_path):
    sha = save_artifact(tile_model, str(tmp_path / "seg"), {"builder": BUILDER})
    with pytest.raises(ArtifactError, match="SHA-256"):
        make_predict_fn(str(tmp_path / "seg" / "model.h5"), "0" * 64, spec_sha256=None)
    with pytest.raises(ArtifactError, match="missing"):
        make_predict_fn(str(tmp_path / "nope" / "model.h5"), sha, spec_sha256=None)
    assert predict_module.model_loads() == 0


def _swap_spec(folder, **changes) -> str:
    """Rewrite ``folder/model.json`` with ``changes``; returns the SHA-256 of the original bytes."""
    import hashlib
    import json

    path = folder / "model.json"
    original = path.read_bytes()
    path.write_text(json.dumps({**json.loads(original), **changes}))
    return hashlib.sha256(original).hexdigest()


def test_make_predict_fn_refuses_a_model_json_other_than_the_recorded_one(tile_model, tmp_path):
    """The builder keywords and white balance come from model.json: a swapped one is refused, never parsed."""
    folder = tmp_path / "seg"
    sha = save_artifact(tile_model, str(folder), {"builder": BUILDER, "input_normalize": "grey_world"})
    model_file = str(folder / "model.h5")
    spec_sha = _swap_spec(folder, input_normalize="none")
    with pytest.raises(ArtifactError, match="model.json.*SHA-256"):
        make_predict_fn(model_file, sha, spec_sha256=spec_sha)
    (folder / "model.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        make_predict_fn(model_file, sha, spec_sha256=spec_sha)
    assert predict_module.model_loads() == 0
    save_artifact(tile_model, str(folder), {"builder": BUILDER, "input_normalize": "grey_world"})
    assert make_predict_fn(model_file, sha, spec_sha256=spec_sha)(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8)


def test_the_segment_jobs_workers_refuse_a_model_json_swapped_after_the_drivers_check(tile_model, tmp_path):
    """make_segment_fn (the mapInPandas function) hands the recorded hash to the worker-side load."""
    import cv2
    import pandas as pd

    from allmtl_spark.config.schema import RoiConfig, SegmentConfig
    from allmtl_spark.segmentation.job import make_segment_fn

    folder = tmp_path / "seg"
    sha = save_artifact(tile_model, str(folder), {"builder": BUILDER, "input_normalize": "grey_world"})
    spec_sha = _swap_spec(folder, input_normalize="none")  # after the driver read and checked it
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 190, np.uint8))
    batch = pd.DataFrame(
        [
            {
                "content_sha256": "0" * 64,
                "slide_id": "s1",
                "source_path": "/x/s1.jpg",
                "width": 64,
                "height": 48,
                "content": jpeg.tobytes(),
                "truth_mask": None,
                "blast_xy": None,
                "pixel_size_um": 0.31,
                "pixel_size_source": "given",
            }
        ]
    )
    cfg = SegmentConfig(segmenter="seg", mask_source="unet", crop_size_um=20.15)
    segment = make_segment_fn(RoiConfig(), cfg, 0.31, str(folder / "model.h5"), sha, spec_sha256=spec_sha)
    with pytest.raises(ArtifactError, match="model.json"):
        list(segment(iter([batch])))
    assert predict_module.model_loads() == 0


def test_freeze_after_load_takes_the_loaded_model_out_of_the_collectors_sight(tile_model, tmp_path):
    """Spark's reused workers run gc.collect() after every task: a frozen model is not walked again."""
    import gc

    sha = save_artifact(tile_model, str(tmp_path / "seg"), {"builder": BUILDER})
    model_file = str(tmp_path / "seg" / "model.h5")
    gc.unfreeze()
    try:
        make_predict_fn(model_file, sha, spec_sha256=None)
        assert gc.get_freeze_count() == 0  # the default (drivers, notebooks): nothing frozen

        predict_module.clear_cache()
        make_predict_fn(model_file, sha, freeze_after_load=True, spec_sha256=None)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # TensorFlow, Keras and the model's own objects
        alive_since = [[i] for i in range(1000)]  # a second freeze would take these too
        make_predict_fn(model_file, sha, freeze_after_load=True, spec_sha256=None)  # cached: loads and freezes nothing
        # frozen objects that die leave the count (so <=, not ==); a second freeze would add >= 1000
        assert gc.get_freeze_count() <= frozen and predict_module.model_loads() == 1
        del alive_since
    finally:
        gc.unfreeze()  # the test process goes on creating and dropping models
