"""The slide segmentation pipeline as pure functions: numpy and OpenCV only, no Spark, pandas or TensorFlow.

One slide goes through: downscale to the working scale; the threshold ROI there; the white-cell mask
(U-Net probability above a threshold, or the ROI), brought back to the original size; post-processing
(fill holes, drop specks, split touching cells by watershed); the blue-channel isolation on a black
backdrop; one record and one centred crop per cell; and, where annotations exist, the detection match
against the ``.xyc`` blast centroids and the overlap with the ground-truth mask.

Images are HxWx3 uint8 RGB, masks HxW uint8 0/255, probabilities HxW float32 in [0, 1]. Every cell
coordinate and area is in ORIGINAL slide pixels; the stored slide images are at the working scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark.config.schema import RoiConfig, SegmentConfig
from allmtl_spark.transforms.color import check_rgb, to_mask, white_balance
from allmtl_spark.transforms.isolate import blue_channel_mask
from allmtl_spark.transforms.masks import (
    MatchResult,
    cell_records,
    crop_cell,
    dice,
    fill_holes,
    iou,
    label_components,
    match_detections,
    remove_small_objects,
    split_touching,
)
from allmtl_spark.transforms.roi import roi_mask

ROI_ONLY_SCALE = 0.5  # working scale when the mask comes from the ROI and no model sets one


@dataclass(frozen=True)
class SlideCell:
    """One white cell found on a slide, in original slide pixels.

    Attributes:
        index: 0-based, in raster order of the cell's first pixel.
        bbox: ``(x, y, w, h)``.
        centroid: ``(x, y)``.
        area: pixels.
        crop: ``crop_size x crop_size x 3`` uint8 RGB, centred on the cell, black outside its
            blue-isolated pixels (and where the crop leaves the slide).
        matches_blast: matched to a ``.xyc`` blast centroid; None when the slide has no ``.xyc``.
    """

    index: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    crop: np.ndarray
    matches_blast: bool | None


@dataclass(frozen=True)
class SlideSegmentation:
    """What the pipeline found on one slide.

    Attributes:
        scale: working scale (stored image size / original size).
        mask: working-scale HxW uint8 0/255: the post-processed white-cell mask.
        isolated: working-scale HxWx3 uint8 RGB: blue-isolated white cells on black.
        cells: one :class:`SlideCell` per cell.
        blast_match: found cells vs the ``.xyc`` blast centroids; None without ``.xyc``.
        truth_match: found cells vs the components of the ground-truth mask; None without one.
        dice_vs_truth: Dice of the full-size post-processed mask vs the ground truth; None without one.
        roi_dice_vs_truth: the same for the threshold ROI, after the same hole filling and speck removal.
    """

    scale: float
    mask: np.ndarray
    isolated: np.ndarray
    cells: tuple[SlideCell, ...]
    blast_match: MatchResult | None = None
    truth_match: MatchResult | None = None
    dice_vs_truth: float | None = None
    roi_dice_vs_truth: float | None = None


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode image file bytes (JPEG, PNG, TIFF, BMP) to HxWx3 uint8 RGB.

    Raises:
        ValueError: the bytes are not an image OpenCV can decode.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ValueError(f"OpenCV cannot decode these {len(data or b'')} bytes as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes) -> np.ndarray:
    """Decode mask file bytes (PNG) to HxW uint8 0/255 (any non-zero pixel is foreground).

    Raises:
        ValueError: the bytes are not an image OpenCV can decode.
    """
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if mask is None:
        raise ValueError(f"OpenCV cannot decode these {len(data or b'')} bytes as a mask")
    return to_mask(mask > 0)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an HxW uint8 mask or an HxWx3 uint8 RGB image (stored as RGB, as any reader expects)."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"OpenCV could not encode an array of shape {image.shape} as PNG")
    return buffer.tobytes()


def working_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(w, h)`` of a ``width x height`` image resized by ``scale`` (each side at least 1 pixel)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(image_rgb: np.ndarray, scale: float) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB slide by ``scale`` with area averaging (the U-Net's input)."""
    check_rgb(image_rgb)
    size = working_size(image_rgb.shape[1], image_rgb.shape[0], scale)
    if size == (image_rgb.shape[1], image_rgb.shape[0]):
        return image_rgb
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)


def unet_input(image_rgb: np.ndarray, normalize: str = "grey_world") -> np.ndarray:
    """The U-Net's view of a working-scale slide: white-balanced as at training time (HxWx3 uint8 RGB).

    Labs and cameras differ in colour cast; ``grey_world`` or ``percentile`` white balance (see
    ``transforms.color.white_balance``) removes it, so a model trained on some casts works on others.
    ``none`` passes the image through.
    """
    if normalize == "none":
        return image_rgb
    return white_balance(image_rgb, normalize)


def upscale_to(values: np.ndarray, shape: tuple[int, ...], threshold: float) -> np.ndarray:
    """Bilinearly resize an HxW map (probability or 0/255 mask) to ``shape[:2]`` and threshold it.

    Args:
        values: HxW float probabilities or uint8 mask.
        shape: the target image shape; its first two entries are used.
        threshold: keep values ``> threshold`` (0.5 for probabilities, 127 for 0/255 masks).

    Returns:
        HxW uint8 mask 0/255 of ``shape[:2]``; edges land between the working-scale pixels.
    """
    height, width = shape[:2]
    values = values.astype(np.float32, copy=False)
    if values.shape != (height, width):
        values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    return to_mask(values > threshold)


def compute_roi(image_rgb: np.ndarray, cfg: RoiConfig) -> np.ndarray:
    """The configured threshold ROI (``paper`` or ``adaptive``) of an HxWx3 uint8 RGB image; HxW uint8 0/255."""
    if cfg.method == "paper":
        return roi_mask(image_rgb, "paper", offsets=cfg.offsets, threshold=cfg.threshold)
    normalize = None if cfg.normalize == "none" else cfg.normalize
    return roi_mask(image_rgb, "adaptive", channel=cfg.channel, normalize=normalize)


def cell_labels(mask: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Post-process a white-cell mask into labelled cells: fill holes, drop specks, split touching cells.

    Args:
        mask: HxW mask in original slide pixels, non-zero = white cell.
        cfg: the ``segment`` section (areas and watershed distance in original pixels).

    Returns:
        HxW int32 label image, 0 = background, 1..n = cells in raster order; cells smaller than
        ``min_cell_area_px`` (after splitting) or larger than ``max_cell_area_px`` are removed.
    """
    cleaned = remove_small_objects(fill_holes(mask), cfg.min_cell_area_px)
    if cfg.split_touching:
        labels = split_touching(cleaned, cfg.watershed_min_distance, seed_fraction=cfg.watershed_seed_fraction)
    else:
        labels = label_components(cleaned)
    areas = np.bincount(labels.ravel())
    keep = areas >= cfg.min_cell_area_px
    if cfg.max_cell_area_px is not None:
        keep &= areas <= cfg.max_cell_area_px
    keep[0] = False
    if keep[1:].all():
        return labels
    lookup = np.zeros(len(areas), np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def segment_slide(
    image_rgb: np.ndarray,
    probability: np.ndarray | None,
    roi_cfg: RoiConfig,
    cfg: SegmentConfig,
    scale: float,
    truth_mask: np.ndarray | None = None,
    blast_xy: Sequence[Sequence[float]] | np.ndarray | None = None,
    working_image: np.ndarray | None = None,
) -> SlideSegmentation:
    """Segment the white cells of one slide.

    Args:
        image_rgb: the decoded slide, HxWx3 uint8 RGB, original size.
        probability: U-Net "white cell" probabilities at the working scale, float32 ``(h, w)`` with
            ``(w, h) = working_size(W, H, scale)``; required when ``cfg.mask_source`` is ``unet``,
            ignored for ``roi``.
        roi_cfg: the ``roi`` section (the threshold method).
        cfg: the ``segment`` section.
        scale: the working scale, in (0, 1].
        truth_mask: ground-truth white-cell mask, HxW 0/255 at the original size, or None.
        blast_xy: ``.xyc`` blast centroids ``(n, 2)`` (x, y) in original pixels, or None without ``.xyc``.
        working_image: ``downscale(image_rgb, scale)`` if the caller already has it.

    Returns:
        A :class:`SlideSegmentation`; ``cells`` is empty when no white cell was found.
    """
    check_rgb(image_rgb)
    small = working_image if working_image is not None else downscale(image_rgb, scale)
    roi_small = compute_roi(small, roi_cfg)
    if cfg.mask_source == "unet":
        if probability is None or probability.shape != small.shape[:2]:
            raise ValueError(
                f"probability must be an HxW map of the working size {small.shape[:2]}, "
                f"got {getattr(probability, 'shape', None)}"
            )
        mask = upscale_to(probability, image_rgb.shape, cfg.mask_threshold)
    else:
        mask = upscale_to(roi_small, image_rgb.shape, 127)
    labels = cell_labels(mask, cfg)
    cells_mask = to_mask(labels > 0)
    normalize = None if roi_cfg.normalize == "none" else roi_cfg.normalize
    blue = blue_channel_mask(image_rgb, cells_mask, threshold=cfg.blue_threshold, normalize=normalize)
    isolated = np.where(blue[..., None] > 0, image_rgb, np.uint8(0))
    records = cell_records(labels)
    centroids = [r.centroid for r in records]

    blast_match = None
    if blast_xy is not None:
        blast_match = match_detections(centroids, np.asarray(blast_xy, np.float64).reshape(-1, 2), cfg.match_radius_px)
    cells = []
    for i, record in enumerate(records):
        crop = crop_cell(isolated, record.centroid, cfg.crop_size)
        crop[crop_cell(labels, record.centroid, cfg.crop_size, 0) != record.label] = 0
        matched = blast_match.found_matched[i] if blast_match is not None else None
        cells.append(
            SlideCell(
                index=i, bbox=record.bbox, centroid=record.centroid, area=record.area, crop=crop, matches_blast=matched
            )
        )

    truth_match = dice_truth = roi_dice = None
    if truth_mask is not None:
        truth_centroids = [r.centroid for r in cell_records(label_components(truth_mask))]
        truth_match = match_detections(centroids, truth_centroids, cfg.match_radius_px)
        dice_truth = dice(cells_mask, truth_mask)
        roi_full = remove_small_objects(fill_holes(upscale_to(roi_small, image_rgb.shape, 127)), cfg.min_cell_area_px)
        roi_dice = dice(roi_full, truth_mask)

    size = (small.shape[1], small.shape[0])
    return SlideSegmentation(
        scale=scale,
        mask=to_mask(cv2.resize(cells_mask, size, interpolation=cv2.INTER_AREA) > 127),
        isolated=cv2.resize(isolated, size, interpolation=cv2.INTER_AREA),
        cells=tuple(cells),
        blast_match=blast_match,
        truth_match=truth_match,
        dice_vs_truth=dice_truth,
        roi_dice_vs_truth=roi_dice,
    )


@dataclass(frozen=True)
class OverlapScores:
    """Overlap of a predicted mask with the truth, next to the threshold ROI's."""

    dice: float
    iou: float
    roi_dice: float


def compute_overlap_scores(
    probability: np.ndarray, roi_small: np.ndarray, truth_mask: np.ndarray, threshold: float = 0.5
) -> OverlapScores:
    """Dice and IoU at the ORIGINAL size of a working-scale probability map, and the ROI's Dice.

    Args:
        probability: HxW float32 U-Net probabilities at the working scale.
        roi_small: HxW uint8 0/255 threshold ROI at the working scale.
        truth_mask: HxW 0/255 ground-truth mask at the original size.
        threshold: probability threshold.

    Returns:
        :class:`OverlapScores` (raw masks: no post-processing on either side).
    """
    predicted = upscale_to(probability, truth_mask.shape, threshold)
    roi = upscale_to(roi_small, truth_mask.shape, 127)
    return OverlapScores(
        dice=dice(predicted, truth_mask), iou=iou(predicted, truth_mask), roi_dice=dice(roi, truth_mask)
    )
