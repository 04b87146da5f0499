"""Fusing ranked lists from several retrievers (BM25 + dense = hybrid).

Two rules: reciprocal-rank fusion (Cormack et al., 2009: score = sum_r w_r / (c + rank_r), with
c = 60), which needs no score calibration, and a min-max normalised score mix
(score = sum_r w_r * (s_r - min_r) / (max_r - min_r)). A passage missing from one list gets
nothing from that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.data import Qrels
from engine.metrics import CUTOFF, evaluate_rankings

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


# --- re-ranking: the cross-encoder's logit plus a share of the first-stage score ------------

# weights tried on a dev split (0 = the cross-encoder alone)
RERANK_WEIGHTS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0)


@dataclass(frozen=True)
class RerankCandidates:
    """One question's re-ranked head, in first-stage order."""

    ids: tuple[str, ...]
    first_stage: tuple[float, ...]  # the scores that ordered them (dense inner product, BM25, fused)
    ce_logits: tuple[float, ...]


@dataclass(frozen=True)
class WeightChoice:
    weight: float  # the chosen one
    mrr: dict[float, float]  # MRR@cutoff (percent) on the questions it was chosen on, per weight tried
    questions: int
    cutoff: int


def rerank_order(ce_logits: Sequence[float], first_stage: Sequence[float], weight: float) -> list[int]:
    """Indices best first by `ce_logit + weight * first_stage_score`; ties keep the first-stage order.

    Weight 0 is the cross-encoder alone. The first-stage score's scale depends on the retriever
    (an inner product of unit vectors for the dense one, unbounded for BM25), so a weight is
    only meaningful for the retriever it was chosen with.
    """
    if len(ce_logits) != len(first_stage):
        raise ValueError(f"{len(ce_logits)} cross-encoder logits for {len(first_stage)} first-stage scores")
    mixed = [c + weight * s for c, s in zip(ce_logits, first_stage)]
    return sorted(range(len(mixed)), key=lambda i: (-mixed[i], i))


def choose_rerank_weight(
    candidates: dict[str, RerankCandidates], qrels: Qrels, weights: Sequence[float] = RERANK_WEIGHTS
) -> WeightChoice:
    """The weight with the best MRR@10 (`engine.metrics.evaluate_rankings`) over the questions with a
    relevant passage (choose it on dev, never on the split you report). Ties go to the smaller weight."""
    if not weights:
        raise ValueError("no weights to choose from")
    judged = {q: qrels[q] for q in candidates if any(g > 0 for g in qrels.get(q, {}).values())}
    if not judged:
        raise ValueError("no question with a relevant passage to choose a re-ranking weight on")
    mrr = {}
    for w in sorted(set(weights)):
        rankings = {
            q: [candidates[q].ids[i] for i in rerank_order(candidates[q].ce_logits, candidates[q].first_stage, w)]
            for q in judged
        }
        mrr[w] = evaluate_rankings(rankings, judged).metrics[f"MRR@{CUTOFF}"]
    best = max(mrr, key=lambda w: (mrr[w], -w))
    return WeightChoice(best, mrr, len(judged), CUTOFF)
