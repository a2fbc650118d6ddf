"""When not to trust a score: the out-of-distribution check and review reasons (pure numpy / OpenCV / scikit-learn).

A slide classifier carries ``trust.json`` in its artifact folder (SHA-256 in ``models.trust_sha256``,
checked before use), written when the model is registered:

- ``temperature``: temperature scaling fitted on the validation part of the model's split
  (``metrics.calibration.fit_temperature``); scoring reports ``softmax(log p / T)``.
- ``ood``: the distribution of simple slide statistics over the training part (``OOD_FEATURES``:
  stain colour, contrast and sharpness of the classifier's input, how much of it is cells, the
  white-cell count, the pixel size), as a mean and a Ledoit-Wolf covariance (``sklearn.covariance``:
  a shrunk estimate, stable with a few hundred slides and correlated colour channels). A slide's
  ``ood_score`` is its Mahalanobis distance to that distribution; the threshold is the
  ``train.ood_pass_fraction`` quantile of the validation slides' scores (0.95: 95% of in-distribution
  validation slides pass). Nothing is chosen on test slides.
- ``feature_ood``: the classifier's pooled features of the training slides (``FeatureOodModel``:
  class means and a shared covariance on the first principal components), thresholded the same way.
- a range check of the same statistics (``OodModel.range_score``): how far the furthest statistic lies
  beyond the training slides' range, in training standard deviations; its threshold is the validation
  quantile or ``train.ood_range_margin``, whichever is larger. One statistic far off (a pixel size
  beyond any in training) counts here in full, where the Mahalanobis distance dilutes it.
- ``ood_fused``: ``ood_score`` is the largest of the checks' scores, each divided by its own
  threshold, and this threshold (again a validation quantile) keeps the union of the checks at
  ``pass_fraction`` (``FusedOod``).

A scored slide needs review when its ``ood_score`` is above the threshold (reason
``out_of_distribution:<statistic>``: the one contributing most to the distance or lying furthest
outside its training range; ``out_of_distribution:features`` when the feature check is the furthest
beyond its threshold) or when the slide and cell classifiers disagree (``slide_cell_disagreement:<code>``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

TRUST_FILE = "trust.json"
OOD_FEATURES = (
    "stain_red",
    "stain_green",
    "stain_blue",
    "contrast",
    "sharpness",
    "cell_fraction",
    "white_cell_count",
    "pixel_size",
)
OUT_OF_DISTRIBUTION = "out_of_distribution"
DISAGREEMENT = "slide_cell_disagreement"
_BLACK = 8  # grey level below which a pixel of an isolated view is backdrop


def view_statistics(view: np.ndarray) -> np.ndarray:
    """Colour, contrast, sharpness and cell fraction of a classifier input (size x size x 3 uint8 RGB, cells on black).

    Returns:
        (6,) float: mean R, G, B of the cell pixels (0..1), grey standard deviation of the cell
        pixels (0..1), log(1 + variance of the Laplacian) inside the cells (blur lowers it), and
        the fraction of the view that is cells. A view without cell pixels gives zeros.
    """
    rgb = np.asarray(view, dtype=np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cells = grey > _BLACK
    if not cells.any():
        return np.zeros(6)
    pixels = rgb[cells].astype(float) / 255.0
    inner = cv2.erode(cells.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # away from the black edge
    laplacian = cv2.Laplacian(grey.astype(np.float64) / 255.0, cv2.CV_64F)
    sharp = float(np.log1p(1e3 * laplacian[inner].var())) if inner.sum() > 1 else 0.0
    return np.array([*pixels.mean(axis=0), float(grey[cells].std()) / 255.0, sharp, float(cells.mean())])


def ood_features(view: np.ndarray, white_cell_count: int, pixel_size_um: float | None) -> np.ndarray:
    """The ``OOD_FEATURES`` of one slide: ``view_statistics``, log(1 + white cells), log pixel size (NaN if unknown)."""
    size = math.log(pixel_size_um) if pixel_size_um and pixel_size_um > 0 else float("nan")
    return np.array([*view_statistics(view), math.log1p(max(int(white_cell_count), 0)), size])


@dataclass(frozen=True)
class OodModel:
    """The training slides' statistics and the validation threshold (stored in ``trust.json``)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]  # training standard deviation per feature (1 where constant)
    precision: tuple[tuple[float, ...], ...]  # inverse Ledoit-Wolf covariance of the standardised features
    threshold: float  # ood_score above this: out of distribution
    pass_fraction: float
    n_train: int
    n_val: int
    # Per statistic, the training slides' lowest and highest standardised value, and the range check's
    # threshold (standard deviations beyond them); empty in models fitted before the range check.
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    range_threshold: float = float("inf")

    def _z(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        mean = np.asarray(self.mean)
        x = np.where(np.isnan(x), mean, x)  # an unknown statistic (no pixel size) counts as typical
        return (x - mean) / np.asarray(self.scale)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``x`` (n, features) to the training slides."""
        z = self._z(x)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, np.asarray(self.precision), z), 0.0))

    def furthest(self, x: np.ndarray) -> list[str]:
        """Per row, the feature contributing most to the squared distance (``z_i (P z)_i``), named for the reason."""
        z = self._z(x)
        return [self.features[int(i)] for i in (z * (z @ np.asarray(self.precision))).argmax(axis=1)]

    @property
    def has_range(self) -> bool:
        return len(self.low) == len(self.features)

    def _beyond(self, x: np.ndarray) -> np.ndarray:
        """(n, features): how far each statistic lies outside the training range, in training standard deviations."""
        z = self._z(x)
        return np.maximum(0.0, np.maximum(z - np.asarray(self.high), np.asarray(self.low) - z))

    def range_score(self, x: np.ndarray) -> np.ndarray:
        """Per row, the largest distance of one statistic beyond the training slides' range (0: all inside).

        The Mahalanobis distance spreads one far-off statistic over all of them: a pixel size 1.5x
        beyond the largest in training moved it less than the spread of eight in-distribution
        statistics. This check sees each statistic on its own.
        """
        return self._beyond(x).max(axis=1)

    def range_furthest(self, x: np.ndarray) -> list[str]:
        """Per row, the statistic furthest beyond its training range."""
        return [self.features[int(i)] for i in self._beyond(x).argmax(axis=1)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OodModel:
        arrays = {k: _frozen(data[k]) for k in ("features", "mean", "scale", "precision")}
        ranges = {k: _frozen(data[k]) for k in ("low", "high") if k in data}
        if "range_threshold" in data:
            ranges["range_threshold"] = float(data["range_threshold"])
        return cls(**arrays, **ranges, **_threshold_fields(data))


def _frozen(value):
    """JSON lists back to the (nested) tuples a frozen model holds."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _threshold_fields(data: dict) -> dict:
    """The threshold and sample sizes both OOD models store, with their types."""
    return {
        "threshold": float(data["threshold"]),
        "pass_fraction": float(data["pass_fraction"]),
        "n_train": int(data["n_train"]),
        "n_val": int(data["n_val"]),
    }


def fit_ood(
    train: np.ndarray,
    val: np.ndarray,
    pass_fraction: float = 0.95,
    features: tuple[str, ...] = OOD_FEATURES,
    range_margin: float = 0.5,
) -> OodModel:
    """Fit the training distribution (Ledoit-Wolf) and threshold at the ``pass_fraction`` quantile of ``val``'s scores.

    Args:
        train: (n, features) statistics of the training slides (NaN: unknown, replaced by the median).
        val: (m, features) of the validation slides (in distribution, never used for the fit itself).
        pass_fraction: the share of validation slides that must pass (``train.ood_pass_fraction``).
        range_margin: the range check's smallest threshold, in training standard deviations beyond the
            training range (``train.ood_range_margin``): most validation slides lie inside the range,
            so their quantile alone would often be 0 and flag any slide a hair outside it.

    Raises:
        ValueError: fewer than 3 training or 1 validation slides, pass_fraction outside (0, 1], or
            columns that do not match ``features``.
    """
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=float)
    val = np.asarray(val, dtype=float)
    if len(train) < 3 or len(val) < 1:
        raise ValueError(f"fit_ood needs >= 3 training and >= 1 validation slides; got {len(train)} and {len(val)}")
    if train.ndim != 2 or train.shape[1] != len(features) or val.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"expected (n, {len(features)}) statistics ({', '.join(features)}); got {train.shape}, {val.shape}"
        )
    if not 0 < pass_fraction <= 1:
        raise ValueError(f"pass_fraction must be in (0, 1]; got {pass_fraction}")
    if not range_margin >= 0:
        raise ValueError(f"range_margin must be >= 0; got {range_margin}")
    median = np.nanmedian(train, axis=0)
    median = np.where(np.isnan(median), 0.0, median)
    filled = np.where(np.isnan(train), median, train)
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    standardised = (filled - mean) / scale
    covariance = LedoitWolf().fit(standardised).covariance_
    precision = np.linalg.pinv(covariance)
    provisional = OodModel(
        tuple(features),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(tuple(float(v) for v in row) for row in precision),
        float("inf"),
        float(pass_fraction),
        len(train),
        len(val),
        tuple(float(v) for v in standardised.min(axis=0)),
        tuple(float(v) for v in standardised.max(axis=0)),
    )
    threshold = float(np.quantile(provisional.score(val), pass_fraction, method="higher"))
    range_threshold = max(
        float(range_margin), float(np.quantile(provisional.range_score(val), pass_fraction, method="higher"))
    )
    return replace(provisional, threshold=threshold, range_threshold=range_threshold)


FEATURES = "features"  # the reason suffix of the feature check (``out_of_distribution:features``)
# Principal components of the pooled features kept: 32 (trust.json stays ~1 MB for 2048 features), or
# n_train - 1 when fewer slides. Not "enough for 95 % of the variance": on the demo's InceptionV3
# that was one component (the overall activation level), which describes no class.
MAX_COMPONENTS = 32


@dataclass(frozen=True)
class FeatureOodModel:
    """Where the training slides' pooled features lie (stored in ``trust.json`` as ``feature_ood``).

    Class-conditional Gaussians with one shared covariance (Lee et al. 2018, "A simple unified
    framework for detecting out-of-distribution samples"), in the space of the first principal
    components of the training features: a slide's score is its smallest Mahalanobis distance to a
    class mean. The shared covariance is a Ledoit-Wolf estimate of the within-class scatter.
    """

    mean: tuple[float, ...]  # (d,) training mean of the pooled features
    components: tuple[tuple[float, ...], ...]  # (p, d) principal directions
    class_means: tuple[tuple[float, ...], ...]  # (k, p) per training class present, in component space
    precision: tuple[tuple[float, ...], ...]  # (p, p) inverse shared within-class covariance
    threshold: float  # score above this: out of distribution (``pass_fraction`` quantile of validation)
    pass_fraction: float
    n_train: int
    n_val: int

    def score(self, features: np.ndarray) -> np.ndarray:
        """Per row of ``features`` (n, d): the Mahalanobis distance to the nearest training class."""
        f = np.atleast_2d(np.asarray(features, dtype=float))
        z = (f - np.asarray(self.mean)) @ np.asarray(self.components).T
        diff = z[:, None, :] - np.asarray(self.class_means)[None]
        squared = np.einsum("nkp,pq,nkq->nk", diff, np.asarray(self.precision), diff)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def arrays(self) -> FeatureOodModel:
        """The same model holding numpy arrays instead of tuples (scores without converting them each call)."""
        fields = {k: np.asarray(getattr(self, k)) for k in ("mean", "components", "class_means", "precision")}
        return replace(self, **fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureOodModel:
        arrays = {k: _frozen(data[k]) for k in ("mean", "components", "class_means", "precision")}
        return cls(**arrays, **_threshold_fields(data))


def fit_feature_ood(
    train: np.ndarray, labels: np.ndarray, val: np.ndarray, pass_fraction: float = 0.95
) -> FeatureOodModel:
    """Fit class means and a shared covariance of the training features; threshold on ``val``.

    Args:
        train: (n, d) pooled features of the training slides (original views).
        labels: (n,) their class indices.
        val: (m, d) pooled features of the validation slides (only the threshold comes from them).
        pass_fraction: the share of validation slides that must pass (``train.ood_pass_fraction``).

    The features are projected on their first ``MAX_COMPONENTS`` principal components (at most
    n - 1), a fixed number, never chosen on out-of-distribution examples.

    Raises:
        ValueError: fewer than 3 training or 1 validation slides, mismatched shapes, pass_fraction outside (0, 1].
    """
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=float)
    val = np.asarray(val, dtype=float)
    labels = np.asarray(labels)
    if len(train) < 3 or len(val) < 1:
        raise ValueError(
            f"fit_feature_ood needs >= 3 training and >= 1 validation slides; got {len(train)}, {len(val)}"
        )
    if train.ndim != 2 or val.ndim != 2 or val.shape[1] != train.shape[1] or labels.shape != (len(train),):
        raise ValueError(
            f"expected (n, d) features, (n,) labels and (m, d) features; got {train.shape}, {labels.shape}, {val.shape}"
        )
    if not 0 < pass_fraction <= 1:
        raise ValueError(f"pass_fraction must be in (0, 1]; got {pass_fraction}")
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    p = int(min(MAX_COMPONENTS, len(train) - 1, vt.shape[0]))
    components = vt[:p]
    z = (train - mean) @ components.T
    classes = sorted(set(labels.tolist()))
    class_means = np.array([z[labels == c].mean(axis=0) for c in classes])
    within = z - class_means[np.searchsorted(classes, labels)]
    precision = np.linalg.pinv(LedoitWolf(assume_centered=True).fit(within).covariance_)
    provisional = FeatureOodModel(
        tuple(float(v) for v in mean),
        tuple(tuple(float(v) for v in row) for row in components),
        tuple(tuple(float(v) for v in row) for row in class_means),
        tuple(tuple(float(v) for v in row) for row in precision),
        float("inf"),
        float(pass_fraction),
        len(train),
        len(val),
    )
    threshold = float(np.quantile(provisional.score(val), pass_fraction, method="higher"))
    return FeatureOodModel(**{**provisional.__dict__, "threshold": threshold})


@dataclass(frozen=True)
class FusedOod:
    """One ``ood_score`` from both checks, thresholded once (stored in ``trust.json`` as ``ood_fused``).

    Each check's score is divided by its own validation threshold and the larger ratio is the
    slide's ``ood_score``; its threshold is again the ``pass_fraction`` quantile over the validation
    slides. Two checks each passing 95 % of the validation slides would together pass fewer (a
    slide fails when either does); thresholding the fused score keeps the union at ``pass_fraction``.
    """

    threshold: float
    pass_fraction: float
    n_val: int

    def to_dict(self) -> dict:
        return asdict(self)


def fused_scores(
    inputs: OodModel | None, input_x: np.ndarray | None, features: FeatureOodModel | None, feature_x: np.ndarray | None
) -> tuple[np.ndarray, list[str]]:
    """(fused scores, the check or statistic behind each) of n slides; either model may be absent (None).

    The checks: the input statistics' Mahalanobis distance, their range check (when the model has
    one) and the pooled-feature check, each as a ratio to its own threshold.
    """
    ratios, names = [], []
    if inputs is not None and input_x is not None:
        ratios.append(inputs.score(input_x) / max(inputs.threshold, 1e-12))
        names.append(inputs.furthest(input_x))
        if inputs.has_range:
            ratios.append(inputs.range_score(input_x) / max(inputs.range_threshold, 1e-12))
            names.append(inputs.range_furthest(input_x))
    if features is not None and feature_x is not None:
        ratios.append(features.score(feature_x) / max(features.threshold, 1e-12))
        names.append([FEATURES] * len(ratios[-1]))
    if not ratios:
        raise ValueError("fused_scores needs at least one check")
    stacked = np.vstack(ratios)
    which = stacked.argmax(axis=0)
    return stacked.max(axis=0), [names[int(w)][i] for i, w in enumerate(which)]


def fit_fused(
    inputs: OodModel,
    input_val: np.ndarray,
    features: FeatureOodModel | None = None,
    feature_val: np.ndarray | None = None,
) -> FusedOod:
    """The fused threshold: ``pass_fraction`` (the checks') quantile of the validation slides' fused scores."""
    scores, _ = fused_scores(inputs, input_val, features, feature_val)
    threshold = float(np.quantile(scores, inputs.pass_fraction, method="higher"))
    return FusedOod(threshold, inputs.pass_fraction, len(scores))


def flagged_by_fused(
    fused: FusedOod,
    inputs: OodModel | None,
    input_x: np.ndarray | None,
    features: FeatureOodModel | None = None,
    feature_x: np.ndarray | None = None,
) -> np.ndarray:
    """Per slide, whether its fused ``ood_score`` is above the fused threshold: flagged, as scoring decides."""
    scores, _ = fused_scores(inputs, input_x, features, feature_x)
    return scores > fused.threshold


def review_reasons(
    ood_score: float | None, threshold: float | None, furthest: str | None, disagreement: str | None
) -> list[str]:
    """Why a slide needs review (empty: it does not): the checks it failed, as reason codes."""
    reasons = []
    if ood_score is not None and threshold is not None and ood_score > threshold:
        reasons.append(f"{OUT_OF_DISTRIBUTION}:{furthest}" if furthest else OUT_OF_DISTRIBUTION)
    if disagreement:
        reasons.append(f"{DISAGREEMENT}:{disagreement}")
    return reasons


def write_trust(folder: str, content: dict) -> str:
    """Write ``folder/trust.json`` atomically; return its SHA-256 (recorded in ``models.trust_sha256``)."""
    from allmtl_spark.checksums import file_sha256

    tmp = os.path.join(folder, f".{TRUST_FILE}.tmp")
    with open(tmp, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(folder, TRUST_FILE))
    return file_sha256(os.path.join(folder, TRUST_FILE))


def read_trust(folder: str, sha256: str, what: str) -> dict:
    """``folder/trust.json`` parsed from the bytes its SHA-256 was checked on (``checksums.read_verified``)."""
    from allmtl_spark.checksums import read_verified

    return json.loads(read_verified(os.path.join(folder, TRUST_FILE), sha256, f"{what} trust"))
