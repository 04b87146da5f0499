"""Question -> ranked passages: dense, BM25 or hybrid first stage, optional cross-encoder re-ranking.

`Retriever.search(question, k)` returns `Hit`s that carry every score that decided the order
(dense inner product and rank, BM25 score and rank, fused score, cross-encoder probability and
re-ranked position), so a caller can show *why* a passage is where it is.
`search_batch` does the same for many questions with one encoder pass and one FAISS call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from engine.cross_encoder import CrossEncoder
from engine.data import Corpus, Passage
from engine.dual_encoder import DualEncoder, DualEncoderConfig
from engine.fusion import FusionConfig, best_first, fuse, rerank_scores
from engine.index import DenseIndex
from engine.sparse import BM25Index

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000  # far above any real question; protects the tokenizer and BM25
MODES = ("dense", "bm25", "hybrid")


class QueryError(ValueError):
    """A question that cannot be searched (empty, too long); the message is for the user."""


def clean_question(text: object) -> str:
    """Validate one question: a non-empty string of at most MAX_QUESTION_CHARS characters."""
    if not isinstance(text, str):
        raise QueryError(f"a question must be text, got {type(text).__name__}")
    text = "".join(ch for ch in text if ch.isprintable() or ch.isspace()).strip()
    if not text:
        raise QueryError("the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise QueryError(f"the question is {len(text):,} characters long; the limit is {MAX_QUESTION_CHARS:,}")
    return text


@dataclass(frozen=True)
class Hit:
    passage: Passage
    rank: int  # 1-based final rank (after re-ranking, if any)
    score: float  # first-stage score that ordered it (dense IP, BM25 or fused)
    first_stage_rank: int  # 1-based rank before re-ranking
    dense_score: float | None = None
    dense_rank: int | None = None
    bm25_score: float | None = None
    bm25_rank: int | None = None
    ce_logit: float | None = None
    ce_prob: float | None = None
    # ce_logit + rerank_weight * dense_score + rerank_bm25_weight * bm25_score: what the re-ranked head is ordered by
    rerank_score: float | None = None


class Retriever:
    def __init__(
        self,
        corpus: Corpus,
        dense: DualEncoder | None = None,
        index: DenseIndex | None = None,
        bm25: BM25Index | None = None,
        reranker: CrossEncoder | None = None,
        fusion: FusionConfig | None = None,
        rerank_weight: float = 0.0,
        rerank_bm25_weight: float = 0.0,
    ):
        if (dense is None) != (index is None):
            raise ValueError("dense retrieval needs both a dual-encoder and its index")
        self.corpus = corpus
        self.dense = dense
        self.index = index
        self.bm25 = bm25
        self.reranker = reranker
        self.fusion = fusion or FusionConfig()
        # re-ranked order: ce_logit + rerank_weight * dense inner product + rerank_bm25_weight * BM25
        # score (both 0 = the cross-encoder alone; `engine.fusion.choose_rerank_weight` picks them on
        # a dev split for one pair of models)
        self.rerank_weight = rerank_weight
        self.rerank_bm25_weight = rerank_bm25_weight

    @property
    def modes(self) -> list[str]:
        out = []
        if self.dense is not None:
            out.append("dense")
        if self.bm25 is not None:
            out.append("bm25")
        if len(out) == 2:
            out.append("hybrid")
        return out

    def search(self, question: str, k: int = 10, mode: str = "dense", rerank_depth: int = 0) -> list[Hit]:
        return self.search_batch([question], k, mode, rerank_depth)[0]

    def search_batch(
        self,
        questions: Sequence[str],
        k: int = 10,
        mode: str = "dense",
        rerank_depth: int = 0,
        query_vectors: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per question. With rerank_depth > 0 the top-`rerank_depth` are re-ordered
        by the cross-encoder's logit plus `rerank_weight` times their dense score plus
        `rerank_bm25_weight` times their BM25 score (hits below that depth keep their first-stage
        order). The re-ranked hits carry both scores wherever that model is loaded, also for
        passages the other retriever did not return. `query_vectors`: the (cleaned) questions'
        embeddings when the caller already has them (otherwise they are encoded here)."""
        if mode not in self.modes:
            raise ValueError(f"retrieval mode {mode!r} is not available (available: {', '.join(self.modes) or 'none'})")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        questions = [clean_question(q) for q in questions]
        depth = max(k, rerank_depth)
        # encoded once: the first stage searches with them, re-ranking reuses them for dense shares
        vectors = query_vectors
        dense_share = rerank_depth > 0 and bool(self.rerank_weight) and self.dense is not None
        if vectors is None and (mode != "bm25" or dense_share):
            vectors = self.dense.encode_queries(questions)  # (n, dim)
        if vectors is not None and len(vectors) != len(questions):
            raise ValueError(f"{len(vectors)} query vectors for {len(questions)} questions")
        dense = (
            self._dense(vectors, max(depth, self.fusion.depth) if mode == "hybrid" else depth)
            if mode != "bm25"
            else None
        )
        sparse = (
            self._bm25(questions, max(depth, self.fusion.depth) if mode == "hybrid" else depth)
            if mode != "dense"
            else None
        )
        results = []
        for i, q in enumerate(questions):
            d_ids, d_scores = dense[i] if dense else ([], [])
            s_ids, s_scores = sparse[i] if sparse else ([], [])
            if mode == "dense":
                ranked = list(zip(d_ids, d_scores))
            elif mode == "bm25":
                ranked = list(zip(s_ids, s_scores))
            else:
                ranked = fuse([s_ids, d_ids], [s_scores, d_scores], self.fusion)
            d_pos = {pid: (r, s) for r, (pid, s) in enumerate(zip(d_ids, d_scores), 1)}
            s_pos = {pid: (r, s) for r, (pid, s) in enumerate(zip(s_ids, s_scores), 1)}
            hits = [
                Hit(
                    passage=self.corpus[pid],
                    rank=r,
                    score=float(score),
                    first_stage_rank=r,
                    dense_score=float(d_pos[pid][1]) if pid in d_pos else None,
                    dense_rank=d_pos[pid][0] if pid in d_pos else None,
                    bm25_score=float(s_pos[pid][1]) if pid in s_pos else None,
                    bm25_rank=s_pos[pid][0] if pid in s_pos else None,
                )
                for r, (pid, score) in enumerate(ranked[:depth], 1)
            ]
            if rerank_depth > 0:
                hits = self._rerank(q, hits, rerank_depth, None if vectors is None else vectors[i])
            results.append(hits[:k])
        return results

    def _dense(self, vectors: np.ndarray, depth: int) -> list[tuple[list[str], list[float]]]:
        res = self.index.search(vectors, depth)
        return [(ids, [float(s) for s in scores[: len(ids)]]) for ids, scores in zip(res.ids, res.scores)]

    def _bm25(self, questions: list[str], depth: int) -> list[tuple[list[str], list[float]]]:
        res = self.bm25.search(questions, depth)
        out = []
        for ids, scores in zip(res.ids, res.scores):
            keep = [j for j, s in enumerate(scores) if s > 0]  # zero = no query term matched
            out.append(([ids[j] for j in keep], [float(scores[j]) for j in keep]))
        return out

    def _rerank(self, question: str, hits: list[Hit], depth: int, query_vector: np.ndarray | None = None) -> list[Hit]:
        if self.reranker is None:
            raise ValueError("re-ranking asked for, but no cross-encoder is loaded")
        if not self.reranker.is_trained:
            log.warning("re-ranking with a cross-encoder whose head was never trained: its scores mean nothing")
        w, v = self.rerank_weight, self.rerank_bm25_weight
        if w and self.dense is None:
            raise ValueError(f"a dense share in re-ranking (weight {w:g}) needs a dual-encoder; none is loaded")
        if v and self.bm25 is None:
            raise ValueError(f"a BM25 share in re-ranking (weight {v:g}) needs a BM25 index; none is loaded")
        # BM25 scores are cheap (one sparse pass); dense ones need passage vectors, which a code-only
        # index (PQ, SQ) cannot give back and the encoder must recompute: only when used
        head, tail = self.with_scores(question, hits[:depth], dense=bool(w), query_vector=query_vector), hits[depth:]
        logits = self.reranker.logits([question] * len(head), [h.passage for h in head])
        probs = self.reranker.probability(logits)
        dense, bm25 = [h.dense_score for h in head], [h.bm25_score for h in head]
        mixed = rerank_scores(logits.tolist(), dense, w, bm25, v)
        order = best_first(mixed)
        reranked = [
            replace(head[i], rank=r, ce_logit=float(logits[i]), ce_prob=float(probs[i]), rerank_score=mixed[i])
            for r, i in enumerate(order, 1)
        ]
        return reranked + [replace(h, rank=len(reranked) + j) for j, h in enumerate(tail, 1)]

    def with_scores(
        self,
        question: str,
        head: list[Hit],
        dense: bool = True,
        bm25: bool = True,
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The hits with their missing dense and BM25 scores filled in where a loaded model can give
        them (a hybrid list holds passages one retriever did not return; a single-mode list has one
        score). Ranks stay as they were: a filled-in score has no rank. `query_vector`: the
        question's embedding when the caller already has it (otherwise it is encoded here)."""
        need_dense = (
            [i for i, h in enumerate(head) if h.dense_score is None] if dense and self.dense is not None else []
        )
        need_bm25 = [i for i, h in enumerate(head) if h.bm25_score is None] if bm25 and self.bm25 is not None else []
        if not need_dense and not need_bm25:
            return head
        head = list(head)
        if need_dense:
            q = self.dense.encode_queries([question])[0] if query_vector is None else query_vector
            # the index holds every passage's vector from this model: look them up, encode otherwise
            p = self.index.stored_vectors([head[i].passage.id for i in need_dense]) if self.index is not None else None
            if p is None:
                p = self.dense.encode_passages([head[i].passage for i in need_dense])
            for i, s in zip(need_dense, (p @ q).tolist()):
                head[i] = replace(head[i], dense_score=float(s))
        if need_bm25:
            scores = self.bm25.score_passages([question], [[head[i].passage.id for i in need_bm25]])[0]
            for i, s in zip(need_bm25, scores):
                head[i] = replace(head[i], bm25_score=float(s))
        return head


def build_retriever(
    corpus: Corpus,
    model: str | None = "",
    bm25: bool = True,
    reranker: str | None = None,
    factory: str = "Flat",
    cache_root: str | None = None,
    show_progress: bool = True,
    passage_max_length: int | None = None,
) -> Retriever:
    """Load models and indexes for a corpus (dense index from the embedding cache).

    model: dual-encoder directory or hub id ("" = the packaged MiniLM, None = no dense retrieval);
    reranker: cross-encoder directory or hub id, or None.
    """
    from engine.cache import cached_index

    dense = index = None
    if model is not None:
        overrides = {"passage_max_length": passage_max_length} if passage_max_length else {}
        dense = DualEncoder.load(model, **overrides) if model else DualEncoder.build(DualEncoderConfig(**overrides))
        index = cached_index(dense, corpus, factory=factory, root=cache_root, show_progress=show_progress)
    sparse = BM25Index.build(corpus) if bm25 else None
    ce = CrossEncoder.load(reranker) if reranker else None
    return Retriever(corpus, dense=dense, index=index, bm25=sparse, reranker=ce)
