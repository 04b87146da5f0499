"""Fusing ranked lists from several retrievers (BM25 + dense = hybrid).

Two rules: reciprocal-rank fusion (Cormack et al., 2009: score = sum_r w_r / (c + rank_r), with
c = 60), which needs no score calibration, and a min-max normalised score mix
(score = sum_r w_r * (s_r - min_r) / (max_r - min_r)). A passage missing from one list gets
nothing from that list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.data import Qrels
from engine.metrics import CUTOFF, evaluate_rankings

log = logging.getLogger(__name__)

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


# --- re-ranking: the cross-encoder's logit plus shares of the dense and BM25 scores ---------

# weights tried on a dev split (0 = the cross-encoder alone)
RERANK_WEIGHTS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0)  # x the dual-encoder inner product (unit vectors)
RERANK_BM25_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # x the BM25 score (unbounded; ~5-40 on SQuAD)


@dataclass(frozen=True)
class RerankCandidates:
    """One question's re-ranked head, in first-stage order, with the features it is re-ordered by."""

    ids: tuple[str, ...]
    dense: tuple[float, ...]  # dual-encoder inner products; empty = no dual-encoder (only a dense weight of 0)
    ce_logits: tuple[float, ...]
    bm25: tuple[float, ...] = ()  # BM25 scores; empty = not computed (only a BM25 weight of 0 is allowed)


@dataclass(frozen=True)
class WeightChoice:
    weight: float  # the chosen dense weight
    bm25_weight: float  # the chosen BM25 weight
    mrr: dict[tuple[float, float], float]  # MRR@cutoff (percent) per (dense weight, BM25 weight) tried
    questions: int
    cutoff: int
    extensions: int = 0  # times the grid's largest weight of a share was doubled (`choose_rerank_weight(extend=)`)
    method: str = "grid"  # "grid" (`choose_rerank_weight`) or "listwise" (`fit_rerank_weights`)

    @property
    def on_edge(self) -> bool:
        """The choice is the grid's largest non-zero weight of a share: a larger one might do better
        (a cross-encoder trained longer has larger logits, which need larger shares). A fit has no grid."""
        if self.method != "grid":
            return False
        ws, vs = {w for w, _ in self.mrr}, {v for _, v in self.mrr}
        return (self.weight > 0 and self.weight == max(ws)) or (self.bm25_weight > 0 and self.bm25_weight == max(vs))


def rerank_scores(
    ce_logits: Sequence[float],
    dense: Sequence[float],
    weight: float,
    bm25: Sequence[float] = (),
    bm25_weight: float = 0.0,
) -> list[float]:
    """`ce_logit + weight * dense_score + bm25_weight * bm25_score` per candidate.

    Weight 0 leaves a feature out (its values may then be missing). The weights are only
    meaningful for the models they were chosen with: logits, inner products and BM25 scores
    each have their own scale."""
    if weight and len(ce_logits) != len(dense):
        raise ValueError(f"{len(ce_logits)} cross-encoder logits for {len(dense)} dense scores")
    if bm25_weight and len(bm25) != len(ce_logits):
        raise ValueError(f"a BM25 weight of {bm25_weight:g} needs a BM25 score per candidate ({len(bm25)} given)")
    out = [float(c) for c in ce_logits]
    if weight:
        out = [o + weight * d for o, d in zip(out, dense)]
    if bm25_weight:
        out = [o + bm25_weight * b for o, b in zip(out, bm25)]
    return out


def rerank_order(
    ce_logits: Sequence[float],
    dense: Sequence[float],
    weight: float,
    bm25: Sequence[float] = (),
    bm25_weight: float = 0.0,
) -> list[int]:
    """Indices best first by `rerank_scores`; ties keep the first-stage order."""
    return best_first(rerank_scores(ce_logits, dense, weight, bm25, bm25_weight))


def best_first(scores: Sequence[float]) -> list[int]:
    """Indices by descending score; ties keep their order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _head_mrr(candidates: dict[str, RerankCandidates], judged: Qrels, weight: float, bm25_weight: float) -> float:
    """MRR@CUTOFF (percent) of the judged questions' heads re-ordered with these shares."""
    rankings = {}
    for q in judged:
        c = candidates[q]
        rankings[q] = [c.ids[i] for i in rerank_order(c.ce_logits, c.dense, weight, c.bm25, bm25_weight)]
    return evaluate_rankings(rankings, judged).metrics[f"MRR@{CUTOFF}"]


def choose_rerank_weight(
    candidates: dict[str, RerankCandidates],
    qrels: Qrels,
    weights: Sequence[float] = RERANK_WEIGHTS,
    bm25_weights: Sequence[float] = (0.0,),
    extend: int = 0,
) -> WeightChoice:
    """The (dense, BM25) weights with the best MRR@10 (`engine.metrics.evaluate_rankings`) over the
    questions with a relevant passage, on a grid (choose them on dev, never on the split you
    report). Ties go to the smaller BM25 weight, then to the smaller dense weight.

    `extend` > 0: while the choice is the largest weight of a share, that share's grid gets twice its
    largest weight, at most `extend` times (the logits are already scored: only the ranking is redone)."""
    if not weights or not bm25_weights:
        raise ValueError("no weights to choose from")
    if extend < 0:
        raise ValueError(f"extend must be >= 0, got {extend}")
    judged = {q: qrels[q] for q in candidates if any(g > 0 for g in qrels.get(q, {}).values())}
    if not judged:
        raise ValueError("no question with a relevant passage to choose a re-ranking weight on")
    ws, vs = sorted(set(weights)), sorted(set(bm25_weights))
    mrr: dict[tuple[float, float], float] = {}
    for extensions in range(extend + 1):
        for v in vs:
            for w in ws:
                if (w, v) in mrr:
                    continue
                mrr[(w, v)] = _head_mrr(candidates, judged, w, v)
        best = max(mrr, key=lambda wv: (mrr[wv], -wv[1], -wv[0]))
        choice = WeightChoice(
            best[0],
            best[1],
            dict(sorted(mrr.items(), key=lambda kv: (kv[0][1], kv[0][0]))),
            len(judged),
            CUTOFF,
            extensions,
        )
        if not choice.on_edge or extensions == extend:
            break
        if best[0] > 0 and best[0] == max(ws):
            ws.append(2 * max(ws))
        if best[1] > 0 and best[1] == max(vs):
            vs.append(2 * max(vs))
    if choice.on_edge:
        log.warning(
            "the re-ranking weights chosen (%g dense, %g BM25) include the largest of the grid: a larger one might "
            "do better (this cross-encoder's logits may have a larger scale); the grid is engine.fusion.RERANK_WEIGHTS "
            "/ RERANK_BM25_WEIGHTS%s",
            choice.weight,
            choice.bm25_weight,
            f", doubled {extend} time(s)" if extend else " (evaluate --rerank-grid-extend N doubles it)",
        )
    return choice


RERANK_FIT_METHODS = ("grid", "listwise")


def fit_rerank_weights(
    candidates: dict[str, RerankCandidates],
    qrels: Qrels,
    dense: bool = True,
    bm25: bool = False,
    max_iter: int = 500,
) -> WeightChoice:
    """The (dense, BM25) shares fitted by maximum likelihood: the score `a * logit + b * dense + c *
    BM25` through a softmax over each head should give its relevant passages the most probability
    (a listwise loss, as in learning to rank), over the questions whose head holds a relevant
    passage; the shares are b / a and c / a. Fit them on dev, never on the split you report.

    Unlike the grid's MRR@10, the likelihood is smooth in the shares and weighs every relevant
    passage's score, not only the rank of the first, so on a few hundred dev questions it follows
    noise less. A share that comes out negative is dropped (weight 0) and the rest refitted. A
    non-positive logit weight (the cross-encoder hurts on this split) is refused: use the grid.
    """
    import torch

    judged = {q: qrels[q] for q in candidates if any(g > 0 for g in qrels.get(q, {}).values())}
    heads = [(candidates[q], qrels[q]) for q in judged]
    heads = [(c, [qr.get(i, 0) > 0 for i in c.ids]) for c, qr in heads]
    heads = [(c, pos) for c, pos in heads if any(pos)]
    if not heads:
        raise ValueError("no head holds a relevant passage to fit the re-ranking weights on")
    names = ["dense"] * dense + ["bm25"] * bm25
    for c, _ in heads:
        for name in names:
            if len(getattr(c, name)) != len(c.ids):
                raise ValueError(f"fitting a {name} share needs a {name} score for every candidate")
    width = max(len(c.ids) for c, _ in heads)
    x = torch.zeros(len(heads), width, 3, dtype=torch.float64)
    valid = torch.zeros(len(heads), width, dtype=torch.bool)
    relevant = torch.zeros(len(heads), width, dtype=torch.bool)
    for row, (c, pos) in enumerate(heads):
        n = len(c.ids)
        x[row, :n, 0] = torch.tensor(c.ce_logits, dtype=torch.float64)
        for col, name in ((1, "dense"), (2, "bm25")):
            if name in names:
                x[row, :n, col] = torch.tensor(getattr(c, name), dtype=torch.float64)
        valid[row, :n] = True
        relevant[row, :n] = torch.tensor(pos)
    cols = [0] + [{"dense": 1, "bm25": 2}[name] for name in names]
    while True:
        t = _listwise_fit(x[:, :, cols], valid, relevant, max_iter)
        if not bool(torch.isfinite(t).all()) or float(t[0]) <= 0:
            raise ValueError(
                "the listwise fit gives the cross-encoder's logit no positive weight on this split "
                "(it does not help there): choose the shares on the grid instead"
            )
        shares = {c: float(t[i]) / float(t[0]) for i, c in enumerate(cols) if i}
        negative = [c for c, v in shares.items() if v < 0]
        if not negative:
            break
        cols.remove(min(negative, key=lambda c: shares[c]))
    weight, bm25_weight = round(shares.get(1, 0.0), 4), round(shares.get(2, 0.0), 4)
    mrr = _head_mrr(candidates, judged, weight, bm25_weight)
    return WeightChoice(weight, bm25_weight, {(weight, bm25_weight): mrr}, len(judged), CUTOFF, method="listwise")


def _listwise_fit(feats, valid, relevant, max_iter: int):
    """The weights (first: the logit's, starting at 1; the others at 0) minimising the mean negative log
    of the softmax probability of each head's relevant passages; feats is (heads, width, features)."""
    import torch

    theta = torch.zeros(feats.shape[-1], dtype=torch.float64)
    theta[0] = 1.0
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS([theta], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        s = (feats * theta).sum(-1).masked_fill(~valid, float("-inf"))
        loss = (torch.logsumexp(s, 1) - torch.logsumexp(s.masked_fill(~relevant, float("-inf")), 1)).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()


def choose_or_fit(
    candidates: dict[str, RerankCandidates],
    qrels: Qrels,
    method: str,
    dense: bool,
    bm25: bool,
    extend: int = 0,
) -> WeightChoice:
    """The re-ranking shares on a dev split by `method`: "grid" (`choose_rerank_weight` over
    RERANK_WEIGHTS / RERANK_BM25_WEIGHTS, extended `extend` times) or "listwise"
    (`fit_rerank_weights`). `dense` / `bm25`: whether that share may be non-zero."""
    if method == "grid":
        return choose_rerank_weight(
            candidates,
            qrels,
            RERANK_WEIGHTS if dense else (0.0,),
            RERANK_BM25_WEIGHTS if bm25 else (0.0,),
            extend=extend,
        )
    if method == "listwise":
        if extend:
            raise ValueError("a grid extension only applies to the grid, not to the listwise fit")
        return fit_rerank_weights(candidates, qrels, dense=dense, bm25=bm25)
    raise ValueError(f"unknown way to choose the re-ranking shares {method!r} (one of {', '.join(RERANK_FIT_METHODS)})")


def weight_table(choice: WeightChoice) -> str:
    """The dev MRR@10 of the weights tried, one line (for logs and notes): per dense weight when
    only those were tried, else per BM25 weight with its best dense weight."""
    bm25_weights = sorted({v for _, v in choice.mrr})
    if len(bm25_weights) == 1:
        return ", ".join(f"{w:g}: {m:.1f}" for (w, _), m in choice.mrr.items())
    parts = []
    for v in bm25_weights:
        w, m = max(((w, m) for (w, vv), m in choice.mrr.items() if vv == v), key=lambda wm: (wm[1], -wm[0]))
        parts.append(f"v {v:g}: {m:.1f} (w {w:g})")
    return ", ".join(parts)
