"""Small statistics the audit needs: Wilson intervals, Cohen's kappa, Brier score, reliability bins.

Pure functions over plain sequences (no database), each checked in the tests against a hand
computation or scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with a two-sided confidence interval (NaN everywhere when n = 0)."""

    k: int
    n: int
    estimate: float
    low: float
    high: float
    confidence: float


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """Wilson score interval for a binomial proportion (good at small n and near 0 or 1)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, p, low, high, confidence)


def cohen_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int], weights: str | None = None) -> float:
    """Cohen's kappa between two raters' labels of the same items.

    `weights`: None (nominal), "linear" or "quadratic" (for ordinal grades: disagreeing by 2
    grades costs 4 times as much as by 1). NaN for no items; 1.0 when both raters agree on
    every item even if they used a single category (no disagreement is possible to correct for).
    """
    if len(a) != len(b):
        raise ValueError(f"raters labelled different numbers of items: {len(a)} vs {len(b)}")
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    n = len(a)
    if n == 0:
        return math.nan
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        observed[index[x]][index[y]] += 1
    row = [sum(r) for r in observed]
    col = [sum(observed[i][j] for i in range(k)) for j in range(k)]

    def weight(i: int, j: int) -> float:
        if weights is None:
            return 0.0 if i == j else 1.0
        d = abs(i - j) / max(k - 1, 1)
        return d if weights == "linear" else d * d

    disagreement_obs = sum(weight(i, j) * observed[i][j] for i in range(k) for j in range(k)) / n
    disagreement_exp = sum(weight(i, j) * row[i] * col[j] for i in range(k) for j in range(k)) / (n * n)
    if disagreement_exp == 0:
        return 1.0 if disagreement_obs == 0 else math.nan
    return 1.0 - disagreement_obs / disagreement_exp


def brier_score(probs: Sequence[float], outcomes: Sequence[bool], weights: Sequence[float] | None = None) -> float:
    """(Weighted) mean squared difference between predicted probability and the 0/1 outcome."""
    if len(probs) != len(outcomes):
        raise ValueError("probs and outcomes differ in length")
    w = [1.0] * len(probs) if weights is None else list(weights)
    total = sum(w)
    if total == 0:
        return math.nan
    return sum(wi * (p - float(o)) ** 2 for wi, p, o in zip(w, probs, outcomes)) / total


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    weight: float  # sum of sample weights in the bin (= n when unweighted)
    mean_prob: float
    frac_relevant: float


def reliability_bins(
    probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10, weights: Sequence[float] | None = None
) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]: mean predicted probability vs observed (weighted) frequency."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    w = [1.0] * len(probs) if weights is None else list(weights)
    acc = [[0, 0.0, 0.0, 0.0] for _ in range(bins)]  # n, weight, weighted prob, weighted outcome
    for p, o, wi in zip(probs, outcomes, w):
        b = min(int(p * bins), bins - 1)
        acc[b][0] += 1
        acc[b][1] += wi
        acc[b][2] += wi * p
        acc[b][3] += wi * float(o)
    out = []
    for b, (n, wsum, wp, wo) in enumerate(acc):
        mean_p = wp / wsum if wsum else math.nan
        frac = wo / wsum if wsum else math.nan
        out.append(ReliabilityBin(b / bins, (b + 1) / bins, n, wsum, mean_p, frac))
    return out
