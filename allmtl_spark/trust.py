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

A scored slide needs review when its ``ood_score`` is above the threshold (reason
``out_of_distribution:<feature>``, the statistic contributing most to the distance)
or when the slide and cell classifiers disagree (``slide_cell_disagreement:<code>``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OodModel:
        return cls(
            features=tuple(data["features"]),
            mean=tuple(data["mean"]),
            scale=tuple(data["scale"]),
            precision=tuple(tuple(r) for r in data["precision"]),
            threshold=float(data["threshold"]),
            pass_fraction=float(data["pass_fraction"]),
            n_train=int(data["n_train"]),
            n_val=int(data["n_val"]),
        )


def fit_ood(
    train: np.ndarray, val: np.ndarray, pass_fraction: float = 0.95, features: tuple[str, ...] = OOD_FEATURES
) -> OodModel:
    """Fit the training distribution (Ledoit-Wolf) and threshold at the ``pass_fraction`` quantile of ``val``'s scores.

    Args:
        train: (n, features) statistics of the training slides (NaN: unknown, replaced by the median).
        val: (m, features) of the validation slides (in distribution, never used for the fit itself).
        pass_fraction: the share of validation slides that must pass (``train.ood_pass_fraction``).

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
    median = np.nanmedian(train, axis=0)
    median = np.where(np.isnan(median), 0.0, median)
    filled = np.where(np.isnan(train), median, train)
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    covariance = LedoitWolf().fit((filled - mean) / scale).covariance_
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
    )
    threshold = float(np.quantile(provisional.score(val), pass_fraction, method="higher"))
    return OodModel(**{**provisional.__dict__, "threshold": threshold})


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
