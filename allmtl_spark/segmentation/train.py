"""``allmtl train-segmenter``: train the Residual U-Net on slides from the lakehouse, hold some out, register it.

The driver streams up to ``max_slides`` slides out of ``slides`` (``toLocalIterator``: one slide in
memory at a time, resampled from its own pixel size to the working pixel size and kept only there),
labels each with its ground-truth mask or, without one, the threshold ROI (weak labels), splits them
by slide, and fits on random tiles of the training slides. The held-out slides are then segmented
whole at the working pixel size and scored against the truth next to the threshold method. The model
is saved with ``registry.save_artifact`` and registered in ``models``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from allmtl_spark import units
from allmtl_spark.config.schema import RoiConfig, SegmenterConfig
from allmtl_spark.ids import check_run_id
from allmtl_spark.segmentation.pipeline import (
    compute_overlap_scores,
    compute_roi,
    decode_mask,
    decode_rgb,
    to_working,
    unet_input,
)
from allmtl_spark.transforms.resample import mask_by
from allmtl_spark.transforms.scale import PixelSize, PixelSizePolicy

log = logging.getLogger(__name__)

CLASS_NAMES = ["background", "white_cell"]


@dataclass(frozen=True)
class LabelledSlide:
    """One slide ready for training or evaluation.

    Attributes:
        slide_id: the slide's id.
        content_sha256: its key in ``slides``.
        image: HxWx3 uint8 RGB at the working pixel size.
        label: HxW uint8 0/1 at the working pixel size (truth, or the ROI for weak labels).
        label_kind: ``truth`` or ``roi``.
        roi: HxW uint8 0/255, the threshold ROI at the working pixel size.
        truth: HxW uint8 0/255 ground truth at the working pixel size (held-out slides only), or None.
        pixel_size_source: where the slide's pixel size came from (given, estimated, default).
    """

    slide_id: str
    content_sha256: str
    image: np.ndarray
    label: np.ndarray
    label_kind: str
    roi: np.ndarray
    truth: np.ndarray | None = None
    pixel_size_source: str = "given"


@dataclass
class SegmenterSummary:
    """What ``run_train_segmenter`` did; ``format()`` is the printed report."""

    model_id: str
    run_id: str
    artifact_path: str
    label_source: str
    label_counts: dict[str, int]
    train_slides: int
    holdout_slides: int
    metrics: dict[str, float] = field(default_factory=dict)
    evaluated_against: str = "truth"
    seconds: float = 0.0

    def format(self) -> str:
        m = self.metrics
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.label_counts.items()))
        lines = [
            f"segmenter {self.model_id} (run {self.run_id}) in {self.seconds:.0f} s",
            f"  labels: {self.label_source} ({labels})",
            f"  slides: {self.train_slides} train, {self.holdout_slides} held out",
            f"  held-out slides, at the working pixel size, against the {self.evaluated_against} masks:",
            f"    U-Net     Dice {m.get('dice', float('nan')):.4f}  IoU {m.get('iou', float('nan')):.4f}",
            f"    threshold Dice {m.get('roi_dice', float('nan')):.4f}  (roi method, same slides)",
            f"  artifact: {self.artifact_path}",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- pure helpers


def choose_label_source(requested: str, has_truth: list[bool]) -> str:
    """Resolve ``label_source``: ``truth`` (all slides have masks), ``roi``, or ``mixed`` (auto, some have).

    Raises:
        ValueError: ``truth`` was requested but no slide has a ground-truth mask.
    """
    if requested == "roi":
        return "roi"
    if requested == "truth":
        if not any(has_truth):
            raise ValueError("segmenter.label_source is truth but no slide has a ground-truth mask (truth_mask)")
        return "truth"
    if requested != "auto":
        raise ValueError(f"label_source must be auto, truth or roi, got {requested!r}")
    if all(has_truth):
        return "truth"
    return "mixed" if any(has_truth) else "roi"


def split_slides(keys: list[str], holdout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split slide keys into (train, held-out), seeded; at least one on each side.

    The split depends only on the set of keys and the seed, not on their order.
    """
    if len(keys) < 2:
        raise ValueError(f"need at least 2 slides to hold one out, got {len(keys)}")
    ordered = sorted(keys)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_hold = min(len(ordered) - 1, max(1, round(holdout_fraction * len(ordered))))
    holdout = sorted(ordered[i] for i in order[:n_hold])
    train = sorted(ordered[i] for i in order[n_hold:])
    return train, holdout


def sample_tiles(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    n: int,
    tile: int,
    foreground_fraction: float,
    augment: bool,
    rng: np.random.Generator,
    scale_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random ``tile x tile`` training tiles: a share centred on a foreground pixel, the rest anywhere.

    Args:
        images: HxWx3 uint8 RGB working-size slides (each at least ``tile`` on both sides).
        labels: matching HxW 0/1 masks.
        n: number of tiles.
        tile: side in pixels.
        foreground_fraction: share of tiles centred (with jitter) on a random label pixel.
        augment: random horizontal/vertical flips, 90-degree rotations and per-channel gains in
            0.92..1.08 (the colour differences white balance leaves).
        rng: the generator.
        scale_range: ``(low, high)``: each tile is cut at a magnification drawn log-uniformly from it
            (a window of ``tile / s`` pixels resized to ``tile``: ``s > 1`` zooms in, ``s < 1`` out), so
            the U-Net sees cells larger and smaller than at the working pixel size; None: no rescaling.

    Returns:
        ``(x, y)``: float32 ``(n, tile, tile, 3)`` RGB 0..255 and float32 ``(n, tile, tile, 1)`` 0/1.
    """
    x = np.empty((n, tile, tile, 3), np.float32)
    y = np.empty((n, tile, tile, 1), np.float32)
    for i in range(n):
        k = int(rng.integers(len(images)))
        image, label = images[k], labels[k]
        h, w = label.shape
        side = tile
        if scale_range is not None:
            zoom = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
            side = int(np.clip(round(tile / zoom), 8, min(h, w)))
        ys, xs = np.nonzero(label) if rng.random() < foreground_fraction else ((), ())
        if len(ys):
            j = int(rng.integers(len(ys)))
            jitter = rng.integers(-side // 4, side // 4 + 1, size=2)
            cy, cx = int(ys[j] + jitter[0]), int(xs[j] + jitter[1])
            top, left = int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side))
        else:
            top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        tx, ty = image[top : top + side, left : left + side], label[top : top + side, left : left + side]
        if side != tile:
            shrink = cv2.INTER_AREA if side > tile else cv2.INTER_LINEAR
            tx = cv2.resize(np.ascontiguousarray(tx), (tile, tile), interpolation=shrink)
            ty = cv2.resize(np.ascontiguousarray(ty), (tile, tile), interpolation=cv2.INTER_NEAREST)
        if augment:
            turns = int(rng.integers(4))
            tx, ty = np.rot90(tx, turns), np.rot90(ty, turns)
            if rng.random() < 0.5:
                tx, ty = tx[:, ::-1], ty[:, ::-1]
            tx = np.clip(tx * rng.uniform(0.92, 1.08, 3), 0, 255)
        x[i] = tx
        y[i, ..., 0] = ty
    return x, y


def pad_to_tile(image: np.ndarray, label: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad a slide and its label at the bottom/right so both sides are at least ``tile``."""
    import cv2

    h, w = label.shape
    dy, dx = max(0, tile - h), max(0, tile - w)
    if not dy and not dx:
        return image, label
    return (
        cv2.copyMakeBorder(image, 0, dy, 0, dx, cv2.BORDER_REFLECT_101),
        cv2.copyMakeBorder(label, 0, dy, 0, dx, cv2.BORDER_REFLECT_101),
    )


def prepare_slide(
    slide_id: str,
    sha: str,
    content: bytes,
    truth: bytes | None,
    pixel: PixelSize | Callable[[np.ndarray], PixelSize],
    working_pixel_size_um: float,
    roi_cfg: RoiConfig,
    use_truth: bool,
    keep_truth: bool,
) -> LabelledSlide:
    """Decode, resample to the working pixel size and label one slide (ground truth when ``use_truth`` and
    present, else the ROI).

    Args:
        pixel: the slide's pixel size, or a function of the decoded image that finds it.
        working_pixel_size_um: the U-Net's micrometres per pixel.
        keep_truth: keep the working-size truth mask (held-out slides are scored against it).
    """
    image = decode_rgb(content)
    if callable(pixel):
        pixel = pixel(image)
    factor = units.resample_factor(pixel.pixel_size_um, working_pixel_size_um)
    small = to_working(image, pixel.pixel_size_um, working_pixel_size_um)
    roi = compute_roi(small, roi_cfg)
    truth_mask = decode_mask(truth) if truth is not None else None
    if truth_mask is not None and truth_mask.shape != image.shape[:2]:
        log.warning(
            "slide %s: truth mask %s does not match the image %s; ignored", slide_id, truth_mask.shape, image.shape[:2]
        )
        truth_mask = None
    truth_small = mask_by(truth_mask, factor) if truth_mask is not None else None
    if truth_small is not None and truth_small.shape != small.shape[:2]:
        truth_small = cv2.resize(truth_small, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    if use_truth and truth_small is not None:
        label, kind = (truth_small > 0).astype(np.uint8), "truth"
    else:
        label, kind = (roi > 0).astype(np.uint8), "roi"
    return LabelledSlide(slide_id, sha, small, label, kind, roi, truth_small if keep_truth else None, pixel.source)


# ----------------------------------------------------------------------------- training (TensorFlow)


def builder_kwargs(cfg: SegmenterConfig) -> dict:
    """Keywords of ``build_residual_unet`` for this config (saved in model.json to rebuild the model)."""
    return {
        "input_size": cfg.tile_size,
        "channels": 3,
        "depth": cfg.depth,
        "base_filters": cfg.base_filters,
        "upsampling": cfg.upsampling,
        "batchnorm_momentum": cfg.batchnorm_momentum,
    }


def fit_unet(train: list[LabelledSlide], cfg: SegmenterConfig, verbose: int = 2):
    """Build and fit the U-Net on random tiles of ``train``; returns ``(model, history dict)``.

    The slides are white-balanced first (``cfg.input_normalize``, as ``predict`` does). One epoch is
    ``tiles_per_slide * len(train)`` fresh random tiles in batches of ``batch_size``; Keras prints one
    line per epoch with ``verbose=2``. Afterwards the batch-norm statistics are recomputed on the whole
    training slides (:func:`recalibrate_batchnorm`).
    """
    import tensorflow as tf

    from allmtl_spark.networks.losses import dice_bce_loss, dice_coefficient
    from allmtl_spark.networks.resunet import build_residual_unet

    tf.keras.utils.set_random_seed(cfg.seed)
    padded = [pad_to_tile(unet_input(s.image, cfg.input_normalize), s.label, cfg.tile_size) for s in train]
    images, labels = [p[0] for p in padded], [p[1] for p in padded]
    per_epoch = cfg.tiles_per_slide * len(train)
    steps = max(1, math.ceil(per_epoch / cfg.batch_size))
    rng = np.random.default_rng(cfg.seed)

    class Tiles(tf.keras.utils.Sequence):
        """Fresh random tiles every epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.on_epoch_end()

        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int):
            batch = slice(index * cfg.batch_size, (index + 1) * cfg.batch_size)
            return self.x[batch], self.y[batch]

        def on_epoch_end(self) -> None:
            self.x, self.y = sample_tiles(
                images,
                labels,
                steps * cfg.batch_size,
                cfg.tile_size,
                cfg.foreground_tile_fraction,
                cfg.augment,
                rng,
                scale_range=cfg.scale_augment,
            )

    model = build_residual_unet(**builder_kwargs(cfg))
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate), loss=dice_bce_loss, metrics=[dice_coefficient])
    history = model.fit(Tiles(), epochs=cfg.epochs, verbose=verbose, shuffle=False)
    recalibrate_batchnorm(model, [unet_input(s.image, cfg.input_normalize) for s in train], builder_kwargs(cfg))
    return model, history.history


def recalibrate_batchnorm(model, images: list[np.ndarray], builder: dict) -> None:
    """Set every batch-norm layer's moving mean and variance to their average over whole slides.

    Tiles centred on cells are mostly cell, whole slides mostly background, and the moving averages
    of a short run lag behind the last weights; both leave inference-mode outputs off (on a short
    run the whole slide can come out empty). So the training slides are passed once more, whole and
    in training mode, with the momentum of pass ``i`` set to ``i / (i + 1)``: the statistics become
    the plain mean over the slides. No weight other than those statistics changes.

    Args:
        model: the trained tile U-Net; updated in place.
        images: HxWx3 uint8 RGB working-scale slides, as the model sees them (white-balanced).
        builder: its ``build_residual_unet`` keywords (to run it fully convolutional).
    """
    import tensorflow as tf

    from allmtl_spark.networks.resunet import pad_to_multiple
    from allmtl_spark.segmentation.predict import fully_convolutional

    whole = fully_convolutional(model, {"builder": builder})
    norms = [layer for layer in whole.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    multiple = 2 ** builder["depth"]
    try:
        for i, image in enumerate(images):
            for layer in norms:
                layer.momentum = i / (i + 1)
            padded, _ = pad_to_multiple(image, multiple)
            whole(padded[None].astype(np.float32), training=True)  # eager: reads the momentum set above
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    model.set_weights(whole.get_weights())


def evaluate_holdout(predict: Callable[[np.ndarray], np.ndarray], holdout: list[LabelledSlide]) -> dict[str, float]:
    """Mean Dice / IoU of the U-Net and Dice of the threshold ROI on whole held-out slides.

    Scored at the working pixel size against ``truth`` where a slide has it, else against its ROI weak
    label (then the ROI's own Dice is about 1 by construction; the caller reports which it was).
    Neither mask is post-processed.

    Args:
        predict: working-size HxWx3 RGB -> HxW float32 probabilities.
        holdout: the held-out slides.

    Returns:
        ``{"dice", "iou", "roi_dice"}``, means over the slides.
    """
    scores = []
    for slide in holdout:
        probability = predict(slide.image)
        truth = slide.truth if slide.truth is not None else slide.label * np.uint8(255)
        scores.append(compute_overlap_scores(probability, slide.roi, truth))
    return {
        "dice": float(np.mean([s.dice for s in scores])),
        "iou": float(np.mean([s.iou for s in scores])),
        "roi_dice": float(np.mean([s.roi_dice for s in scores])),
    }


# ----------------------------------------------------------------------------- the job (driver)


def _track(lake, record, cfg: SegmenterConfig, label_source: str, history: dict):
    """Log the run to MLflow (best effort: ``tracking`` yields None when MLflow is unavailable)."""
    from allmtl_spark import tracking
    from allmtl_spark.registry import SPEC_FILE, ModelRecord

    params = {
        "stage": "segmenter",
        "label_source": label_source,
        **{f"segmenter.{k}": v for k, v in asdict(cfg).items()},
    }
    with tracking.mlflow_run(lake.mlflow_uri, record.model_id, params, tags={"run_id": record.run_id}) as run:
        if run is None:
            return record
        tracking.log_history(history)
        tracking.log_metrics(record.metrics)
        tracking.log_artifact(f"{record.artifact_path}/{SPEC_FILE}")
        tracking.log_inputs(lake, record.input_tables)
        return ModelRecord(**{**asdict(record), "mlflow_run_id": run.info.run_id})


def _already_trained(row, start: float, progress: Callable[[str], object]) -> SegmenterSummary:
    spec = json.loads(row["config_json"]) if row["config_json"] else {}
    progress(f"train-segmenter: {row['model_id']} is already trained (run {row['run_id']}); nothing to do")
    return SegmenterSummary(
        model_id=row["model_id"],
        run_id=row["run_id"],
        artifact_path=row["artifact_path"],
        label_source=str(spec.get("label_source", "?")),
        label_counts={},
        train_slides=0,
        holdout_slides=0,
        metrics=dict(row["metrics"] or {}),
        seconds=time.perf_counter() - start,
    )


def run_train_segmenter(
    spark,
    cfg: SegmenterConfig,
    roi_cfg: RoiConfig,
    lake,
    run_id: str | None = None,
    progress: Callable[[str], object] = print,
    policy: PixelSizePolicy = PixelSizePolicy(),
) -> SegmenterSummary:
    """Train, evaluate, save and register a segmenter from the ``slides`` table.

    Args:
        spark: the session (driver only).
        cfg: the ``segmenter`` section.
        roi_cfg: the ``roi`` section (weak labels and the threshold baseline).
        lake: the lakehouse.
        run_id: recorded on the model; a new one by default. The model id is ``seg-<run_id>``.
        progress: called with one-line progress messages.
        policy: the pixel size of slides whose row records none (``PixelSizePolicy.from_ingest``).

    Returns:
        The :class:`SegmenterSummary` (also in ``models.metrics`` and ``model.json``).

    Raises:
        LakehouseError: ``slides`` is missing or holds fewer than 2 slides.
        ConfigError: ``label_source`` is truth and no slide has a ground-truth mask.
    """
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.config.loader import ConfigError
    from allmtl_spark.errors import LakehouseError
    from allmtl_spark.lakehouse import read_table, table_version
    from allmtl_spark.registry import MODEL_FILE, ModelRecord, register_model, save_artifact
    from allmtl_spark.segmentation.predict import fully_convolutional, whole_slide_predictor
    from allmtl_spark.session import assert_on_driver

    assert_on_driver()
    start = time.perf_counter()
    run_id = check_run_id(run_id) if run_id else uuid.uuid4().hex[:12]
    model_id = f"seg-{run_id}"
    existing = read_table(spark, lake, tables.MODELS).where(F.col("model_id") == model_id).collect()
    if existing:  # a rerun with the same run id: the registered artifact stays the one its hash names
        return _already_trained(existing[0], start, progress)
    slides_version = table_version(spark, lake, tables.SLIDES)
    if slides_version is None:
        raise LakehouseError(f"no slides table at {lake.path(tables.SLIDES)}; run `allmtl ingest` first")
    slides = read_table(spark, lake, tables.SLIDES, version=slides_version)
    # Keys first (small), then the chosen slides' bytes: sorting whole rows would shuffle every image.
    keys = [
        (r["content_sha256"], r["has_truth"])
        for r in slides.select("content_sha256", F.col("truth_mask").isNotNull().alias("has_truth"))
        .orderBy("content_sha256")
        .limit(cfg.max_slides)
        .collect()
    ]
    if len(keys) < 2:
        raise LakehouseError(f"slides holds {len(keys)} slide(s); training needs at least 2")
    try:
        label_source = choose_label_source(cfg.label_source, [t for _, t in keys])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    candidates = [k for k, t in keys if t or label_source != "truth"]  # truth: slides without masks sit out
    train_keys, holdout_keys = split_slides(candidates, cfg.holdout_fraction, cfg.seed)
    held = set(holdout_keys)
    progress(
        f"train-segmenter {model_id}: {len(candidates)} slides from slides v{slides_version} "
        f"({len(train_keys)} train, {len(holdout_keys)} held out), labels: {label_source}"
    )

    train: list[LabelledSlide] = []
    holdout: list[LabelledSlide] = []
    rows = slides.where(F.col("content_sha256").isin(candidates)).select(
        "slide_id", "content_sha256", "content", "truth_mask", "pixel_size_um", "pixel_size_source"
    )
    for row in rows.toLocalIterator(prefetchPartitions=True):
        sha = row["content_sha256"]
        stored, source = row["pixel_size_um"], row["pixel_size_source"]
        slide = prepare_slide(
            row["slide_id"],
            sha,
            bytes(row["content"]),
            bytes(row["truth_mask"]) if row["truth_mask"] is not None else None,
            lambda image, stored=stored, source=source: policy.resolve(image, stored, source),
            cfg.pixel_size_um,
            roi_cfg,
            use_truth=label_source != "roi",
            keep_truth=sha in held,
        )
        (holdout if sha in held else train).append(slide)
    label_counts = dict(Counter(s.label_kind for s in train + holdout))
    sources = dict(Counter(s.pixel_size_source for s in train + holdout))
    progress(
        f"  [{time.perf_counter() - start:.0f} s] resampled to {cfg.pixel_size_um:g} um/px (slides' pixel sizes: "
        f"{sources}); labels {label_counts}; fitting {cfg.epochs} epochs of {cfg.tiles_per_slide * len(train)} tiles "
        f"({cfg.tile_size} px)"
    )

    fit_start = time.perf_counter()
    model, history = fit_unet(sorted(train, key=lambda s: s.content_sha256), cfg)
    fit_seconds = time.perf_counter() - fit_start
    builder = builder_kwargs(cfg)
    predict = whole_slide_predictor(fully_convolutional(model, {"builder": builder}), cfg.input_normalize)
    progress(
        f"  [{time.perf_counter() - start:.0f} s] fitted in {fit_seconds:.0f} s; scoring {len(holdout)} held-out slides"
    )
    metrics = evaluate_holdout(predict, sorted(holdout, key=lambda s: s.content_sha256))
    evaluated_against = (
        "ground-truth"
        if all(s.truth is not None for s in holdout)
        else ("ROI weak-label" if not any(s.truth is not None for s in holdout) else "ground-truth / ROI")
    )
    metrics.update(
        {
            "train_slides": float(len(train)),
            "holdout_slides": float(len(holdout)),
            "truth_label_slides": float(label_counts.get("truth", 0)),
            "roi_label_slides": float(label_counts.get("roi", 0)),
            "final_loss": float(history["loss"][-1]),
            "first_loss": float(history["loss"][0]),
            "fit_seconds": round(fit_seconds, 1),
        }
    )

    folder = f"{lake.models.rstrip('/')}/{model_id}"
    spec = {
        "model_id": model_id,
        "kind": "segmenter",
        "builder": builder,
        "pixel_size_um": cfg.pixel_size_um,
        "input_normalize": cfg.input_normalize,
        "class_names": CLASS_NAMES,
        "label_source": label_source,
        "label_counts": label_counts,
        "evaluated_against": evaluated_against,
        "metrics": metrics,
        "holdout_slides": [s.slide_id for s in holdout],
        "input_tables": {tables.SLIDES.name: slides_version},
        "config": {"segmenter": asdict(cfg), "roi": asdict(roi_cfg)},
    }
    with warnings.catch_warnings():  # keras calls HDF5 "legacy"; the registry's format is HDF5 on purpose
        warnings.simplefilter("ignore", UserWarning)
        sha = save_artifact(model, folder, spec)
    record = ModelRecord(
        model_id=model_id,
        run_id=run_id,
        kind="segmenter",
        stage="segmenter",
        task="segmentation",
        class_names=CLASS_NAMES,
        artifact_path=folder,
        artifact_sha256=sha,
        config_json=json.dumps(spec["config"], sort_keys=True, default=str),
        input_size=cfg.tile_size,
        metrics=metrics,
        input_tables={tables.SLIDES.name: slides_version},
        purpose="train",
    )
    record = _track(lake, record, cfg, label_source, history)
    register_model(spark, lake, record)
    log.info("registered %s (%s, sha256 %s)", model_id, f"{folder}/{MODEL_FILE}", sha[:12])
    return SegmenterSummary(
        model_id=model_id,
        run_id=run_id,
        artifact_path=folder,
        label_source=label_source,
        label_counts=label_counts,
        train_slides=len(train),
        holdout_slides=len(holdout),
        metrics=metrics,
        evaluated_against=evaluated_against,
        seconds=time.perf_counter() - start,
    )
