"""``allmtl score``: score every slide this model version has not scored yet, exactly once.

Incremental by a left-anti join of ``slides`` with ``slide_scores`` (and ``score`` rejects) on
(content hash, model version). A change data feed would only say which slides changed since a
table version; a new model version must score every old slide too, so "no row for this
version yet" is the question, and the anti-join asks it directly.

One ``mapInPandas`` pass on the Python workers runs decode -> ROI -> U-Net -> isolation -> slide
classifier -> cell classifier (models loaded once per worker; the classifiers as their TFLite
conversion with ``score.runtime: tflite``, see ``scoring.tflite``) and emits ``score``, ``reject``
and per-task ``stats`` rows. The driver persists them and MERGEs on (slide, model version):
a rerun, a retried task or a concurrent run never writes a second row or loses one.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from allmtl_spark import tables
from allmtl_spark.config.schema import AppConfig, RoiConfig, SegmentConfig, SourceConfig
from allmtl_spark.errors import ArtifactError
from allmtl_spark.ids import check_run_id
from allmtl_spark.lakehouse import Lakehouse, merge_new_rows, read_table
from allmtl_spark.partitioning import spread_over_tasks
from allmtl_spark.registry import ModelChoice, ModelRecord, choose_model, resolve_model, verify_artifact
from allmtl_spark.rejects import merge_rejects, reject_rows, resolve_retried, retryable_column
from allmtl_spark.scoring.pipeline import SlideScore
from allmtl_spark.session import assert_on_driver
from allmtl_spark.syncpoints import sync_point
from allmtl_spark.training.examples import ViewSpec
from allmtl_spark.transforms.scale import PixelSizePolicy

log = logging.getLogger(__name__)
STAGE = "score"

SCORE_ROWS = StructType(
    [
        StructField(name, dtype)
        for name, dtype in (
            ("row_kind", StringType()),  # score | reject | stats
            ("content_sha256", StringType()),
            ("slide_id", StringType()),
            ("site", StringType()),
            ("source_path", StringType()),
            ("probabilities", ArrayType(DoubleType())),
            ("predicted_class", StringType()),
            ("p_leukemia", DoubleType()),
            ("predicted_leukemia", BooleanType()),
            ("white_cell_count", IntegerType()),
            ("blast_cell_count", IntegerType()),
            ("blast_cell_pct", DoubleType()),
            ("reason", StringType()),
            ("detail", StringType()),
            ("pid", LongType()),
            ("model_loads", IntegerType()),
            ("max_rss_bytes", LongType()),
            ("slides_done", IntegerType()),
            ("seconds", DoubleType()),
            ("slide_cell_disagreement", StringType()),
            ("calibrated_probabilities", ArrayType(DoubleType())),
            ("ood_score", DoubleType()),
            ("needs_review", BooleanType()),
            ("review_reasons", ArrayType(StringType())),
        )
    ]
)
_COLUMNS = SCORE_ROWS.fieldNames()


@dataclass(frozen=True)
class ModelRef:
    """A hash-checked artifact a worker loads, with how it expects its input."""

    model_id: str
    model_file: str  # the Keras artifact (Grad-CAM needs it)
    sha256: str
    class_names: tuple[str, ...]
    view: ViewSpec
    serving_file: str | None = None  # its TFLite conversion, which the workers load instead
    serving_sha256: str | None = None
    chosen: str = ""  # which rule chose it (``registry.ModelChoice.describe``), printed by the job
    temperature: float | None = None  # temperature scaling fitted at registration (trust.json); None: none
    ood: dict | None = None  # trust.OodModel as a dict (trust.json); None: no out-of-distribution check
    feature_ood: dict | None = None  # trust.FeatureOodModel as a dict (trust.json); None: input statistics only
    ood_fused: dict | None = None  # trust.FusedOod as a dict: the threshold of the fused checks
    recorded_tflite_sha256: str | None = None  # the conversion's hash in `models`, if one was recorded

    def serving(self) -> tuple[str, str]:
        """(file, SHA-256) of what scoring runs: the TFLite conversion if there is one, else the Keras artifact."""
        if self.serving_file and self.serving_sha256:
            return self.serving_file, self.serving_sha256
        return self.model_file, self.sha256

    @property
    def runtime(self) -> Literal["tflite", "keras"]:
        """What scoring runs the model in (``serving``'s file type)."""
        return "tflite" if self.serving()[0].endswith(".tflite") else "keras"

    def for_runtime(self, runtime: Literal["tflite", "keras"], cache_dir: str) -> ModelRef:
        """This reference with ``serving`` set for ``score.runtime`` (converting to TFLite once per version).

        Keras when asked for, or when the conversion cannot be cached (``tflite_artifact`` warns).

        Args:
            cache_dir: where conversions are cached (``Lakehouse.cache`` of the lakehouse being written).
        """
        converted = None
        if runtime == "tflite":
            from allmtl_spark.scoring.tflite import tflite_artifact

            converted = tflite_artifact(self.model_file, self.sha256, cache_dir, self.recorded_tflite_sha256)
        serving_file, serving_sha256 = converted or (None, None)
        return replace(self, serving_file=serving_file, serving_sha256=serving_sha256)


_FEATURE_MODELS: dict[tuple[str, int], object] = {}  # per worker: the parsed feature check of a model


def _feature_model(ref: ModelRef):
    """``trust.FeatureOodModel`` of ``ref``, parsed once per process (its arrays are ~65k numbers)."""
    from allmtl_spark.trust import FeatureOodModel

    key = (ref.model_id, id(ref.feature_ood))
    if key not in _FEATURE_MODELS:
        _FEATURE_MODELS[key] = FeatureOodModel.from_dict(ref.feature_ood).arrays()
    return _FEATURE_MODELS[key]


@dataclass(frozen=True)
class ScorePlan:
    """Everything the workers need (pickled into the mapInPandas closure; no models, only paths)."""

    classifier: ModelRef
    cell_model: ModelRef | None
    segmenter_version: str
    segmenter_file: str | None
    segmenter_sha256: str | None
    working_pixel_size_um: float
    roi: RoiConfig
    segment: SegmentConfig
    blast_threshold: float
    tf_threads: int
    classifier_batch: int
    disagreement: tuple[int, float] = (1, 50.0)  # score.disagreement_min_blasts, score.disagreement_max_blast_pct
    pixel_policy: PixelSizePolicy = PixelSizePolicy()  # slides whose row records no pixel size
    segmenter_spec_sha256: str | None = None  # of the U-Net's model.json (None: registered before it was kept)

    def trust(self, result: SlideScore, pixel_size_um: float | None, disagreement: str | None) -> dict:
        """Calibrated probabilities, ``ood_score``, ``needs_review`` and ``review_reasons`` of one scored slide."""
        from allmtl_spark.metrics.calibration import apply_temperature
        from allmtl_spark.trust import OodModel, ood_features, review_reasons

        ref = self.classifier
        calibrated = (
            [float(p) for p in apply_temperature(result.probabilities, ref.temperature)]
            if ref.temperature is not None
            else None
        )
        score = threshold = furthest = None
        if ref.ood is not None:
            ood = OodModel.from_dict(ref.ood)
            features = ood_features(result.view, result.white_cell_count, pixel_size_um)[None]
            score, threshold, furthest = float(ood.score(features)[0]), ood.threshold, ood.furthest(features)[0]
            if ref.ood_fused is not None:  # the checks fused (range, pooled features): one threshold
                from allmtl_spark.trust import fused_scores

                pooled = result.features[None] if result.features is not None else None
                feature_model = _feature_model(ref) if ref.feature_ood is not None else None
                threshold = float(ref.ood_fused["threshold"])
                if feature_model is not None and pooled is None:
                    # no pooled features (a Keras artifact without the pool layer): the feature check scores as failed
                    score, furthest = float("inf"), "features_missing"
                else:
                    fused, names = fused_scores(ood, features, feature_model, pooled)
                    score, furthest = float(fused[0]), names[0]
        reasons = review_reasons(score, threshold, furthest, disagreement)
        return {
            "calibrated_probabilities": calibrated,
            "ood_score": score,
            "needs_review": bool(reasons),
            "review_reasons": reasons,
        }

    @classmethod
    def build(cls, classifier: ModelRef, cell_model: ModelRef | None, seg, cfg: AppConfig, cache_dir: str) -> ScorePlan:
        """The plan for these classifiers and the resolved segmenter ``seg`` (``resolve_segmenter``).

        With ``score.runtime: tflite`` this converts a classifier version met for the first time
        (``scoring.tflite``: once, cached in ``cache_dir``, the lakehouse's ``Lakehouse.cache``), on
        the driver before any task starts.
        """
        record = seg.record
        runtime = cfg.score.runtime
        return cls(
            classifier.for_runtime(runtime, cache_dir),
            cell_model.for_runtime(runtime, cache_dir) if cell_model else None,
            seg.version,
            record.model_file if record else None,
            record.artifact_sha256 if record else None,
            seg.pixel_size_um,
            cfg.roi,
            cfg.segment,
            cfg.score.blast_threshold,
            cfg.score.tf_threads,
            cfg.score.classifier_batch,
            (cfg.score.disagreement_min_blasts, cfg.score.disagreement_max_blast_pct),
            PixelSizePolicy.from_ingest(cfg.ingest),
            record.spec_sha256 if record else None,
        )

    @property
    def model_files(self) -> list[tuple[str, str]]:
        """(path, SHA-256) of every model file this plan loads (slide classifier, cell classifier, U-Net)."""
        classifiers = [ref.serving() for ref in (self.classifier, self.cell_model) if ref]
        unet = [(self.segmenter_file, self.segmenter_sha256)] if self.segmenter_file and self.segmenter_sha256 else []
        return [*classifiers, *unet]

    def classifier_fns(self, freeze_after_load: bool = False) -> tuple[Callable, Callable | None]:
        """(slide classifier, cell classifier or None), each loaded once per process (``scoring.predict``)."""
        from allmtl_spark.scoring.predict import make_classifier_fn

        def load(ref: ModelRef) -> Callable:
            return make_classifier_fn(
                *ref.serving(), self.tf_threads, self.classifier_batch, freeze_after_load=freeze_after_load
            )

        return load(self.classifier), (load(self.cell_model) if self.cell_model else None)

    def models(self, freeze_after_load: bool = False) -> tuple[Callable | None, Callable, Callable | None]:
        """(U-Net or None, slide classifier, cell classifier or None), each loaded once per process."""
        from allmtl_spark.segmentation.predict import make_predict_fn

        unet = (
            make_predict_fn(
                self.segmenter_file,
                self.segmenter_sha256,
                self.tf_threads,
                freeze_after_load,
                spec_sha256=self.segmenter_spec_sha256,
            )
            if self.segmenter_file
            else None
        )
        return (unet, *self.classifier_fns(freeze_after_load=freeze_after_load))

    def score(
        self,
        image_rgb: np.ndarray,
        models: tuple,
        pixel_size_um: float | None = None,
        pixel_size_source: str | None = None,
    ) -> SlideScore:
        """One decoded slide (HxWx3 uint8 RGB) through segmentation, isolation and the classifiers.

        The one scoring path: the job's workers (``score_one``) and the MLflow slide scorer
        (``mlflow_models``) both run it, with ``models`` from :meth:`models`. The slide is resampled
        from ``pixel_size_um`` (its row's; None: estimated from its red cells, else the default, by
        ``pixel_policy``) to the segmenter's working pixel size.

        Raises:
            NoWhiteCells: no white cell was found (nothing to classify).
        """
        from allmtl_spark.scoring.pipeline import score_slide

        unet, classify, classify_cells = models
        pixel = self.pixel_policy.resolve(image_rgb, pixel_size_um, pixel_size_source)
        return score_slide(
            image_rgb,
            unet,
            classify,
            classify_cells,
            self.classifier.class_names,
            self.classifier.view,
            self.cell_model.view if self.cell_model else None,
            self.roi,
            self.segment,
            pixel.pixel_size_um,
            self.working_pixel_size_um,
            self.blast_threshold,
        )


@dataclass
class ScoreSummary:
    run_id: str
    model_version: str
    pending: int = 0
    scored: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    disagreements: dict[str, int] = field(default_factory=dict)  # slide_cell_disagreement -> slides this run
    reviews: dict[str, int] = field(default_factory=dict)  # review reason -> slides this run
    review_sites: dict[str, tuple[int, int]] = field(default_factory=dict)  # site -> (need review, scored)
    loads_per_worker: dict[int, int] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    report_path: str | None = None
    ingest: str | None = None
    chosen: list[str] = field(default_factory=list)  # which models scored, and the rule that chose each
    completed: list[str] = field(default_factory=list)  # earlier runs whose aggregates (and report) this run wrote
    scoring_seconds: float = 0.0  # the mapInPandas pass alone
    review_site_fraction: float = 0.5  # score.review_site_fraction: a site above it is called out
    seconds: float = 0.0

    @property
    def flagged(self) -> int:
        return sum(flagged for flagged, _ in self.review_sites.values())

    def review_lines(self) -> list[str]:
        """How many slides need review and why; every site with more than ``review_site_fraction`` flagged."""
        if not self.scored:
            return []
        lines = [
            f"  need review (out of the headline counts; allmtl review --run {self.run_id}): "
            f"{self.flagged} of {self.scored} slide(s)"
            + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.reviews.items())) if self.reviews else "")
        ]
        for site, (flagged, total) in sorted(self.review_sites.items()):
            if total and flagged / total > self.review_site_fraction:
                lines.append(
                    f"  site {site}: {flagged} of {total} slides need review: its slides look unlike the "
                    "model's training slides; do not use this run's calls for it without a look"
                )
        return lines

    def format(self) -> str:
        lines = [self.ingest] if self.ingest else []
        lines += self.chosen
        if self.completed:
            lines.append(f"finished earlier run(s) that had no aggregates: {', '.join(self.completed)}")
        if self.pending == 0:
            written = "aggregates of the earlier run(s) written" if self.completed else "nothing written"
            lines.append(
                f"scoring run {self.run_id}: nothing new to score for model {self.model_version} "
                f"({self.seconds:.0f}s); {written}"
            )
            return "\n".join(lines)
        lines.append(
            f"scoring run {self.run_id} with model {self.model_version}: {self.scored} slide(s) scored, "
            f"{sum(self.rejects.values())} rejected ({self.seconds:.0f}s)"
        )
        for reason, n in sorted(self.rejects.items()):
            lines.append(f"  rejected: {reason:<20} {n}")
        if self.counts:
            lines.append(
                "  predicted stage, this run (slides not needing review): "
                + ", ".join(f"{k} {v}" for k, v in self.counts.items())
            )
        if self.disagreements:
            lines.append(
                "  slide and cell classifiers disagree (slide_cell_disagreement; look at these slides): "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.disagreements.items()))
            )
        lines += self.review_lines()
        lines += [f"  {m}" for m in self.metrics]
        if self.loads_per_worker:
            loads = ", ".join(f"pid {pid}: {n}" for pid, n in sorted(self.loads_per_worker.items()))
            lines.append(
                f"  models loaded per Python worker: {loads}; peak worker RSS {self.peak_rss_bytes / 2**30:.2f} GiB"
            )
        if self.report_path:
            lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- worker side


def _row(kind: str, **values) -> dict:
    row = dict.fromkeys(_COLUMNS)
    row["row_kind"] = kind
    row.update(values)
    return row


def score_one(slide, plan: ScorePlan, models: Callable[[], tuple]) -> dict:
    """The ``score`` or ``reject`` row of one input slide (``content``, ``width``, ``height`` ...)."""
    from allmtl_spark.segmentation.pipeline import decode_rgb

    base = {
        "content_sha256": slide.content_sha256,
        "slide_id": slide.slide_id,
        "site": slide.site,
        "source_path": slide.source_path,
    }
    pixels = int(slide.width) * int(slide.height)
    if pixels > plan.segment.max_decoded_pixels:
        return _row(
            "reject",
            **base,
            reason="too_large_for_worker",
            detail=f"{slide.width}x{slide.height} exceeds segment.max_decoded_pixels="
            f"{plan.segment.max_decoded_pixels}; not decoded (retried on the next run, e.g. with a higher limit)",
        )
    try:
        image = decode_rgb(slide.content)
    except (ValueError, TypeError) as err:
        return _row("reject", **base, reason="decode_error", detail=f"the slide cannot be decoded: {err}")
    from allmtl_spark.scoring.pipeline import NoWhiteCells

    loaded = models()  # outside the per-slide guard: a bad model fails the job
    # Only two outcomes become rejects; any other error fails the task, so Spark retries it and, if it
    # keeps failing, the job stops with the error instead of skipping the slide for this version.
    try:
        result = plan.score(image, loaded, slide.pixel_size_um, slide.pixel_size_source)
    except MemoryError:  # retryable: the next run tries the slide again
        return _row(
            "reject",
            **base,
            reason="out_of_memory",
            detail=f"ran out of memory on a {slide.width}x{slide.height} slide (retried on the next run)",
        )
    except NoWhiteCells as err:  # permanent for this model version
        return _row("reject", **base, reason="no_white_cells", detail=f"{err}; nothing to classify")
    from allmtl_spark.scoring.pipeline import slide_cell_disagreement

    leukemia = bool(result.p_leukemia >= 0.5)
    disagreement = slide_cell_disagreement(
        leukemia, result.white_cell_count, result.blast_cell_count, *plan.disagreement
    )
    size = getattr(slide, "pixel_size_um", None)
    size = None if size is None or (isinstance(size, float) and np.isnan(size)) else float(size)
    return _row(
        "score",
        **base,
        probabilities=[float(p) for p in result.probabilities],
        predicted_class=result.predicted_class,
        p_leukemia=result.p_leukemia,
        predicted_leukemia=leukemia,
        white_cell_count=result.white_cell_count,
        blast_cell_count=result.blast_cell_count,
        blast_cell_pct=result.blast_cell_pct,
        slide_cell_disagreement=disagreement,
        **plan.trust(result, size, disagreement),
    )


def make_score_fn(plan: ScorePlan) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function. Models are loaded on first use in each worker and cached."""

    def models():
        # freeze: PySpark's gc.collect() after every task would otherwise walk all three models (0.2 s a task)
        return plan.models(freeze_after_load=True)

    def score_slides(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import resource

        import cv2

        from allmtl_spark.segmentation import predict as shared

        cv2.setNumThreads(1)  # one Spark task per core already
        sync_point("score:task")  # inert unless a reliability test holds this task
        start, done = time.perf_counter(), 0
        for batch in batches:
            rows = [score_one(slide, plan, models) for slide in batch.itertuples(index=False)]
            done += len(rows)
            yield pd.DataFrame(rows, columns=_COLUMNS, dtype=object)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        yield pd.DataFrame(
            [
                _row(
                    "stats",
                    pid=os.getpid(),
                    model_loads=shared.model_loads(plan.model_files),
                    max_rss_bytes=usage.ru_maxrss * 1024,
                    slides_done=done,
                    seconds=time.perf_counter() - start,
                )
            ],
            columns=_COLUMNS,
            dtype=object,
        )

    return score_slides


# ----------------------------------------------------------------------------- driver side


def model_ref(record: ModelRecord, chosen: str = "") -> ModelRef:
    """Hash-check an artifact on the driver (a corrupted model is refused before any task starts)."""
    path = verify_artifact(record)
    spec = record.spec()
    trust = {}
    if record.trust_sha256:
        from allmtl_spark.trust import read_trust

        trust = read_trust(record.artifact_path, record.trust_sha256, f"model {record.model_id}")
    view = spec.get("view") or {"kind": "montage", "size": record.input_size, "grid": 2}
    if record.stage == "stage2":  # cells from slides are already isolated on black
        view = {**view, "kind": "cell", "isolate": False}
    return ModelRef(
        record.model_id,
        path,
        record.artifact_sha256,
        tuple(record.class_names),
        ViewSpec(**view),
        chosen=chosen,
        temperature=trust.get("temperature"),
        ood=trust.get("ood"),
        feature_ood=trust.get("feature_ood"),
        ood_fused=trust.get("ood_fused"),
        recorded_tflite_sha256=record.tflite_sha256,
    )


def resolve_classifiers(spark: SparkSession, lake: Lakehouse, cfg: AppConfig) -> tuple[ModelRef, ModelRef | None]:
    """The stage-3 classifier and the stage-2 cell model (from the classifier's run when it has one).

    Each carries the rule that chose it (``ModelRef.chosen``): ``score.model: latest`` is the newest
    model of ``score.task`` and ``score.approach`` registered by a training run (``registry.choose_model``).
    """
    score = cfg.score
    latest = score.model == "latest"
    choice = choose_model(
        spark, lake, score.model, task=score.task, stage="stage3", approach=score.approach if latest else None
    )
    if latest:
        choice = ModelChoice(
            choice.record,
            f"score.model=latest, task {score.task}, approach {score.approach}: "
            + choice.reason.removeprefix("latest: "),
        )
    else:
        choice = ModelChoice(choice.record, f"score.model={score.model}: {choice.reason}")
    record = choice.record
    cell = None
    if score.cell_model:
        try:
            ref = record.run_id if score.cell_model == "latest" else score.cell_model
            if score.model.startswith("models:/") and score.cell_model == "latest":
                ref = bundled(score.model).get("allmtl.cell_model_id", ref)  # the one the MLflow model bundles
            cell = choose_model(spark, lake, ref, stage="stage2")
            if score.cell_model == "latest":
                cell = ModelChoice(cell.record, f"score.cell_model=latest: the stage-2 model of {ref}")
        except ArtifactError:
            if score.cell_model != "latest":
                raise
            try:
                cell = choose_model(spark, lake, "latest", stage="stage2")
            except ArtifactError:
                # No stage-2 model anywhere (e.g. a classical-only training run): slides are scored
                # without blast counts rather than not at all.
                log.warning("score.cell_model=latest: no stage-2 model in the lakehouse; scoring without a cell model")
                cell = None
            else:
                cell = ModelChoice(
                    cell.record,
                    f"score.cell_model=latest: run {record.run_id} has no stage-2 model; " + cell.reason,
                )
    return (
        model_ref(record, choice.describe("model")),
        model_ref(cell.record, cell.describe("cell model")) if cell else None,
    )


def segmenter_choice(seg, segment: SegmentConfig) -> str:
    """The printed line saying which segmenter scoring uses (``resolve_segmenter``'s result) and why."""
    if seg.record is None:
        return f"segmenter {seg.version}: segment.mask_source=roi (the threshold ROI, no U-Net)"
    return f"segmenter {seg.version} (run {seg.record.run_id}): segment.segmenter={segment.segmenter}"


def bundled(uri: str) -> dict[str, str]:
    """The tags of an MLflow registry version (``models:/...``): which cell model and segmenter its pyfunc bundles.

    With ``score.model`` such a URI, scoring uses the same ones (unless ``score.cell_model`` or
    ``segment.segmenter`` name others), so the job and ``mlflow.pyfunc.spark_udf`` agree.
    """
    from allmtl_spark.mlflow_models import version_tags

    return version_tags(uri)


def pending_keys(spark: SparkSession, lake: Lakehouse, model_version: str, source_prefix: str | None) -> list[str]:
    """Slides with no ``slide_scores`` row and no permanent ``score`` reject for this model version.

    Retryable rejects (out of memory, over the decode limit) are pending again: every run retries them.
    """
    slides = read_table(spark, lake, tables.SLIDES)
    if source_prefix:
        slides = slides.where(
            F.col("source_path").startswith(source_prefix)
            | F.exists("duplicate_paths", lambda p: p.startswith(source_prefix))
        )
    scored = read_table(spark, lake, tables.SLIDE_SCORES).where(F.col("model_version") == model_version)
    failed = read_table(spark, lake, tables.REJECTS).where(
        (F.col("stage") == STAGE)
        & (F.col("version") == model_version)
        & F.col("content_sha256").isNotNull()
        & ~retryable_column(STAGE)
    )
    pending = (
        slides.select("content_sha256")
        .join(scored.select("content_sha256"), "content_sha256", "left_anti")
        .join(failed.select("content_sha256"), "content_sha256", "left_anti")
    )
    return sorted(r[0] for r in pending.collect())


def input_slides(
    spark: SparkSession, lake: Lakehouse, keys: list[str], per_partition: int, max_pixels: int
) -> DataFrame:
    """The slides of ``keys``, ``per_partition`` to a task (``partitioning``).

    The keys come as local data rather than a join with ``slide_scores``: Delta recomputes cached
    plans that read a table it commits to, so such a plan would be re-run by this job's own writes.
    """
    within = F.col("width").cast("long") * F.col("height").cast("long") <= max_pixels
    slides = read_table(spark, lake, tables.SLIDES)
    return spread_over_tasks(spark, slides, keys, per_partition, "content_sha256").select(
        "content_sha256",
        "slide_id",
        "site",
        "source_path",
        "width",
        "height",
        F.when(within, F.col("content")).alias("content"),
        "pixel_size_um",
        "pixel_size_source",
    )


def run_score(
    spark: SparkSession, cfg: AppConfig, lake: Lakehouse, run_id: str | None = None, report: bool = True
) -> ScoreSummary:
    """Ingest the configured source (if any), score what is new for the model, write and report.

    Args:
        spark: the session (driver only).
        cfg: the app config (sections score, segment, roi, ingest, privacy).
        lake: the lakehouse.
        run_id: recorded on every row; a new one by default.
        report: write the HTML report (and Grad-CAM figures) for this run.

    Raises:
        ArtifactError: no such model, or an artifact fails its hash check.
    """
    from allmtl_spark.segmentation.job import resolve_segmenter

    assert_on_driver()
    started = time.perf_counter()
    run_id = check_run_id(run_id) if run_id else f"score-{uuid.uuid4().hex[:10]}"
    lake.check_writable()
    summary_ingest, prefix = _ingest_source(spark, cfg, lake, run_id)
    classifier, cell_model = resolve_classifiers(spark, lake, cfg)
    segment = cfg.segment
    if cfg.score.model.startswith("models:/") and segment.segmenter == "latest" and segment.mask_source == "unet":
        segment = replace(segment, segmenter=bundled(cfg.score.model).get("allmtl.segmenter_version", "latest"))
    seg = resolve_segmenter(spark, lake, segment, cfg.roi)
    chosen = [ref.chosen for ref in (classifier, cell_model) if ref] + [segmenter_choice(seg, segment)]
    for line in chosen:
        log.info("scoring run %s: %s", run_id, line)
    summary = ScoreSummary(
        run_id=run_id,
        model_version=classifier.model_id,
        ingest=summary_ingest,
        chosen=chosen,
        review_site_fraction=cfg.score.review_site_fraction,
    )
    keys = pending_keys(spark, lake, classifier.model_id, prefix)
    summary.pending = len(keys)
    plan = None
    if keys:
        plan = ScorePlan.build(classifier, cell_model, seg, cfg, lake.cache)
        record_conversions(spark, lake, plan)
        rows = input_slides(spark, lake, keys, cfg.score.slides_per_partition, cfg.segment.max_decoded_pixels)
        rows = rows.mapInPandas(make_score_fn(plan), SCORE_ROWS).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            scoring_started = time.perf_counter()
            rows.count()  # scores once; the writes below read the persisted rows
            summary.scoring_seconds = time.perf_counter() - scoring_started
            _write(spark, lake, rows, plan, run_id)
            _summarise(rows, summary)
        finally:
            rows.unpersist()
        if summary.scored:
            summary.metrics, summary.report_path = finish_run(spark, lake, cfg, plan, run_id, report)
    summary.completed = complete_earlier_runs(spark, lake, cfg, report, plan or (classifier, cell_model, seg), run_id)
    summary.seconds = time.perf_counter() - started
    return summary


def record_conversions(spark: SparkSession, lake: Lakehouse, plan: ScorePlan) -> None:
    """Record in ``models`` the hashes of the plan's TFLite conversions not recorded yet, in one commit."""
    from allmtl_spark.registry import record_conversions as record

    record(
        spark,
        lake,
        [
            (resolve_model(spark, lake, ref.model_id), ref.serving_sha256)
            for ref in (plan.classifier, plan.cell_model)
            if ref is not None and ref.runtime == "tflite" and ref.serving_sha256 != ref.recorded_tflite_sha256
        ],
    )


def finish_run(
    spark: SparkSession, lake: Lakehouse, cfg: AppConfig, plan: ScorePlan, run_id: str, report: bool
) -> tuple[list[str], str | None]:
    """Aggregates and report of a run whose ``slide_scores`` are written: (printable lines, report path).

    The report is written before the aggregates are committed, so committed aggregates mean a finished
    run: a driver that dies before this commit leaves the run for the next run to finish.
    """
    from allmtl_spark.scoring.aggregates import commit_aggregates, compute_aggregates, summary_lines

    table = compute_aggregates(
        spark, lake, cfg.score, plan.classifier.model_id, list(plan.classifier.class_names), run_id
    )
    path = None
    if report:
        from allmtl_spark.scoring.report import write_run_report

        path = write_run_report(spark, lake, cfg, plan, run_id, table)
    commit_aggregates(spark, lake, table)
    return summary_lines(table), path


def unfinished_runs(spark: SparkSession, lake: Lakehouse, exclude: str | None = None) -> list[tuple[str, str]]:
    """(run id, model version) of every scoring run with ``slide_scores`` rows but no ``score_aggregates``."""
    key = ["scoring_run_id", "model_version"]
    scored = read_table(spark, lake, tables.SLIDE_SCORES).select(*key).distinct()
    finished = read_table(spark, lake, tables.SCORE_AGGREGATES).select(*key).distinct()
    missing = scored.join(finished, key, "left_anti").where(F.col("scoring_run_id") != F.lit(exclude or ""))
    return sorted((r["scoring_run_id"], r["model_version"]) for r in missing.collect())


def complete_earlier_runs(
    spark: SparkSession, lake: Lakehouse, cfg: AppConfig, report: bool, current, run_id: str
) -> list[str]:
    """Finish every earlier run that wrote scores but not its aggregates (its driver died between commits).

    Args:
        current: this run's ``ScorePlan``, or (classifier, cell model, segmenter) when it scored
            nothing; reused for earlier runs of the same versions.

    Returns:
        The ids of the runs finished here.
    """
    done = []
    for earlier, version in unfinished_runs(spark, lake, exclude=run_id):
        log.info("scoring run %s (model %s) has no aggregates: finishing it now", earlier, version)
        try:
            plan = _plan_for(spark, lake, cfg, current, earlier, version) if report else None
        except ArtifactError as err:  # its model is gone: the aggregates need none, the report does
            log.warning("no report for run %s: %s", earlier, err)
            plan = None
        if plan is None:
            from allmtl_spark.scoring.aggregates import commit_aggregates, compute_aggregates

            record = resolve_model(spark, lake, version)
            commit_aggregates(
                spark, lake, compute_aggregates(spark, lake, cfg.score, version, record.class_names, earlier)
            )
        else:
            finish_run(spark, lake, cfg, plan, earlier, report)
        done.append(earlier)
    return done


def _plan_for(spark: SparkSession, lake: Lakehouse, cfg: AppConfig, current, run_id: str, version: str) -> ScorePlan:
    """The plan that scored ``run_id``'s rows (its classifier, cell model and segmenter versions), for its report."""
    from allmtl_spark.segmentation.job import resolve_segmenter

    row = (
        read_table(spark, lake, tables.SLIDE_SCORES)
        .where((F.col("scoring_run_id") == run_id) & (F.col("model_version") == version))
        .select("segmenter_version", "cell_model_version")
        .first()
    )
    if isinstance(current, ScorePlan):
        classifier, cell_model, seg_version = current.classifier, current.cell_model, current.segmenter_version
        same = (classifier.model_id, cell_model.model_id if cell_model else None, seg_version) == (
            version,
            row["cell_model_version"],
            row["segmenter_version"],
        )
        if same:
            return current
    classifier = model_ref(resolve_model(spark, lake, version))
    cell = model_ref(resolve_model(spark, lake, row["cell_model_version"])) if row["cell_model_version"] else None
    segment = (
        replace(cfg.segment, mask_source="roi")
        if row["segmenter_version"].startswith("roi-")
        else replace(cfg.segment, mask_source="unet", segmenter=row["segmenter_version"])
    )
    seg = resolve_segmenter(spark, lake, segment, cfg.roi)
    return ScorePlan.build(classifier, cell, seg, cfg, lake.cache)


def source_for_path(path: str, configured: SourceConfig | None = None) -> SourceConfig:
    """``score.source`` for ``allmtl score --source PATH``: a ``.csv`` is a manifest, anything else a folder.

    A configured source of the same kind keeps its other keys (site, patient_pattern, labels, pixel sizes).
    """
    kind = "manifest" if path.lower().endswith(".csv") else "folder"
    if configured is not None and configured.kind == kind:
        return replace(configured, path=path)
    return SourceConfig(kind=kind, path=path)


def _ingest_source(spark: SparkSession, cfg: AppConfig, lake: Lakehouse, run_id: str) -> tuple[str | None, str | None]:
    """Ingest ``score.source`` through the ingest code path; returns its summary and path prefix."""
    if cfg.score.source is None:
        return None, None
    from allmtl_spark.ingest.job import run_ingest
    from allmtl_spark.ingest.sources import qualify

    ingest_cfg = replace(cfg.ingest, sources=(cfg.score.source,))
    summary = run_ingest(spark, ingest_cfg, cfg.privacy, lake, run_id=f"{run_id}-ingest")
    root = qualify(spark, cfg.score.source.path)[0]
    if cfg.score.source.kind == "manifest":
        root = root.rsplit("/", 1)[0]
    return summary.format(), root.rstrip("/") + "/"


def _write(spark: SparkSession, lake: Lakehouse, rows: DataFrame, plan: ScorePlan, run_id: str) -> None:
    scores = rows.where(F.col("row_kind") == "score").select(
        "*",
        F.lit(plan.classifier.model_id).alias("model_version"),
        F.lit("fab4" if len(plan.classifier.class_names) == 4 else "binary").alias("task"),
        F.array(*[F.lit(c) for c in plan.classifier.class_names]).alias("class_names"),
        F.lit(plan.segmenter_version).alias("segmenter_version"),
        F.lit(plan.cell_model.model_id if plan.cell_model else None).cast("string").alias("cell_model_version"),
        F.lit(run_id).alias("scoring_run_id"),
        F.current_timestamp().alias("scored_at"),
        F.lit(plan.classifier.runtime).alias("runtime"),
        F.lit(plan.classifier.serving()[1]).alias("model_file_sha256"),
        F.lit(plan.cell_model.serving()[1] if plan.cell_model else None).cast("string").alias("cell_model_file_sha256"),
        F.lit(plan.classifier.temperature).cast("double").alias("temperature"),
    )
    merge_new_rows(spark, lake, tables.SLIDE_SCORES, scores)
    rejects = reject_rows(
        rows.where(F.col("row_kind") == "reject"),
        stage=STAGE,
        run_id=run_id,
        version=plan.classifier.model_id,
        path_col="source_path",
        sha_col="content_sha256",
    )
    merge_rejects(spark, lake, rejects, STAGE)
    # slides that were retryable rejects of this version and are scored now: their rejects are resolved
    resolve_retried(spark, lake, scores.select("content_sha256", F.col("model_version").alias("version")), STAGE)


def _summarise(rows: DataFrame, summary: ScoreSummary) -> None:
    small = rows.select(
        "row_kind",
        "predicted_class",
        "reason",
        "pid",
        "model_loads",
        "max_rss_bytes",
        "slide_cell_disagreement",
        "site",
        "needs_review",
        "review_reasons",
    ).collect()
    sites: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    loads: dict[int, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for row in small:
        if row["row_kind"] == "score":
            summary.scored += 1
            if not row["needs_review"]:  # the headline counts: slides whose score applies
                counts[row["predicted_class"]] += 1
            if row["slide_cell_disagreement"]:
                reason = row["slide_cell_disagreement"]
                summary.disagreements[reason] = summary.disagreements.get(reason, 0) + 1
            site = sites[row["site"] or "unknown"]
            site[1] += 1
            if row["needs_review"]:
                site[0] += 1
                for reason in row["review_reasons"] or []:
                    summary.reviews[reason] = summary.reviews.get(reason, 0) + 1
        elif row["row_kind"] == "reject":
            summary.rejects[row["reason"]] = summary.rejects.get(row["reason"], 0) + 1
        else:
            loads[int(row["pid"])] = max(loads[int(row["pid"])], int(row["model_loads"]))
            summary.peak_rss_bytes = max(summary.peak_rss_bytes, int(row["max_rss_bytes"] or 0))
    summary.loads_per_worker = dict(loads)
    summary.review_sites = {site: (flagged, total) for site, (flagged, total) in sites.items()}
    summary.counts = dict(sorted(counts.items()))
