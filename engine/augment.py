"""RocketQA step 4: data augmentation with pseudo-labels (retrieve -> score -> decide -> example).

For each unlabeled question the dual-encoder M_D1 retrieves its top-k, the cross-encoder M_C
scores them, and `decide` labels each pair; `pseudo_example` turns the decisions of one question
into a `TrainExample` (or None when the question is dropped).

Decision rules (RocketQA, Qu et al. 2021, section 4.2; pinned by tests/test_augment.py):
- the *top passage* is the candidate with the highest cross-encoder probability (ties: better
  dense rank); it is `pseudo_positive` iff `ce_prob > pos_threshold` (strictly: exactly 0.9 is not);
- if the question has a pseudo-positive, every other candidate with `ce_prob < neg_threshold`
  (strictly: exactly 0.1 is not) is `pseudo_negative`, and the rest is `ignored`;
- a question without a pseudo-positive is dropped: all its candidates are `ignored`.

Retrieval and scoring are the same helpers as step 3 (`engine.denoise.retrieve` / `score`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.data import Question
from engine.denoise import Candidate, Decision
from engine.examples import TrainExample

log = logging.getLogger(__name__)

PSEUDO_POSITIVE = "pseudo_positive"
PSEUDO_NEGATIVE = "pseudo_negative"
IGNORED = "ignored"


@dataclass(frozen=True)
class AugmentConfig:
    top_k: int = 50  # passages of M_D1's ranking scored by M_C per unlabeled question
    pos_threshold: float = 0.9  # paper: pseudo-positive iff CE prob > 0.9
    neg_threshold: float = 0.1  # paper: pseudo-negative iff CE prob < 0.1
    max_negatives: int = 4  # pseudo-negatives kept per question (best dense rank first); paper: 4 hard negatives
    max_questions: int = 0  # >0: use only the first N unlabeled questions (CPU budget)
    seed: int = 13
    # >0: choose the positive threshold on the dev split instead of using pos_threshold as is: the
    # lowest of pos_threshold_grid (never below pos_threshold) whose dev pseudo-positives reach this
    # precision against the gold paragraph with at least pos_min_support of them (`choose_pos_threshold`).
    # The paper fixes 0.9; 0 keeps it.
    pos_precision_target: float = 0.0
    pos_threshold_grid: tuple[float, ...] = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
    pos_min_support: int = 50


def decide(candidates: Sequence[Candidate], pos_threshold: float, neg_threshold: float) -> list[Decision]:
    """Decisions for one unlabeled question's scored candidates, in the input order (see module docstring)."""
    if any(c.ce_prob is None for c in candidates):
        missing = next(c.passage_id for c in candidates if c.ce_prob is None)
        raise ValueError(f"passage {missing!r} was not scored by the cross-encoder; augmentation needs a probability")
    if not candidates:
        return []
    top = min(range(len(candidates)), key=lambda i: (-candidates[i].ce_prob, candidates[i].dense_rank or 10**9, i))
    has_positive = candidates[top].ce_prob > pos_threshold
    out = []
    for i, c in enumerate(candidates):
        if has_positive and i == top:
            decision = PSEUDO_POSITIVE
        elif has_positive and c.ce_prob < neg_threshold:
            decision = PSEUDO_NEGATIVE
        else:
            decision = IGNORED
        out.append(Decision(c.passage_id, c.dense_rank, c.dense_score, c.ce_prob, False, decision))
    return out


def choose_pos_threshold(
    best: Sequence[tuple[float, bool, bool]],
    grid: Sequence[float],
    target: float,
    min_support: int,
    default: float,
) -> dict:
    """The positive threshold chosen on labelled (dev) questions, with the table it was chosen from.

    `best` holds, per dev question, its top passage's (cross-encoder probability, is gold, has an
    answer string), the top passage chosen exactly as `decide` does. A threshold t is eligible when
    t >= default, at least `min_support` questions have a probability > t, and the gold precision of
    those reaches `target`; the lowest eligible t wins (the most pseudo-labels at that precision).
    When none is eligible, `default` is kept and `reached` is False.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"the precision target must be in (0, 1], got {target}")
    table = []
    for t in sorted(set(grid) | {default}):
        chosen = [b for b in best if b[0] > t]
        n = len(chosen)
        table.append(
            {
                "pos_threshold": t,
                "pseudo_positives": n,
                "precision_gold": round(sum(b[1] for b in chosen) / n, 4) if n else None,
                "precision_answer": round(sum(b[2] for b in chosen) / n, 4) if n else None,
            }
        )
    eligible = [
        row
        for row in table
        if row["pos_threshold"] >= default
        and row["pseudo_positives"] >= min_support
        and row["precision_gold"] >= target
    ]
    threshold = eligible[0]["pos_threshold"] if eligible else default
    return {
        "questions": len(best),
        "target_precision_gold": target,
        "min_support": min_support,
        "reached": bool(eligible),
        "pos_threshold": threshold,
        "table": table,
    }


def pseudo_example(question: Question, decisions: Sequence[Decision], max_negatives: int) -> TrainExample | None:
    """The pseudo-labelled example of one question, or None when it has no pseudo-positive.

    Negatives: the pseudo-negatives with the best dense rank, at most `max_negatives`.
    """
    positives = [d.passage_id for d in decisions if d.decision == PSEUDO_POSITIVE]
    if not positives:
        return None
    negatives = sorted((d for d in decisions if d.decision == PSEUDO_NEGATIVE), key=lambda d: d.dense_rank or 10**9)
    return TrainExample(
        question.id, question.text, tuple(positives), tuple(d.passage_id for d in negatives[:max_negatives])
    )
