"""Segmenter training helpers (pure) and a short real training run (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from allmtl_spark.config.schema import SegmenterConfig
from allmtl_spark.segmentation import train
from tests.segmentation.conftest import make_slide


@pytest.mark.unit
def test_split_is_seeded_disjoint_and_order_free():
    keys = [f"k{i:02d}" for i in range(20)]
    tr, ho = train.split_slides(keys, 0.25, seed=1)
    assert len(ho) == 5 and len(tr) == 15 and not set(tr) & set(ho) and set(tr) | set(ho) == set(keys)
    assert train.split_slides(list(reversed(keys)), 0.25, seed=1) == (tr, ho)
    assert train.split_slides(keys, 0.25, seed=2) != (tr, ho)
    assert train.split_slides(["a", "b"], 0.9, seed=0)[0]  # always one left to train on
    with pytest.raises(ValueError):
        train.split_slides(["a"], 0.5, seed=0)


@pytest.mark.unit
def test_label_source_resolution():
    assert train.choose_label_source("auto", [True, True]) == "truth"
    assert train.choose_label_source("auto", [True, False]) == "mixed"
    assert train.choose_label_source("auto", [False, False]) == "roi"
    assert train.choose_label_source("roi", [True, True]) == "roi"
    with pytest.raises(ValueError, match="no slide has a ground-truth mask"):
        train.choose_label_source("truth", [False])


@pytest.mark.unit
def test_tiles_follow_the_foreground_fraction_and_keep_image_and_label_aligned():
    image, truth = make_slide()
    label = (truth > 0).astype(np.uint8)
    rng = np.random.default_rng(0)
    x, y = train.sample_tiles([image], [label], 40, 64, foreground_fraction=1.0, augment=True, rng=rng)
    assert x.shape == (40, 64, 64, 3) and y.shape == (40, 64, 64, 1) and x.dtype == np.float32
    assert (y.reshape(40, -1).max(axis=1) == 1).all()  # every tile holds a cell
    purple = (x[..., 2] - x[..., 0]) > 40  # the cells are the only blue-above-red pixels
    assert (purple == (y[..., 0] > 0)).mean() > 0.98  # flips/rotations applied to both alike
    _, y_any = train.sample_tiles([image], [label], 200, 64, foreground_fraction=0.0, augment=False, rng=rng)
    assert 0.1 < (y_any.reshape(200, -1).max(axis=1) == 1).mean() < 0.9


@pytest.mark.unit
def test_scale_augmentation_cuts_tiles_at_other_magnifications_with_image_and_label_aligned():
    import cv2

    image = np.full((256, 256, 3), (230, 200, 210), np.uint8)
    label = np.zeros((256, 256), np.uint8)
    cv2.circle(image, (128, 128), 12, (120, 60, 200), -1)
    cv2.circle(label, (128, 128), 12, 1, -1)
    disc = int(label.sum())

    def areas(scale_range):
        x, y = train.sample_tiles(
            [image], [label], 60, 64, 1.0, augment=True, rng=np.random.default_rng(0), scale_range=scale_range
        )
        purple = (x[..., 2] - x[..., 0]) > 40
        assert (purple == (y[..., 0] > 0)).mean() > 0.97  # resized alike
        return y.reshape(60, -1).sum(axis=1)

    assert np.median(areas(None)) == disc
    assert np.median(areas((0.5, 0.5))) == pytest.approx(disc / 4, rel=0.15)  # the whole cell, half as wide
    assert np.median(areas((1.5, 1.5))) == pytest.approx(disc * 2.25, rel=0.15)
    varied = areas((0.5, 2.0))
    assert varied.min() < disc / 2 and varied.max() > disc * 2


@pytest.mark.unit
def test_prepare_slide_labels_with_truth_or_roi_at_the_working_pixel_size():
    from allmtl_spark.config.schema import RoiConfig
    from allmtl_spark.segmentation.pipeline import encode_png
    from allmtl_spark.transforms.scale import PixelSize

    image, truth = make_slide()
    content, mask = encode_png(image), encode_png(truth)
    given = PixelSize(0.155, "given")
    by_truth = train.prepare_slide("s", "h", content, mask, given, 0.31, RoiConfig(), use_truth=True, keep_truth=True)
    assert by_truth.image.shape == (120, 160, 3) and by_truth.label_kind == "truth"
    assert by_truth.truth.shape == (120, 160) and by_truth.pixel_size_source == "given"
    weak = train.prepare_slide("s", "h", content, None, given, 0.31, RoiConfig(), use_truth=True, keep_truth=False)
    assert weak.label_kind == "roi" and weak.truth is None
    coarse = train.prepare_slide("s", "h", content, mask, PixelSize(0.62, "given"), 0.31, RoiConfig(), True, False)
    assert coarse.image.shape == (480, 640, 3) and coarse.label.shape == (480, 640)  # a coarser slide grows
    agree = (weak.label == by_truth.label).mean()
    assert agree > 0.97  # the ROI finds these clean cells too


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_segments_a_held_out_slide():
    from allmtl_spark.config.schema import RoiConfig
    from allmtl_spark.segmentation.pipeline import compute_roi, to_working
    from allmtl_spark.segmentation.predict import fully_convolutional, whole_slide_predictor

    slides = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        cells = [(int(rng.integers(40, 280)), int(rng.integers(40, 200)), int(rng.integers(16, 26))) for _ in range(3)]
        image, truth = make_slide(cells=cells, seed=seed)
        small = to_working(image, 0.155, 0.31)
        label = (to_working(truth, 0.155, 0.31) > 127).astype(np.uint8)
        slides.append(
            train.LabelledSlide(
                f"s{seed}", f"h{seed}", small, label, "truth", compute_roi(small, RoiConfig()), label * np.uint8(255)
            )
        )
    cfg = SegmenterConfig(
        tile_size=64, tiles_per_slide=8, depth=2, base_filters=8, epochs=8, batch_size=8, learning_rate=0.003, seed=0
    )
    model, history = train.fit_unet(slides[:3], cfg, verbose=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    whole = fully_convolutional(model, {"builder": train.builder_kwargs(cfg)})
    scores = train.evaluate_holdout(whole_slide_predictor(whole, cfg.input_normalize), slides[3:])
    assert scores["dice"] > 0.8  # a slide it never saw, whole, in inference mode (batch norm recalibrated)
