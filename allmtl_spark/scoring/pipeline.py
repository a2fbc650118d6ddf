"""One slide through the scoring pipeline: segmentation, the slide classifier, the cell classifier.

Pure numpy/OpenCV around the segmentation pipeline; the models come in as numpy-to-numpy functions
(``predict`` modules), so this runs the same in a Spark worker, a plain process or a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from allmtl_spark.config.schema import RoiConfig, SegmentConfig
from allmtl_spark.segmentation.pipeline import SlideSegmentation, segment_slide, to_working
from allmtl_spark.training.examples import ViewSpec, view_from_images


class NoWhiteCells(Exception):
    """The segmenter found no white cell on a slide: there is nothing to classify.

    A property of the slide and the segmenter, so scoring records it as a permanent reject. Its own
    type (not a ``ValueError``) so that no other failure can be mistaken for it.
    """


@dataclass(frozen=True)
class SlideScore:
    """What the models say about one slide."""

    class_names: tuple[str, ...]
    probabilities: np.ndarray  # (k,) float64
    white_cell_count: int
    blast_cell_count: int | None
    segmentation: SlideSegmentation
    view: np.ndarray  # the classifier input, size x size x 3 uint8
    features: np.ndarray | None = None  # (d,) the slide classifier's pooled features; None: not available

    @property
    def predicted_class(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def p_leukemia(self) -> float:
        """1 - P(normal): a leukemia of any FAB class (the marginal of the 4-class output)."""
        return float(1.0 - self.probabilities[self.class_names.index("normal")])

    @property
    def blast_cell_pct(self) -> float | None:
        if self.blast_cell_count is None or self.white_cell_count == 0:
            return None
        return 100.0 * self.blast_cell_count / self.white_cell_count


LEUKEMIA_WITHOUT_BLASTS = "leukemia_without_blasts"
NORMAL_WITH_BLASTS = "normal_with_most_cells_blasts"


def slide_cell_disagreement(
    predicted_leukemia: bool,
    white_cell_count: int,
    blast_cell_count: int | None,
    min_blasts: int = 1,
    max_blast_pct: float = 50.0,
) -> str | None:
    """Whether the slide classifier and the cell classifier contradict each other, as a reason code.

    Args:
        predicted_leukemia: the slide classifier's call (P(leukemia) >= 0.5).
        white_cell_count: white cells found on the slide.
        blast_cell_count: of those, cells the cell classifier calls blasts; None without a cell model.
        min_blasts: a leukemia call with fewer blast cells than this disagrees (``score.disagreement_min_blasts``).
        max_blast_pct: a normal call with more than this percentage of blast cells disagrees
            (``score.disagreement_max_blast_pct``).

    Returns:
        ``leukemia_without_blasts``, ``normal_with_most_cells_blasts``, or None when they agree or
        there is no cell model.
    """
    if blast_cell_count is None or white_cell_count <= 0:
        return None
    if predicted_leukemia and blast_cell_count < min_blasts:
        return LEUKEMIA_WITHOUT_BLASTS
    if not predicted_leukemia and 100.0 * blast_cell_count / white_cell_count > max_blast_pct:
        return NORMAL_WITH_BLASTS
    return None


def cells_largest_first(segmentation: SlideSegmentation) -> list[np.ndarray]:
    """The slide's isolated cell crops ordered by area, largest first (as training's montages)."""
    return [c.crop for c in sorted(segmentation.cells, key=lambda c: -c.area)]


def score_slide(
    image_rgb: np.ndarray,
    unet: Callable[[np.ndarray], np.ndarray] | None,
    classify: Callable[[np.ndarray], np.ndarray],
    classify_cells: Callable[[np.ndarray], np.ndarray] | None,
    class_names: tuple[str, ...],
    view: ViewSpec,
    cell_view: ViewSpec | None,
    roi_cfg: RoiConfig,
    seg_cfg: SegmentConfig,
    pixel_size_um: float,
    working_pixel_size_um: float,
    blast_threshold: float,
) -> SlideScore:
    """Score one decoded slide (HxWx3 uint8 RGB, original size, ``pixel_size_um`` micrometres per pixel).

    Raises:
        NoWhiteCells: no white cell was found (nothing to classify).
    """
    segmentation, crops, slide_input, cell_inputs = model_inputs(
        image_rgb, unet, view, cell_view, roi_cfg, seg_cfg, pixel_size_um, working_pixel_size_um
    )
    if hasattr(classify, "with_features"):  # a ``predict.Classifier``: the pooled features come along
        probabilities, pooled = classify.with_features(slide_input[None])
        probabilities, features = probabilities[0], (pooled[0] if pooled is not None else None)
    else:
        probabilities, features = classify(slide_input[None])[0], None
    blasts = None
    if classify_cells is not None and cell_inputs is not None:
        # P(blast) = 1 - P(normal): the cell model is normal/blast or normal/L1/L2/L3, normal first.
        blasts = int((1.0 - classify_cells(cell_inputs)[:, 0] >= blast_threshold).sum())
    return SlideScore(class_names, probabilities, len(crops), blasts, segmentation, slide_input, features)


def segment_image(
    image_rgb: np.ndarray,
    unet: Callable[[np.ndarray], np.ndarray] | None,
    roi_cfg: RoiConfig,
    seg_cfg: SegmentConfig,
    pixel_size_um: float,
    working_pixel_size_um: float,
) -> SlideSegmentation:
    """Segment one slide (HxWx3 uint8 RGB, original size, ``pixel_size_um`` micrometres per pixel).

    The slide is resampled to ``working_pixel_size_um`` (the segmenter's); the U-Net's mask is used, or
    the ROI's without one.
    """
    small = to_working(image_rgb, pixel_size_um, working_pixel_size_um)
    probability = unet(small) if unet is not None else None
    return segment_slide(
        image_rgb, probability, roi_cfg, seg_cfg, pixel_size_um, working_pixel_size_um, working_image=small
    )


def model_inputs(
    image_rgb: np.ndarray,
    unet: Callable[[np.ndarray], np.ndarray] | None,
    view: ViewSpec,
    cell_view: ViewSpec | None,
    roi_cfg: RoiConfig,
    seg_cfg: SegmentConfig,
    pixel_size_um: float,
    working_pixel_size_um: float,
) -> tuple[SlideSegmentation, list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Segment one slide and build what the classifiers see: (segmentation, crops, slide input, cell inputs).

    The cell inputs are None without a ``cell_view``.

    Raises:
        NoWhiteCells: no white cell was found (nothing to classify).
    """
    segmentation = segment_image(image_rgb, unet, roi_cfg, seg_cfg, pixel_size_um, working_pixel_size_um)
    if not segmentation.cells:
        raise NoWhiteCells("no white cell found on the slide")
    crops = cells_largest_first(segmentation)
    sources = [segmentation.isolated] if view.kind == "isolated" else crops
    slide_input = view_from_images(sources, view, None, None)
    cell_inputs = (
        np.stack([view_from_images([c], cell_view, None, None) for c in crops]) if cell_view is not None else None
    )
    return segmentation, crops, slide_input, cell_inputs
