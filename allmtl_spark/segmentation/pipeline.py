"""The slide segmentation pipeline as pure functions: numpy and OpenCV only, no Spark, pandas or TensorFlow.

One slide goes through: resampling from its own pixel size to the working pixel size (the segmenter's
canonical resolution, micrometres per pixel, so one model serves every magnification); the threshold
ROI there; the white-cell mask (U-Net probability above a threshold, or the ROI); post-processing with
physical sizes (fill holes, drop specks and slivers, split touching cells by watershed); the
blue-channel isolation on a black backdrop; one record and one centred crop per cell; and, where
annotations exist, the detection match against the ``.xyc`` blast centroids and the overlap with the
ground-truth mask.

Images are HxWx3 uint8 RGB, masks HxW uint8 0/255, probabilities HxW float32 in [0, 1]. All the work,
the stored slide images and the crops are at the working pixel size; cell positions are reported in
ORIGINAL slide pixels (as annotations are), areas in square micrometres and original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from allmtl_spark import units
from allmtl_spark.config.schema import RoiConfig, SegmentConfig
from allmtl_spark.transforms.color import check_rgb, to_mask
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
from allmtl_spark.transforms.resample import mask_by, odd_size_px, resize_by, to_new_grid, to_old_grid
from allmtl_spark.transforms.roi import roi_mask
from allmtl_spark.transforms.stain import normalize_colour


@dataclass(frozen=True)
class SlideCell:
    """One white cell found on a slide.

    Attributes:
        index: 0-based, in raster order of the cell's first pixel at the working pixel size.
        bbox: ``(x, y, w, h)`` in original slide pixels.
        centroid: ``(x, y)`` in original slide pixels.
        area: original slide pixels.
        area_um2: square micrometres.
        crop: ``n x n x 3`` uint8 RGB at the working pixel size (``n``: ``segment.crop_size_um`` in
            pixels, odd), centred on the cell, black outside its blue-isolated pixels (and where the
            crop leaves the slide).
        matches_blast: matched to a ``.xyc`` blast centroid; None when the slide has no ``.xyc``.
    """

    index: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    area_um2: float
    crop: np.ndarray
    matches_blast: bool | None


@dataclass(frozen=True)
class SlideSegmentation:
    """What the pipeline found on one slide.

    Attributes:
        scale: stored image size / original size (``original pixel size / working pixel size``).
        pixel_size_um: the slide's own micrometres per pixel.
        working_pixel_size_um: micrometres per pixel of ``mask``, ``isolated`` and the crops.
        mask: working-size HxW uint8 0/255: the post-processed white-cell mask.
        isolated: working-size HxWx3 uint8 RGB: blue-isolated white cells on black.
        cells: one :class:`SlideCell` per cell.
        blast_match: found cells vs the ``.xyc`` blast centroids; None without ``.xyc``.
        truth_match: found cells vs the components of the ground-truth mask; None without one.
        dice_vs_truth: Dice of the post-processed mask vs the ground truth (at the working size); None without one.
        roi_dice_vs_truth: the same for the threshold ROI, after the same hole filling and speck removal.
    """

    scale: float
    pixel_size_um: float
    working_pixel_size_um: float
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


def to_working(image: np.ndarray, pixel_size_um: float, working_pixel_size_um: float) -> np.ndarray:
    """A slide (HxWx3 uint8 RGB, or an HxW map) brought from its pixel size to the working pixel size."""
    return resize_by(image, units.resample_factor(pixel_size_um, working_pixel_size_um))


def working_shape(width: int, height: int, pixel_size_um: float, working_pixel_size_um: float) -> tuple[int, int]:
    """``(w, h)`` of a ``width x height`` slide at the working pixel size (what ``to_working`` returns)."""
    factor = units.resample_factor(pixel_size_um, working_pixel_size_um)
    return max(1, round(width * factor)), max(1, round(height * factor))


def unet_input(image_rgb: np.ndarray, normalize: str = "grey_world") -> np.ndarray:
    """The U-Net's view of a working-scale slide: colour-normalised as at training time (HxWx3 uint8 RGB).

    Labs and cameras differ in colour cast and stain; ``grey_world`` or ``percentile`` white balance
    removes a cast, ``reinhard`` and ``macenko`` also the stain's strength and hue
    (``transforms.stain.normalize_colour``), so a model trained on some labs' colours works on others.
    ``none`` passes the image through. Training and prediction both call this with the model's
    ``input_normalize`` (model.json).
    """
    return normalize_colour(image_rgb, normalize)


def roi_view(image_rgb: np.ndarray, cfg: RoiConfig) -> np.ndarray:
    """The image as the adaptive ROI and the blue-channel isolation see it: ``roi.normalize`` applied."""
    return normalize_colour(image_rgb, cfg.normalize)


def compute_roi(image_rgb: np.ndarray, cfg: RoiConfig, normalized: np.ndarray | None = None) -> np.ndarray:
    """The configured threshold ROI (``paper`` or ``adaptive``) of an HxWx3 uint8 RGB image; HxW uint8 0/255.

    ``normalized`` is ``roi_view(image_rgb, cfg)`` if the caller already has it (the adaptive ROI uses it).
    """
    if cfg.method == "paper":
        return roi_mask(image_rgb, "paper", offsets=cfg.offsets, threshold=cfg.threshold)
    view = normalized if normalized is not None else roi_view(image_rgb, cfg)
    return roi_mask(view, "adaptive", channel=cfg.channel, normalize=None)


def cell_labels(
    mask: np.ndarray, cfg: SegmentConfig, pixel_size_um: float, probability: np.ndarray | None = None
) -> np.ndarray:
    """Post-process a white-cell mask into labelled cells: fill holes, drop specks, split touching cells.

    Args:
        mask: HxW mask, non-zero = white cell.
        cfg: the ``segment`` section (physical sizes).
        pixel_size_um: micrometres per pixel of ``mask``.
        probability: the U-Net's HxW probabilities the mask came from, or None (the ROI mask).

    Returns:
        HxW int32 label image, 0 = background, 1..n = cells in raster order; cells smaller than
        ``min_cell_area_um2`` (after splitting) or larger than ``max_cell_area_um2`` are removed, and,
        with ``probability``, those where less than ``min_confident_fraction`` of the pixels are at or
        above ``confident_probability`` (a white cell is a confident disc; platelets on red cells,
        platelet clumps and the gaps of a packed red-cell layer come out as faint, patchy regions).
    """
    min_area = units.um2_to_px2(cfg.min_cell_area_um2, pixel_size_um)
    cleaned = remove_small_objects(fill_holes(mask), int(np.ceil(min_area)))
    if cfg.split_touching:
        distance = max(1, int(round(units.um_to_px(cfg.watershed_min_distance_um, pixel_size_um))))
        labels = split_touching(cleaned, distance, seed_fraction=cfg.watershed_seed_fraction)
    else:
        labels = label_components(cleaned)
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    if cfg.max_cell_area_um2 is not None:
        keep &= areas <= units.um2_to_px2(cfg.max_cell_area_um2, pixel_size_um)
    if probability is not None and cfg.min_confident_fraction > 0:
        confident = np.bincount(labels[probability >= cfg.confident_probability], minlength=len(areas))
        keep &= confident >= cfg.min_confident_fraction * areas
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
    pixel_size_um: float,
    working_pixel_size_um: float,
    truth_mask: np.ndarray | None = None,
    blast_xy: Sequence[Sequence[float]] | np.ndarray | None = None,
    working_image: np.ndarray | None = None,
) -> SlideSegmentation:
    """Segment the white cells of one slide.

    Args:
        image_rgb: the decoded slide, HxWx3 uint8 RGB, original size.
        probability: U-Net "white cell" probabilities at the working pixel size, float32 ``(h, w)`` with
            ``(w, h) = working_shape(W, H, pixel_size_um, working_pixel_size_um)``; required when
            ``cfg.mask_source`` is ``unet``, ignored for ``roi``.
        roi_cfg: the ``roi`` section (the threshold method).
        cfg: the ``segment`` section.
        pixel_size_um: the slide's micrometres per pixel.
        working_pixel_size_um: the segmenter's micrometres per pixel.
        truth_mask: ground-truth white-cell mask, HxW 0/255 at the original size, or None.
        blast_xy: ``.xyc`` blast centroids ``(n, 2)`` (x, y) in original pixels, or None without ``.xyc``.
        working_image: ``to_working(image_rgb, ...)`` if the caller already has it.

    Returns:
        A :class:`SlideSegmentation`; ``cells`` is empty when no white cell was found.
    """
    check_rgb(image_rgb)
    factor = units.resample_factor(pixel_size_um, working_pixel_size_um)
    small = working_image if working_image is not None else to_working(image_rgb, pixel_size_um, working_pixel_size_um)
    normalized = roi_view(small, roi_cfg)  # once per slide: the ROI and the isolation share it
    roi_small = compute_roi(small, roi_cfg, normalized)
    if cfg.mask_source == "unet":
        if probability is None or probability.shape != small.shape[:2]:
            raise ValueError(
                f"probability must be an HxW map of the working size {small.shape[:2]}, "
                f"got {getattr(probability, 'shape', None)}"
            )
        mask = to_mask(probability > cfg.mask_threshold)
    else:
        mask = roi_small
    labels = cell_labels(mask, cfg, working_pixel_size_um, probability if cfg.mask_source == "unet" else None)
    cells_mask = to_mask(labels > 0)
    blue = blue_channel_mask(normalized, cells_mask, threshold=cfg.blue_threshold, normalize=None)
    isolated = np.where(blue[..., None] > 0, small, np.uint8(0))
    records = cell_records(labels)
    centroids = np.array([r.centroid for r in records], np.float64).reshape(-1, 2)
    radius = units.um_to_px(cfg.match_radius_um, working_pixel_size_um)

    blast_match = None
    if blast_xy is not None:
        truth_xy = to_new_grid(np.asarray(blast_xy, np.float64).reshape(-1, 2), factor)
        blast_match = match_detections(centroids, truth_xy, radius)
    crop_size = odd_size_px(cfg.crop_size_um, working_pixel_size_um)
    original = to_old_grid(centroids, factor)
    area_um2 = units.px2_to_um2(1.0, working_pixel_size_um)
    cells = []
    for i, record in enumerate(records):
        crop = crop_cell(isolated, record.centroid, crop_size)
        crop[crop_cell(labels, record.centroid, crop_size, 0) != record.label] = 0
        matched = blast_match.found_matched[i] if blast_match is not None else None
        x, y, w, h = record.bbox
        x0, y0 = np.floor(to_old_grid(np.array([[x - 0.5, y - 0.5]]), factor)[0] + 0.5).astype(int)
        x1, y1 = np.ceil(to_old_grid(np.array([[x + w - 0.5, y + h - 0.5]]), factor)[0] + 0.5).astype(int)
        cells.append(
            SlideCell(
                index=i,
                bbox=(int(max(x0, 0)), int(max(y0, 0)), int(x1 - max(x0, 0)), int(y1 - max(y0, 0))),
                centroid=(float(original[i, 0]), float(original[i, 1])),
                area=int(round(record.area / factor**2)),
                area_um2=float(record.area * area_um2),
                crop=crop,
                matches_blast=matched,
            )
        )

    truth_match = dice_truth = roi_dice = None
    if truth_mask is not None:
        truth = mask_by(truth_mask, factor) if truth_mask.shape != small.shape[:2] else truth_mask
        truth_centroids = [r.centroid for r in cell_records(label_components(truth))]
        truth_match = match_detections(centroids, truth_centroids, radius)
        dice_truth = dice(cells_mask, truth)
        min_area = int(np.ceil(units.um2_to_px2(cfg.min_cell_area_um2, working_pixel_size_um)))
        roi_dice = dice(remove_small_objects(fill_holes(roi_small), min_area), truth)

    return SlideSegmentation(
        scale=factor,
        pixel_size_um=float(pixel_size_um),
        working_pixel_size_um=float(working_pixel_size_um),
        mask=cells_mask,
        isolated=isolated,
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
    """Dice and IoU of a probability map's mask and the ROI's Dice against the truth, all at one size.

    Args:
        probability: HxW float32 U-Net probabilities at the working pixel size.
        roi_small: HxW uint8 0/255 threshold ROI at the working pixel size.
        truth_mask: HxW 0/255 ground-truth mask at the working pixel size.
        threshold: probability threshold.

    Returns:
        :class:`OverlapScores` (raw masks: no post-processing on either side).
    """
    predicted = to_mask(probability > threshold)
    return OverlapScores(
        dice=dice(predicted, truth_mask), iou=iou(predicted, truth_mask), roi_dice=dice(roi_small, truth_mask)
    )
