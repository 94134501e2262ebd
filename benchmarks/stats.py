"""Uncertainty of per-image scores: bootstrap intervals and paired permutation tests,
both from SciPy (``scipy.stats.bootstrap``, ``scipy.stats.permutation_test``).

Every score of the benchmark is a mean over images. Its interval resamples the images
(a percentile bootstrap: it stays defined for 0/1 scores such as the pointing game,
where BCa breaks down when every image hits). Two methods are compared on the same
images, so their difference is tested pairwise: under the null hypothesis each
per-image difference is as likely to have either sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap, false_discovery_control, permutation_test

__all__ = [
    "CONFIDENCE",
    "RESAMPLES",
    "adjust",
    "interval",
    "paired_test",
]

CONFIDENCE = 0.95
RESAMPLES = 9999


def interval(values: Sequence[float], seed: int) -> dict[str, float]:
    """The mean of ``values`` and its 95 % percentile bootstrap interval.

    Args:
        values: one score per image, at least two.
        seed: seeds the resampling, so a run's intervals can be recomputed exactly.

    Returns:
        ``{"value", "low", "high"}``; with no spread in ``values`` the interval is the
        value itself.

    Raises:
        ValueError: fewer than two values, or a value that is not finite.
    """
    x = _finite(values)
    mean = float(x.mean())
    if np.all(x == x[0]):
        return {"value": mean, "low": mean, "high": mean}
    result = bootstrap(
        (x,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return {"value": mean, "low": float(low), "high": float(high)}


def paired_test(a: Sequence[float], b: Sequence[float], seed: int) -> dict:
    """Mean difference ``a - b`` over paired values, its bootstrap interval, and the
    two-sided p-value of a paired permutation test (the signs of the per-image
    differences flipped at random; exact, over all ``2**n`` flips, when ``2**n`` does
    not exceed the resamples).

    Returns:
        ``{"difference": interval(a - b), "p": p-value}``.
    """
    x, y = _finite(a), _finite(b)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in number: {len(x)} and {len(y)}")
    difference = interval(x - y, seed)
    if np.all(x == y):
        return {"difference": difference, "p": 1.0}
    result = permutation_test(
        (x, y),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(seed),
    )
    return {"difference": difference, "p": float(result.pvalue)}


def adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (SciPy's ``false_discovery_control``):
    calling those below 0.05 significant keeps the expected share of false
    discoveries among them at 5 %."""
    if len(p_values) == 0:
        return []
    return [float(p) for p in false_discovery_control(np.asarray(p_values))]


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < 2:
        raise ValueError(f"an interval needs at least two values, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {x[~np.isfinite(x)][:3]}")
    return x
