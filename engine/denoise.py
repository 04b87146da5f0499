"""RocketQA step 3: denoised hard negatives (retrieve -> score -> decide -> sample).

For each labelled training question the dual-encoder M_D0 retrieves its top-k (`retrieve`), the
cross-encoder M_C scores the retrieved passages (`score`), each (question, passage) pair gets a
decision (`decide`), and a shortfall of hard negatives is filled with random passages from deeper
ranks (`random_fill`). `denoise_question` composes decide + fill for one question and returns the
decisions and the resulting `TrainExample`.

Decision rules (RocketQA, Qu et al. 2021, section 4.2; pinned by tests/test_denoise.py):
- a labelled positive (qrels) is `positive`, whatever its rank or probability;
- a retrieved non-positive with `ce_prob < neg_threshold` (strictly: exactly 0.1 is NOT a hard
  negative) is `hard_negative`;
- a retrieved non-positive with `ce_prob >= neg_threshold` is `dropped_false_negative` (a suspected
  unlabeled positive, not trained on);
- with `denoise=False` (the paper's "undenoised" ablation) every retrieved non-positive is a
  `hard_negative` and no cross-encoder is needed;
- if fewer than `num_negatives` hard negatives remain, `random_fill` draws the missing ones,
  seeded, from the dense ranks top_k+1 .. fill_depth (never a positive, never a passage already
  decided for the question).

Retrieval and scoring helpers here are shared with step 4 (`engine.augment`). What this module
leaves out: the run directory and training (see `engine.pipeline`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.cross_encoder import CrossEncoder
from engine.data import Corpus, Question
from engine.dual_encoder import DualEncoder
from engine.examples import TrainExample
from engine.index import DenseIndex

log = logging.getLogger(__name__)

POSITIVE = "positive"
HARD_NEGATIVE = "hard_negative"
DROPPED = "dropped_false_negative"
RANDOM_FILL = "random_fill"


@dataclass(frozen=True)
class DenoiseConfig:
    top_k: int = 50  # paper: hard negatives come from M_D0's top-ranked passages (top-50 here)
    neg_threshold: float = 0.1  # paper: a non-positive is a hard negative only if CE prob < 0.1
    num_negatives: int = 4  # paper: 4 hard negatives per question; fewer -> random fill
    fill_depth: int = 200  # random fill drawn from dense ranks top_k+1 .. fill_depth
    denoise: bool = True  # False = the paper's undenoised ablation (plain top-k hard negatives)
    score_positives: bool = False  # also score retrieved labelled positives (audit only; costs CE time)
    seed: int = 13


@dataclass(frozen=True)
class Candidate:
    """One row of a score table: a passage retrieved (or labelled) for a question."""

    passage_id: str
    dense_rank: int | None  # 1-based rank in the dual-encoder ranking; None = not retrieved
    dense_score: float | None
    ce_prob: float | None  # None = not scored
    is_positive: bool = False


@dataclass(frozen=True)
class Decision:
    passage_id: str
    dense_rank: int | None
    dense_score: float | None
    ce_prob: float | None
    is_positive: bool
    decision: str


@dataclass(frozen=True)
class QuestionDecisions:
    question: Question
    decisions: list[Decision]
    example: TrainExample


@dataclass(frozen=True)
class Ranking:
    """Dense retrieval result of one question: passage ids and inner products, best first."""

    ids: list[str]
    scores: list[float]


# --- retrieve -----------------------------------------------------------------------------


def retrieve(model: DualEncoder, index: DenseIndex, questions: Sequence[Question], depth: int) -> list[Ranking]:
    """Top-`depth` passages per question with one encoder pass and one FAISS search."""
    if not questions:
        return []
    vectors = model.encode_queries([q.text for q in questions])  # (n, dim)
    res = index.search(vectors, depth)
    return [Ranking(list(ids), [float(s) for s in scores[: len(ids)]]) for ids, scores in zip(res.ids, res.scores)]


# --- score --------------------------------------------------------------------------------


def score(
    ce: CrossEncoder,
    pairs: Sequence[tuple[str, str]],
    corpus: Corpus,
    batch_size: int = 64,
    chunk: int = 2048,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """(n,) calibrated cross-encoder probabilities of (question text, passage id) pairs.

    Scored in chunks (length-sorted batches inside each, inference mode) so progress is visible.
    """
    if not ce.is_trained:
        raise ValueError("the cross-encoder was never trained: its probabilities cannot drive denoising")
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        logits = ce.logits([q for q, _ in part], [corpus[pid] for _, pid in part], batch_size=batch_size)
        out[start : start + len(part)] = ce.probability(logits)
        done = start + len(part)
        log.info("cross-encoder scored %d / %d pairs", done, len(pairs))
        if progress:
            progress(done / max(1, len(pairs)), f"scored {done:,} / {len(pairs):,} pairs")
    return out


# --- decide -------------------------------------------------------------------------------


def decide(candidates: Sequence[Candidate], neg_threshold: float, denoise: bool = True) -> list[Decision]:
    """Decision per candidate (see the module docstring): positive / hard_negative / dropped_false_negative.

    Boundary: `ce_prob < neg_threshold` strictly, so a probability of exactly `neg_threshold` is dropped.
    """
    out = []
    for c in candidates:
        if c.is_positive:
            decision = POSITIVE
        elif not denoise:
            decision = HARD_NEGATIVE
        elif c.ce_prob is None:
            raise ValueError(
                f"passage {c.passage_id!r} was not scored by the cross-encoder; denoising needs a probability"
            )
        elif c.ce_prob < neg_threshold:
            decision = HARD_NEGATIVE
        else:
            decision = DROPPED
        out.append(Decision(c.passage_id, c.dense_rank, c.dense_score, c.ce_prob, c.is_positive, decision))
    return out


# --- sample -------------------------------------------------------------------------------


def random_fill(pool: Sequence[Candidate], exclude: set[str], n: int, rng: random.Random) -> list[Decision]:
    """Up to `n` passages drawn at random (seeded by `rng`) from `pool`, skipping positives and `exclude`."""
    eligible = [c for c in pool if not c.is_positive and c.passage_id not in exclude]
    chosen = rng.sample(eligible, min(n, len(eligible))) if n > 0 else []
    chosen.sort(key=lambda c: (c.dense_rank is None, c.dense_rank or 0))
    return [Decision(c.passage_id, c.dense_rank, c.dense_score, None, False, RANDOM_FILL) for c in chosen]


def denoise_question(
    question: Question,
    positives: Sequence[str],
    top: Sequence[Candidate],
    deeper: Sequence[Candidate],
    config: DenoiseConfig,
    rng: random.Random,
) -> QuestionDecisions:
    """Decide the top-k candidates, add labelled positives that were not retrieved, and fill a shortfall.

    `top`: the scored top-k rows (is_positive set); `deeper`: unscored rows below the top-k, the
    random-fill pool. The returned example has all labelled positives and, as negatives, the hard
    negatives (best dense rank first) followed by the random fills.
    """
    if not positives:
        raise ValueError(f"question {question.id!r} has no labelled positive")
    decisions = decide(top, config.neg_threshold, config.denoise)
    seen = {d.passage_id for d in decisions}
    for pid in positives:  # labelled positives outside the top-k are still training positives
        if pid not in seen:
            decisions.append(Decision(pid, None, None, None, True, POSITIVE))
            seen.add(pid)
    hard = [d.passage_id for d in decisions if d.decision == HARD_NEGATIVE]
    shortfall = config.num_negatives - len(hard)
    fills = (
        random_fill([c for c in deeper if c.passage_id not in positives], seen, shortfall, rng) if shortfall > 0 else []
    )
    decisions.extend(fills)
    example = TrainExample(question.id, question.text, tuple(positives), tuple(hard + [d.passage_id for d in fills]))
    return QuestionDecisions(question, decisions, example)


def split_ranking(
    ranking: Ranking, positives: set[str], top_k: int, probs: dict[str, float] | None = None
) -> tuple[list[Candidate], list[Candidate]]:
    """A dense ranking -> (top-k candidates with their probabilities, deeper candidates without)."""
    probs = probs or {}
    rows = [
        Candidate(pid, rank, score_, probs.get(pid), pid in positives)
        for rank, (pid, score_) in enumerate(zip(ranking.ids, ranking.scores), 1)
    ]
    return rows[:top_k], rows[top_k:]
