"""At registration: the temperature (validation part only) and a slide classifier's out-of-distribution check.

Thin driver code around the pure functions of ``metrics.calibration`` and ``trust``; writes
``trust.json`` beside the model (its SHA-256 goes to ``models.trust_sha256``) and the temperature
into ``model.json``. The test part is only measured (``test_ece``, ``test_ece_calibrated``,
``test_ood_flagged`` of ``test_ood_n`` slides), never fitted on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from allmtl_spark.registry import SPEC_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustFit:
    temperature: float | None = None
    sha256: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    summary: str = ""


def slide_statistics(spark, lake, keys: list[str], segmenter: str) -> dict[str, tuple[int | None, float | None]]:
    """content_sha256 -> (white cells the segmenter found, pixel size in um) for ``keys``."""
    from pyspark.sql import functions as F

    from allmtl_spark import tables
    from allmtl_spark.lakehouse import read_table

    slides = read_table(spark, lake, tables.SLIDES).where(F.col("content_sha256").isin(keys))
    size = F.col("pixel_size_um") if "pixel_size_um" in slides.columns else F.lit(None).cast("double")
    counts = (
        read_table(spark, lake, tables.SEGMENTED_SLIDES)
        .where((F.col("segmenter_version") == segmenter) & F.col("content_sha256").isin(keys))
        .select("content_sha256", "cell_count")
    )
    rows = slides.select("content_sha256", size.alias("pixel_size_um")).join(counts, "content_sha256", "left")
    return {r["content_sha256"]: (r["cell_count"], r["pixel_size_um"]) for r in rows.collect()}


def _features(arrays, stats: dict) -> np.ndarray:
    from allmtl_spark.trust import ood_features

    rows = []
    for key, image in zip(arrays.keys, arrays.images, strict=True):
        count, size = stats.get(key, (None, None))
        rows.append(ood_features(image, count if count is not None else 0, size))
    return np.array(rows)


def _pooled_features(output_dir: str, parts: list) -> list[np.ndarray] | None:
    """The saved classifier's pooled features of each image array in ``parts``; None without a ``pool`` layer."""
    from allmtl_spark.checksums import load_keras
    from allmtl_spark.scoring.predict import keras_predict

    with open(os.path.join(output_dir, "model.h5"), "rb") as handle:
        predict = keras_predict(load_keras(handle.read()), 16)
    out = [predict.with_features(np.asarray(images))[1] for images in parts]
    return None if any(f is None for f in out) else out


def fit_trust(
    spark, lake, cfg, data, plan, outputs: dict, output_dir: str, segmenter: str, with_ood: bool = True
) -> TrustFit:
    """Fit the temperature on ``outputs['val']`` and, for a stage-3 model, the OOD check; write ``trust.json``.

    Args:
        cfg: the ``train`` section (``ood_pass_fraction``, ``calibration_bins``).
        data: the run's data cache (``numpy(task, 'train')``: the training part's original views).
        outputs: part -> (arrays, class scores) as ``training.job._evaluate`` computed them.
        with_ood: fit the out-of-distribution check (stage 3). False for models no job ever scores with
            (cross-validation folds, tuning grids): their calibration is measured, the check would cost
            a pooled-feature pass over the training views for nothing.
    """
    from allmtl_spark.metrics.calibration import apply_temperature, compute_ece, ece_floor, fit_temperature
    from allmtl_spark.trust import fit_feature_ood, fit_fused, fit_ood, flagged_by_fused, write_trust

    if "val" not in outputs:
        log.warning("[%s] no validation part: no temperature and no out-of-distribution check fitted", plan.key)
        return TrustFit(summary="no validation part: not calibrated, no out-of-distribution check")
    arrays, scores = outputs["val"]
    bins = cfg.calibration_bins
    temperature = fit_temperature(arrays.labels, scores)
    metrics = {"temperature": temperature}
    for part, (part_arrays, part_scores) in outputs.items():
        metrics[f"{part}_ece"] = compute_ece(part_arrays.labels, part_scores, bins)
        calibrated = apply_temperature(part_scores, temperature)
        metrics[f"{part}_ece_calibrated"] = compute_ece(part_arrays.labels, calibrated, bins)
        # what a perfectly calibrated model would measure here: the ECE's sampling noise at this n
        metrics[f"{part}_ece_floor"], metrics[f"{part}_ece_floor_p95"] = ece_floor(calibrated, bins)
    content: dict = {
        "temperature": temperature,
        "calibration": {
            "fitted_on": "val",
            "n_val": len(arrays.labels),
            "bins": bins,
            **{k: v for k, v in metrics.items() if k != "temperature"},
        },
    }
    ece = f"{metrics['val_ece']:.3f} -> {metrics['val_ece_calibrated']:.3f}"
    summary = f"temperature {temperature:.3f} (validation ECE {ece}, fitted there"
    if "test_ece" in metrics:
        summary += f"; held-out test ECE {metrics['test_ece']:.3f} -> {metrics['test_ece_calibrated']:.3f}"
    summary += ")"
    if plan.stage == "stage3" and not with_ood:
        summary += "; no out-of-distribution check (a cross-validation or tuning model: never used to score)"
    elif plan.stage == "stage3":
        train = data.numpy(plan.task, "train")
        test = outputs["test"][0] if "test" in outputs else None
        keys = set(train.keys) | set(arrays.keys) | (set(test.keys) if test is not None else set())
        stats = slide_statistics(spark, lake, sorted(keys), segmenter)
        try:
            input_train, input_val = _features(train, stats), _features(arrays, stats)
            ood = fit_ood(input_train, input_val, cfg.ood_pass_fraction, range_margin=cfg.ood_range_margin)
            content["ood"] = ood.to_dict()
            summary += (
                f"; out-of-distribution thresholds {ood.threshold:.2f} (distance), {ood.range_threshold:.2f} "
                f"(range) ({len(train.keys)} training slides)"
            )
        except ValueError as err:  # too few slides: scoring then flags on disagreement only
            log.warning("[%s] no out-of-distribution check: %s", plan.key, err)
            summary += f"; no out-of-distribution check ({err})"
        else:
            parts = [train.images, arrays.images] + ([test.images] if test is not None else [])
            pooled = _pooled_features(output_dir, parts) if cfg.ood_feature_check else None
            feature_ood = None
            if pooled is not None:
                feature_ood = fit_feature_ood(pooled[0], np.asarray(train.labels), pooled[1], cfg.ood_pass_fraction)
                content["feature_ood"] = feature_ood.to_dict()
                summary += (
                    f"; pooled-feature check on {len(feature_ood.components)} principal components, threshold "
                    f"{feature_ood.threshold:.2f}"
                )
            fused = fit_fused(ood, input_val, feature_ood, pooled[1] if pooled is not None else None)
            content["ood_fused"] = fused.to_dict()
            summary += f"; fused threshold {fused.threshold:.2f}"
            if test is not None:  # measured only: how many held-out in-distribution slides the check flags
                test_pooled = pooled[2] if pooled is not None else None
                flagged = int(flagged_by_fused(fused, ood, _features(test, stats), feature_ood, test_pooled).sum())
                metrics["test_ood_flagged"], metrics["test_ood_n"] = float(flagged), float(len(test.keys))
                summary += f"; held-out test slides it flags {flagged}/{len(test.keys)}"
    sha = write_trust(output_dir, content)
    spec_path = os.path.join(output_dir, SPEC_FILE)
    with open(spec_path) as handle:
        spec = json.load(handle)
    spec["calibration"] = {"temperature": temperature, "fitted_on": "val", "trust_sha256": sha}
    tmp = spec_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(spec, handle, indent=2, sort_keys=True, default=str)
    os.replace(tmp, spec_path)
    return TrustFit(temperature, sha, metrics, summary)
