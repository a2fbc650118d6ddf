"""Calibration and selective-prediction metrics: pure numpy / scipy, no Spark, no TensorFlow.

- ``compute_ece``: expected calibration error of the top class (Guo et al. 2017): cases binned by
  their highest probability into ``bins`` equal-width bins on [0, 1]; the weighted mean over bins of
  |accuracy - mean confidence|.
- ``compute_reliability``: the same bins as a reliability diagram (confidence, accuracy, count).
- ``fit_temperature``: temperature scaling (Guo et al. 2017): one scalar T > 0 dividing the logits,
  chosen by ``scipy.optimize.minimize_scalar`` to minimise the negative log-likelihood of held-out
  labels. The models output probabilities, so the logits are ``log p`` (softmax is invariant to a
  constant per row; a sigmoid's p becomes ``[1 - p, p]``, whose log-ratio is its logit).
- ``apply_temperature``: ``softmax(log p / T)``. T > 1 softens, T < 1 sharpens; the argmax never changes.
- ``ece_floor``: the ECE a perfectly calibrated model would show on the same cases (sampling noise).
- ``compute_risk_coverage``: accuracy of the cases kept when only the most confident fraction is kept.

Inputs: ``labels`` (n,) integer class indices; ``probabilities`` (n, k) rows summing to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def _check(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=int).ravel()
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probabilities must be (n, k) with n = len(labels) = {len(y)}; got shape {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]}); got {y.min()}..{y.max()}")
    return y, p


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per confidence bin, mean confidence, accuracy and the number of cases."""

    edges: np.ndarray  # (bins + 1,)
    confidence: np.ndarray  # (bins,) NaN where a bin is empty
    accuracy: np.ndarray  # (bins,) NaN where a bin is empty
    count: np.ndarray  # (bins,) int

    @property
    def ece(self) -> float:
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        gap = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(gap * self.count[filled]) / self.count.sum())


def compute_reliability(labels, probabilities, bins: int = 15) -> Reliability:
    """Reliability diagram of the top-class probability in ``bins`` equal-width bins (right-closed, first closed)."""
    y, p = _check(labels, probabilities)
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(float) if len(p) else np.zeros(0)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return Reliability(edges, np.where(count > 0, mean_conf, np.nan), np.where(count > 0, accuracy, np.nan), count)


def compute_ece(labels, probabilities, bins: int = 15) -> float:
    """Expected calibration error of the top-class probability (NaN for no cases)."""
    return compute_reliability(labels, probabilities, bins).ece


def ece_floor(probabilities, bins: int = 15, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(mean, 95th percentile) ECE of a perfectly calibrated model that gave these probabilities.

    Labels are drawn from the probabilities themselves, so any ECE measured is sampling noise: with
    few cases and many bins it is far from 0. An ECE below the 95th percentile cannot tell the
    model from a calibrated one at this sample size.
    """
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or not len(p):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    values = []
    for _ in range(draws):
        labels = np.minimum((rng.random((len(p), 1)) > cumulative).sum(axis=1), p.shape[1] - 1)
        values.append(compute_ece(labels, p, bins))
    return float(np.mean(values)), float(np.quantile(values, 0.95))


def apply_temperature(probabilities, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row; T = 1 returns the probabilities unchanged."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    p = np.asarray(probabilities, dtype=float)
    logits = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def _nll(y: np.ndarray, p: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(p, temperature)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(len(y)), y], _EPS, 1.0))))


def fit_temperature(labels, probabilities, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (bounded search on log T).

    Raises:
        ValueError: no cases (a temperature needs held-out labelled cases).
    """
    from scipy.optimize import minimize_scalar

    y, p = _check(labels, probabilities)
    if not len(y):
        raise ValueError("fit_temperature needs at least one labelled case")
    low, high = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(
        lambda log_t: _nll(y, p, float(np.exp(log_t))), bounds=(low, high), method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))


@dataclass(frozen=True)
class RiskCoverage:
    """Accuracy of the kept cases when the least confident are set aside, most confident first."""

    coverage: np.ndarray  # (n,) fraction of cases kept: 1/n .. 1
    accuracy: np.ndarray  # (n,) accuracy of those kept

    def accuracy_at(self, coverage: float) -> float:
        """Accuracy when keeping (at least) ``coverage`` of the cases."""
        if not len(self.coverage):
            return float("nan")
        index = int(np.searchsorted(self.coverage, coverage - 1e-12, side="left"))
        return float(self.accuracy[min(index, len(self.accuracy) - 1)])


def compute_risk_coverage(correct, confidence) -> RiskCoverage:
    """Risk-coverage curve: cases sorted by ``confidence`` (highest first, stable), running accuracy.

    Args:
        correct: (n,) bool, whether each case was classified correctly.
        confidence: (n,) higher = more trusted (the top-class probability, or minus an OOD score).
    """
    ok = np.asarray(correct, dtype=float).ravel()
    conf = np.asarray(confidence, dtype=float).ravel()
    if len(ok) != len(conf):
        raise ValueError(f"correct and confidence differ in length: {len(ok)} vs {len(conf)}")
    order = np.argsort(-conf, kind="stable")
    kept = np.arange(1, len(ok) + 1)
    return RiskCoverage(kept / max(len(ok), 1), np.cumsum(ok[order]) / kept)
