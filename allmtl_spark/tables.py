"""Every Delta table of the lakehouse, declared once: name, schema, merge keys, partitioning.

Code refers to ``tables.SLIDES``, never to a string. The README's table reference is generated
from these declarations (``allmtl tables --markdown``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


@dataclass(frozen=True)
class Table:
    """One Delta table: where it lives relative to the lakehouse root and what it holds."""

    name: str
    schema: StructType
    merge_keys: tuple[str, ...]
    description: str
    partition_by: tuple[str, ...] = ()
    column_docs: dict[str, str] = field(default_factory=dict)

    def path(self, root: str) -> str:
        """Path-based location of this table under the lakehouse root."""
        return f"{root.rstrip('/')}/{self.name}"


def _f(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


POINT = StructType([_f("x", IntegerType()), _f("y", IntegerType())])  # Delta allows no NOT NULL inside arrays

_IMAGE_COLUMNS = [
    _f("content_sha256", StringType(), False),
    _f("source_path", StringType(), False),
    _f("duplicate_paths", ArrayType(StringType()), False),
    _f("source_kind", StringType(), False),
    _f("site", StringType(), False),
    _f("format", StringType(), False),
    _f("width", IntegerType(), False),
    _f("height", IntegerType(), False),
    _f("channels", IntegerType(), False),
    _f("bit_depth", IntegerType(), False),
    _f("content", BinaryType(), False),
    _f("label_binary", IntegerType()),
    _f("label_fab", StringType()),
    _f("truth_mask", BinaryType()),
    _f("patient_hash", StringType()),
    _f("ingest_run_id", StringType(), False),
    _f("ingested_at", TimestampType(), False),
]

_IMAGE_DOCS = {
    "content_sha256": "SHA-256 of the file bytes; the merge key (same bytes = same row)",
    "source_path": "first path (sorted) the bytes were read from",
    "duplicate_paths": "other paths with the same bytes and the same labels",
    "source_kind": "allidb1 | allidb2 | manifest | folder",
    "site": "source/site name from the ingest config or manifest",
    "format": "JPEG | TIFF | PNG | BMP",
    "content": "the original file bytes (decode with OpenCV/Pillow)",
    "label_binary": "1 ALL, 0 healthy; null when unknown",
    "label_fab": "normal | L1 | L2 | L3 (manifest only); null when unknown",
    "truth_mask": "ground-truth white-cell mask as PNG bytes (0/255) when the source has one",
    "patient_hash": "HMAC-SHA256 of the patient id with the site's secret key; never the raw id",
}

# Added after the first release: nullable (rows ingested before read null).
_PIXEL_SIZE_COLUMNS = [
    _f("pixel_size_um", DoubleType()),
    _f("pixel_size_source", StringType()),
    _f("pixel_size_confidence", DoubleType()),
]
_PIXEL_SIZE_DOCS = {
    "pixel_size_um": "micrometres per pixel of the image; null for rows ingested before this column existed",
    "pixel_size_source": "given (manifest column pixel_size_um or ingest.sources[].pixel_size_um) | estimated "
    "(from the red cells, confidence >= ingest.pixel_size_min_confidence) | default (the source's default)",
    "pixel_size_confidence": "confidence 0..1 of the red-cell estimate (also when it was not trusted); null when given",
}

SLIDES = Table(
    name="slides",
    schema=StructType(
        [_f("slide_id", StringType(), False)]
        + _IMAGE_COLUMNS
        + [_f("blast_centroids", ArrayType(POINT)), _f("has_xyc", BooleanType(), False)]
        + _PIXEL_SIZE_COLUMNS
    ),
    merge_keys=("content_sha256",),
    description="Whole blood-smear images (ALL-IDB1 layout or manifest rows of kind slide).",
    column_docs={
        "slide_id": "file stem (ImNNN_L), the manifest's slide_id, or a folder image's path inside the folder without "
        "its extension",
        **_IMAGE_DOCS,
        "blast_centroids": "x, y pixel centroids of the blasts from the .xyc file",
        "has_xyc": "whether a .xyc file came with the image",
        **_PIXEL_SIZE_DOCS,
    },
)

CELLS = Table(
    name="cells",
    schema=StructType(
        [_f("cell_id", StringType(), False)]
        + _IMAGE_COLUMNS
        + _PIXEL_SIZE_COLUMNS
        + [
            _f("source_slide_id", StringType()),
            _f("source_slide_sha256", StringType()),
            _f("source_match_score", DoubleType()),
            _f("source_crop_x", IntegerType()),
            _f("source_crop_y", IntegerType()),
        ]
    ),
    merge_keys=("content_sha256",),
    description="Single-cell crops (ALL-IDB2 layout or manifest rows of kind cell).",
    column_docs={
        "cell_id": "file stem (ImNNN_L) or the manifest's slide_id",
        **_IMAGE_DOCS,
        **_PIXEL_SIZE_DOCS,
        "source_slide_id": "slide_id of the slide the crop was cut from: the manifest's `source_slide_id`, or found "
        "by template matching (ALL-IDB2 crops against ingested ALL-IDB1 slides); null when unknown",
        "source_slide_sha256": "content hash of that slide in `slides` (null when it is not ingested)",
        "source_match_score": "normalised cross-correlation of the crop with the slide at its place (1 = identical); "
        "null when the place is neither given nor searched",
        "source_crop_x": "left pixel of the crop in the source slide (manifest `crop_x` or the match)",
        "source_crop_y": "top pixel of the crop in the source slide (manifest `crop_y` or the match)",
    },
)

REJECTS = Table(
    name="rejects",
    schema=StructType(
        [
            _f("reject_key", StringType(), False),
            _f("stage", StringType(), False),
            _f("source_path", StringType(), False),
            _f("content_sha256", StringType()),
            _f("reason", StringType(), False),
            _f("detail", StringType()),
            _f("version", StringType()),
            _f("run_id", StringType(), False),
            _f("rejected_at", TimestampType(), False),
            # nullable: added after the first release (older rows read null: decided by their reason)
            _f("retryable", BooleanType()),
        ]
    ),
    merge_keys=("reject_key",),
    description="Inputs a job could not use, one row per input and stage, with the reason. Nothing is dropped.",
    column_docs={
        "reject_key": "SHA-256 of stage, source path, content hash and version: a rerun adds no second row",
        "stage": "ingest | segment | score",
        "reason": "machine-readable reason code (see README, 'Reject reasons')",
        "detail": "human-readable explanation: what is wrong and where",
        "version": "segmenter or model version for the segment / score stages",
        "retryable": "true: the cause may pass (out of memory, a size limit of the config, a file that could not be "
        "read); the next run tries the input again and deletes this row once it succeeds (a retry that fails for "
        "another reason takes the row over). false: a property of the input (undecodable, no white cells), not "
        "retried for the same version",
    },
)

SEGMENTED_SLIDES = Table(
    name="segmented_slides",
    schema=StructType(
        [
            _f("content_sha256", StringType(), False),
            _f("segmenter_version", StringType(), False),
            _f("slide_id", StringType(), False),
            _f("mask_source", StringType(), False),
            _f("roi_method", StringType(), False),
            _f("scale", DoubleType(), False),
            _f("width", IntegerType(), False),
            _f("height", IntegerType(), False),
            _f("isolated", BinaryType(), False),
            _f("mask", BinaryType(), False),
            _f("cell_count", IntegerType(), False),
            _f("blast_truth_count", IntegerType()),
            _f("detect_tp", IntegerType()),
            _f("detect_fp", IntegerType()),
            _f("detect_fn", IntegerType()),
            _f("truth_cell_count", IntegerType()),
            _f("truth_cells_found", IntegerType()),
            _f("dice_vs_truth", DoubleType()),
            _f("roi_dice_vs_truth", DoubleType()),
            _f("run_id", StringType(), False),
            _f("segmented_at", TimestampType(), False),
            # nullable: added after the first release
            _f("pixel_size_um", DoubleType()),
            _f("pixel_size_source", StringType()),
            _f("working_pixel_size_um", DoubleType()),
        ]
    ),
    merge_keys=("content_sha256", "segmenter_version"),
    description="One row per slide and segmenter version: white cells isolated on a black backdrop, and the mask.",
    column_docs={
        "content_sha256": "the slide's key in `slides`",
        "segmenter_version": "model_id of the U-Net in `models` (or `roi-<method>` when mask_source is roi)",
        "mask_source": "unet | roi: what produced the white-cell mask",
        "roi_method": "adaptive | paper: the threshold ROI computed beside the U-Net",
        "scale": "stored image size / original slide size (slide pixel size / working pixel size)",
        "width": "stored image width (original width x scale)",
        "isolated": "PNG: the slide with everything outside the white cells set to black",
        "mask": "PNG: the post-processed white-cell mask (0/255)",
        "cell_count": "number of white cells found (rows in `slide_cells`)",
        "blast_truth_count": "number of .xyc blast centroids, null without .xyc",
        "detect_tp": "found cells matched one-to-one to a .xyc centroid within segment.match_radius_um",
        "detect_fp": "found cells matching no .xyc centroid (.xyc lists blasts only, so normal white cells count)",
        "truth_cell_count": "white cells (connected regions) in the ground-truth mask; null without one",
        "truth_cells_found": "of those, matched one-to-one to a found cell within segment.match_radius_um",
        "dice_vs_truth": "Dice of the mask against the ground-truth mask (both at the working pixel size), when the "
        "slide has one",
        "roi_dice_vs_truth": "Dice of the threshold ROI (holes filled, specks dropped) against the ground-truth mask",
        "pixel_size_um": "the slide's micrometres per pixel as segmented; null for rows of an earlier release",
        "pixel_size_source": "given | estimated | default: from the slides row, or estimated here for slides "
        "ingested without one",
        "working_pixel_size_um": "micrometres per pixel of the stored images and the cell crops (the segmenter's)",
    },
)

SLIDE_CELLS = Table(
    name="slide_cells",
    schema=StructType(
        [
            _f("content_sha256", StringType(), False),
            _f("segmenter_version", StringType(), False),
            _f("cell_index", IntegerType(), False),
            _f("slide_id", StringType(), False),
            _f("bbox_x", IntegerType(), False),
            _f("bbox_y", IntegerType(), False),
            _f("bbox_w", IntegerType(), False),
            _f("bbox_h", IntegerType(), False),
            _f("centroid_x", DoubleType(), False),
            _f("centroid_y", DoubleType(), False),
            _f("area_px", IntegerType(), False),
            _f("crop", BinaryType(), False),
            _f("matches_blast", BooleanType()),
            _f("run_id", StringType(), False),
            _f("segmented_at", TimestampType(), False),
            # nullable: added after the first release
            _f("area_um2", DoubleType()),
            _f("pixel_size_um", DoubleType()),
            _f("pixel_size_source", StringType()),
            _f("crop_pixel_size_um", DoubleType()),
        ]
    ),
    merge_keys=("content_sha256", "segmenter_version", "cell_index"),
    description="One row per white cell found on a slide: where it is and a centred crop on black (ALL-IDB2-like).",
    column_docs={
        "bbox_x": "bounding box in original slide pixels (x, y, w, h)",
        "centroid_x": "centroid in original slide pixels",
        "area_px": "cell area in original slide pixels",
        "crop": "PNG: segment.crop_size_um square crop (odd pixel side at crop_pixel_size_um) centred on the cell, "
        "outside the cell black",
        "matches_blast": "matched to a .xyc blast centroid; null when the slide has no .xyc",
        "area_um2": "cell area in square micrometres; null for rows of an earlier release",
        "pixel_size_um": "the slide's micrometres per pixel (as in segmented_slides)",
        "pixel_size_source": "given | estimated | default (as in segmented_slides)",
        "crop_pixel_size_um": "micrometres per pixel of the crop: the segmenter's working pixel size",
    },
)

MODELS = Table(
    name="models",
    schema=StructType(
        [
            _f("model_id", StringType(), False),
            _f("run_id", StringType(), False),
            _f("kind", StringType(), False),
            _f("stage", StringType(), False),
            _f("task", StringType(), False),
            _f("approach", StringType()),
            _f("backbone", StringType()),
            _f("class_names", ArrayType(StringType()), False),
            _f("input_size", IntegerType()),
            _f("artifact_path", StringType(), False),
            _f("artifact_sha256", StringType(), False),
            _f("metrics", MapType(StringType(), DoubleType())),
            _f("input_tables", MapType(StringType(), LongType())),
            _f("split_id", StringType()),
            _f("config_json", StringType(), False),
            _f("mlflow_run_id", StringType()),
            _f("created_at", TimestampType(), False),
            # nullable: added after the first release (rows registered before read null)
            _f("mlflow_model_uri", StringType()),
            _f("registered_model_uri", StringType()),
            _f("purpose", StringType()),
            _f("temperature", DoubleType()),
            _f("trust_sha256", StringType()),
            _f("spec_sha256", StringType()),
            _f("tflite_sha256", StringType()),
        ]
    ),
    merge_keys=("model_id",),
    description="Every trained model (segmenter, stage 2, stage 3 MTL and classical): artifact, hash, data versions.",
    column_docs={
        "model_id": "unique version string, e.g. `<run_id>-stage3-fab4-mtl-inceptionv3`; the `model version`",
        "kind": "segmenter | classifier",
        "stage": "segmenter | stage2 | stage3",
        "task": "segmentation | cell_binary | binary | fab4",
        "approach": "mtl | classical (stage 3); null otherwise",
        "class_names": "output order of the probabilities",
        "artifact_path": "folder holding model.h5 (full Keras HDF5 model) and model.json; relative to the "
        "lakehouse root when inside it (`_models/<model_id>`), so a copied lakehouse uses its own copies",
        "artifact_sha256": "SHA-256 of model.h5; checked before every use",
        "metrics": "validation metrics (accuracy, auc, dice, ...)",
        "input_tables": "Delta version of every input table when training started (read back with versionAsOf)",
        "split_id": "the split in `splits` the model was trained on",
        "config_json": "the config section the model was trained with",
        "mlflow_run_id": "the MLflow run that trained it (null when tracking was off)",
        "mlflow_model_uri": "the MLflow pyfunc model logged in that run, `runs:/<run id>/model`; null when not logged",
        "registered_model_uri": "its version in the MLflow model registry, `models:/<name>/<version>` (Unity Catalog "
        "on Databricks); null when registry.name is not set",
        "purpose": "why it was trained: train (`allmtl train`, `allmtl train-segmenter`: what `latest` chooses from) | "
        "evaluate (a cross-validation fold) | tune (a grid value of `allmtl tune`); null for models registered "
        "before this column existed",
        "temperature": "temperature scaling fitted on the validation part of the model's split (scoring reports "
        "softmax(log p / T)); null when none was fitted (no validation part, or registered before this column)",
        "trust_sha256": "SHA-256 of trust.json in the artifact folder (temperature, ECE before/after, the "
        "out-of-distribution statistics and threshold of a slide classifier); checked before scoring uses it",
        "spec_sha256": "SHA-256 of model.json (builder keywords, classes, view); checked before it is read",
        "tflite_sha256": "SHA-256 of the model's TensorFlow Lite conversion (`model-<sha12>.tflite`), recorded by the "
        "first scoring run that made it; a cached conversion with another hash is made again from the checked h5",
    },
)

SPLITS = Table(
    name="splits",
    schema=StructType(
        [
            _f("split_id", StringType(), False),
            _f("source_table", StringType(), False),
            _f("content_sha256", StringType(), False),
            _f("item_id", StringType(), False),
            _f("group_key", StringType(), False),
            _f("label", StringType(), False),
            _f("part", StringType(), False),
            _f("fold", IntegerType()),
            _f("created_at", TimestampType(), False),
            _f("source_slide_sha256", StringType()),
            _f("overlap_check", StringType()),
        ]
    ),
    merge_keys=("split_id", "source_table", "content_sha256"),
    description="Which part (train / val / test) or fold every slide and cell belongs to, decided before augmentation.",
    column_docs={
        "split_id": "hash of the split settings and the input table versions",
        "source_table": "slides | cells",
        "group_key": "patient hash when known, else the slide id: a group never spans two parts",
        "part": "train | val | test (or `fold` for k-fold splits)",
        "fold": "fold number for k-fold splits, null otherwise",
        "source_slide_sha256": "cells: content hash of the slide the crop was cut from (null when unknown)",
        "overlap_check": "the check the training job ran before training: `passed: ...` (no patient or slide on "
        "two sides, no stage-2 cell of a stage-3 validation/test slide or patient); null in splits made before it",
    },
)

PREDICTIONS = Table(
    name="predictions",
    schema=StructType(
        [
            _f("model_id", StringType(), False),
            _f("content_sha256", StringType(), False),
            _f("part", StringType(), False),
            _f("item_id", StringType(), False),
            _f("label", IntegerType(), False),
            _f("predicted", IntegerType(), False),
            _f("scores", ArrayType(DoubleType()), False),
            _f("created_at", TimestampType(), False),
        ]
    ),
    merge_keys=("model_id", "content_sha256", "part"),
    description="Per-case validation and test predictions of every trained model (for metrics, ROC, McNemar).",
    column_docs={
        "part": "val | test",
        "label": "true class index into the model's class_names",
        "predicted": "argmax class index",
        "scores": "class probabilities in the order of models.class_names",
    },
)

_EVAL_KEY_DOCS = {
    "eval_id": "the evaluation run (`allmtl evaluate --eval-id` resumes it)",
    "trial": "repeat 0..evaluate.trials-1; trial t splits and augments with seed evaluate.seed + t",
    "fold": "test fold 0..evaluate.folds-1 of the trial",
    "backbone": (
        "InceptionV3 | Xception | InceptionResNetV2; inner-histogram+logreg | area+logreg for the baselines "
        "(histogram+logreg: the retired colour baseline that counted the cells' rims)"
    ),
    "task": "binary | fab4",
    "approach": "mtl (multistage) | classical | colour | size (the shape-blind baselines, evaluation/baselines.py)",
}

EVALUATION_RUNS = Table(
    name="evaluation_runs",
    schema=StructType(
        [
            _f("eval_id", StringType(), False),
            _f("trial", IntegerType(), False),
            _f("fold", IntegerType(), False),
            _f("backbone", StringType(), False),
            _f("task", StringType(), False),
            _f("approach", StringType(), False),
            _f("n_folds", IntegerType(), False),
            _f("model_id", StringType(), False),
            _f("train_run_id", StringType(), False),
            _f("split_id", StringType(), False),
            _f("n_train", IntegerType(), False),
            _f("n_val", IntegerType(), False),
            _f("n_test", IntegerType(), False),
            _f("split_seed", IntegerType(), False),
            _f("augment_seed", IntegerType(), False),
            _f("seconds", DoubleType()),
            _f("finished_at", TimestampType(), False),
        ]
    ),
    merge_keys=("eval_id", "trial", "fold", "backbone", "task", "approach"),
    description="One row per stage-3 model of a cross-validation run: which fold, model, training run and split.",
    column_docs={
        **_EVAL_KEY_DOCS,
        "n_folds": "k of the k-fold split",
        "model_id": "the stage-3 model in `models`; its test-part rows in `predictions` are the fold's results",
        "train_run_id": "`<eval_id>-t<trial>-f<fold>`; the trial's folds share stage 2 (run `<eval_id>-t<trial>`)",
        "split_id": "the fold's split in `splits`",
        "n_train": "training slides of the fold (originals, before augmentation; validation excluded)",
        "n_val": "validation slides carved from the training folds",
        "n_test": "test slides (the held-out fold)",
        "split_seed": "train.split.seed used for the trial",
        "augment_seed": "train.augment.seed used for the trial",
        "seconds": "stage-3 training time; null when the stage had been trained before a resume",
    },
)

EVALUATION_METRICS = Table(
    name="evaluation_metrics",
    schema=StructType(
        [
            _f("eval_id", StringType(), False),
            _f("trial", IntegerType(), False),
            _f("fold", IntegerType(), False),
            _f("backbone", StringType(), False),
            _f("task", StringType(), False),
            _f("approach", StringType(), False),
            _f("metric", StringType(), False),
            _f("class_name", StringType(), False),
            _f("value", DoubleType()),
            _f("computed_at", TimestampType(), False),
        ]
    ),
    merge_keys=("eval_id", "trial", "fold", "backbone", "task", "approach", "metric", "class_name"),
    description="Test-fold metrics of every cross-validation model, long format (one value per row).",
    column_docs={
        **_EVAL_KEY_DOCS,
        "fold": "test fold, or -1 for the trial's folds pooled (every slide predicted once, by the model that "
        "did not train on it)",
        "metric": "accuracy, n_test; per class precision, recall, specificity, f1, auc, support; "
        "macro_/micro_/weighted_ precision, recall, specificity, f1; micro_auc, macro_auc; "
        "confusion (count of true class / predicted class)",
        "class_name": "the class for per-class metrics, `<true>/<predicted>` for confusion, '' for averages",
        "value": "the metric; null where undefined (AUC of a class absent from the fold)",
    },
)

SLIDE_SCORES = Table(
    name="slide_scores",
    schema=StructType(
        [
            _f("content_sha256", StringType(), False),
            _f("model_version", StringType(), False),
            _f("slide_id", StringType(), False),
            _f("site", StringType()),
            _f("source_path", StringType()),
            _f("task", StringType(), False),
            _f("class_names", ArrayType(StringType()), False),
            _f("probabilities", ArrayType(DoubleType()), False),
            _f("predicted_class", StringType(), False),
            _f("p_leukemia", DoubleType(), False),
            _f("predicted_leukemia", BooleanType(), False),
            _f("white_cell_count", IntegerType(), False),
            _f("blast_cell_count", IntegerType()),
            _f("blast_cell_pct", DoubleType()),
            _f("segmenter_version", StringType(), False),
            _f("cell_model_version", StringType()),
            _f("scoring_run_id", StringType(), False),
            _f("scored_at", TimestampType(), False),
            # nullable: added after the first release (rows scored before read null)
            _f("runtime", StringType()),
            _f("model_file_sha256", StringType()),
            _f("cell_model_file_sha256", StringType()),
            _f("slide_cell_disagreement", StringType()),
            _f("calibrated_probabilities", ArrayType(DoubleType())),
            _f("temperature", DoubleType()),
            _f("ood_score", DoubleType()),
            _f("needs_review", BooleanType()),
            _f("review_reasons", ArrayType(StringType())),
        ]
    ),
    merge_keys=("content_sha256", "model_version"),
    description="One row per slide and model version: class probabilities, calls, white-cell and blast counts.",
    column_docs={
        "model_version": "model_id of the stage-3 classifier in `models`",
        "class_names": "order of `probabilities` (normal, L1, L2, L3 or normal, ALL)",
        "predicted_class": "the most probable class",
        "p_leukemia": "1 - P(normal): the probability of leukemia of any FAB class",
        "predicted_leukemia": "p_leukemia >= 0.5 (normal vs leukemia call)",
        "white_cell_count": "white cells the segmenter found",
        "blast_cell_count": "cells the stage-2 cell model calls blasts (P >= score.blast_threshold); null without it",
        "blast_cell_pct": "100 * blast_cell_count / white_cell_count",
        "cell_model_version": "model_id of the stage-2 cell model; null when not used",
        "scoring_run_id": "the run that wrote the row (the first one to score the slide with this model)",
        "runtime": "what ran the slide classifier: `tflite` (its TensorFlow Lite conversion) or `keras` (the h5); "
        "null for rows scored before this column existed",
        "model_file_sha256": "SHA-256 of the file the workers ran for the slide classifier: the h5 artifact "
        "(`keras`) or its conversion `model-<sha12>.tflite` in the lakehouse's TFLite cache "
        "(`<lakehouse>/_cache/tflite/<artifact SHA-256>/`, `tflite`)",
        "cell_model_file_sha256": "the same for the cell model (its h5 or its conversion; the two runtimes can "
        "differ when only one model could be converted); null without it",
        "slide_cell_disagreement": "the slide and cell classifiers contradict each other, a reason to look: "
        "`leukemia_without_blasts` (leukemia called, fewer than score.disagreement_min_blasts blast cells) | "
        "`normal_with_most_cells_blasts` (normal called, more than score.disagreement_max_blast_pct % of the white "
        "cells blasts); null when they agree, without a cell model, or for rows scored before this column existed",
        "probabilities": "the classifier's raw output (uncalibrated)",
        "calibrated_probabilities": "softmax(log probabilities / temperature): the model's temperature scaling "
        "(fitted on its validation part); null when the model has none. `p_leukemia` and the calls use the raw ones",
        "temperature": "the temperature applied (models.temperature); null when none",
        "ood_score": "Mahalanobis distance of the slide's statistics (stain colour, contrast, sharpness, cell "
        "fraction, white-cell count, pixel size) to the model's training slides; null when the model has no such check",
        "needs_review": "true when any check failed (`review_reasons` not empty): kept out of the headline counts "
        "of `score_aggregates`, listed by `allmtl review` (the review_queue view)",
        "review_reasons": "failed checks: `out_of_distribution:<statistic contributing most>` (ood_score above "
        "the model's validation threshold) | `slide_cell_disagreement:<code>`",
    },
)

SCORE_AGGREGATES = Table(
    name="score_aggregates",
    schema=StructType(
        [
            _f("scoring_run_id", StringType(), False),
            _f("model_version", StringType(), False),
            _f("scope", StringType(), False),
            _f("scope_value", StringType(), False),
            _f("metric", StringType(), False),
            _f("class_name", StringType(), False),
            _f("value", DoubleType()),
            _f("ci_low", DoubleType()),
            _f("ci_high", DoubleType()),
            _f("n", LongType()),
            _f("computed_at", TimestampType(), False),
            _f("undefined_reason", StringType()),
        ]
    ),
    merge_keys=("scoring_run_id", "model_version", "scope", "scope_value", "metric", "class_name"),
    description="Per scoring run: stage-wise counts (run, day, site) and, on labelled slides, metrics, CIs and "
    "the comparison with the previous model version.",
    column_docs={
        "scope": "run (this run's slides) | day | site | labelled (all labelled slides of the model) | comparison",
        "scope_value": "the run id, the date, the site, or the previous model version compared against",
        "metric": "count | accuracy | precision | recall | f1 | auc | confusion | mcnemar_p | auc_difference ...",
        "class_name": "class (normal, L1, ...), `true/predicted` for confusion cells, '' for overall values",
        "ci_low": "bootstrap confidence interval (score.confidence) where one applies; exact binomial for a one-class "
        "normal-vs-leukemia rate",
        "undefined_reason": "why value is null: the metric does not exist here (e.g. every labelled slide is normal: "
        "no sensitivity, no AUC); null when it does",
    },
)

PRIVACY_KEYS = Table(
    name="privacy_keys",
    schema=StructType(
        [
            _f("purpose", StringType(), False),
            _f("key_fingerprint", StringType(), False),
            _f("demo_key", BooleanType(), False),
            _f("recorded_by_run", StringType(), False),
            _f("recorded_at", TimestampType(), False),
        ]
    ),
    merge_keys=("purpose",),
    description="Which key made the lakehouse's keyed hashes: a fingerprint, never the key. Ingest refuses another.",
    column_docs={
        "purpose": "what the key hashes: `patient_id` (the `patient_hash` columns)",
        "key_fingerprint": "HMAC-SHA256 of a fixed message under the key: identifies the key, reveals nothing of it",
        "demo_key": "true: the public demo key, allowed for data written by `allmtl synth` only",
        "recorded_by_run": "the ingest run that recorded it (the first ingest into the lakehouse)",
    },
)

ALL_TABLES: tuple[Table, ...] = (
    SLIDES,
    CELLS,
    REJECTS,
    SEGMENTED_SLIDES,
    SLIDE_CELLS,
    MODELS,
    SPLITS,
    PREDICTIONS,
    EVALUATION_RUNS,
    EVALUATION_METRICS,
    SLIDE_SCORES,
    SCORE_AGGREGATES,
    PRIVACY_KEYS,
)
