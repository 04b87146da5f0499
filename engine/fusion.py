"""Fusing ranked lists from several retrievers (BM25 + dense = hybrid).

Two rules: reciprocal-rank fusion (Cormack et al., 2009: score = sum_r w_r / (c + rank_r), with
c = 60), which needs no score calibration, and a min-max normalised score mix
(score = sum_r w_r * (s_r - min_r) / (max_r - min_r)). A passage missing from one list gets
nothing from that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RRF_C = 60  # Cormack et al.'s constant


@dataclass(frozen=True)
class FusionConfig:
    method: str = "rrf"  # "rrf" | "mix"
    weights: tuple[float, ...] = (1.0, 1.0)  # one per input list (here: BM25, dense)
    rrf_c: int = RRF_C
    depth: int = 100  # how many hits of each list enter the fusion


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], c: int = RRF_C
) -> list[tuple[str, float]]:
    """Ranked (id, fused score), best first; ties broken by first appearance."""
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, pid in enumerate(ranking, 1):
            scores[pid] = scores.get(pid, 0.0) + w / (c + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def score_mix(
    rankings: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], weights: Sequence[float]
) -> list[tuple[str, float]]:
    """Ranked (id, mixed score) from min-max normalised scores, best first."""
    fused: dict[str, float] = {}
    for ids, s, w in zip(rankings, scores, weights, strict=True):
        if len(ids) == 0:
            continue
        lo, hi = min(s), max(s)
        span = hi - lo or 1.0
        for pid, v in zip(ids, s, strict=True):
            fused[pid] = fused.get(pid, 0.0) + w * (v - lo) / span
    return sorted(fused.items(), key=lambda kv: -kv[1])


def fuse(
    rankings: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], config: FusionConfig
) -> list[tuple[str, float]]:
    if config.method == "rrf":
        return reciprocal_rank_fusion(rankings, config.weights, config.rrf_c)
    if config.method == "mix":
        return score_mix(rankings, scores, config.weights)
    raise ValueError(f"unknown fusion method {config.method!r} (use 'rrf' or 'mix')")
