"""Metrics and significance tests: pure numpy / scipy / scikit-learn / statsmodels, no Spark.

Spark only gathers the small prediction table; these functions run on the driver.
"""

from __future__ import annotations

from allmtl_spark.metrics.classification import (
    AveragedMetrics,
    BootstrapCI,
    ClassificationReport,
    ConfusionMatrix,
    RocCurve,
    RocResult,
    compute_bootstrap_ci,
    compute_classification_metrics,
    compute_confusion,
    compute_metrics_from_confusion,
    compute_roc,
)
from allmtl_spark.metrics.stats import (
    AucDifferenceResult,
    McNemarResult,
    TestResult,
    compare_scores,
    compute_auc_difference_test,
    compute_corrected_resampled_t,
    compute_detectable_difference,
    compute_mcnemar,
    compute_paired_t,
    compute_student_t,
    compute_welch_t,
)

__all__ = [
    "AucDifferenceResult",
    "AveragedMetrics",
    "BootstrapCI",
    "ClassificationReport",
    "ConfusionMatrix",
    "McNemarResult",
    "RocCurve",
    "RocResult",
    "TestResult",
    "compare_scores",
    "compute_auc_difference_test",
    "compute_bootstrap_ci",
    "compute_classification_metrics",
    "compute_confusion",
    "compute_corrected_resampled_t",
    "compute_detectable_difference",
    "compute_mcnemar",
    "compute_metrics_from_confusion",
    "compute_paired_t",
    "compute_roc",
    "compute_student_t",
    "compute_welch_t",
]
