"""Step 4 rules pinned on hand-built score tables (engine.augment)."""

from __future__ import annotations

import pytest

from engine.augment import decide, pseudo_example
from engine.data import Question
from engine.denoise import Candidate


def table(*probs):
    return [Candidate(f"p{i}", i, 1.0 - i / 10, p) for i, p in enumerate(probs, 1)]


def decisions(*probs, pos=0.9, neg=0.1):
    return [d.decision for d in decide(table(*probs), pos, neg)]


def test_top_passage_above_threshold_is_pseudo_positive():
    assert decisions(0.95, 0.5, 0.05, 0.1, 0.0999) == [
        "pseudo_positive",
        "ignored",
        "pseudo_negative",
        "ignored",
        "pseudo_negative",
    ]


def test_exactly_point_nine_is_not_a_pseudo_positive_and_question_is_dropped():
    assert decisions(0.9, 0.01, 0.0) == ["ignored", "ignored", "ignored"]
    assert decisions(0.9001, 0.01)[0] == "pseudo_positive"


def test_top_passage_is_the_best_cross_encoder_score_not_the_best_rank():
    assert decisions(0.3, 0.99, 0.05) == ["ignored", "pseudo_positive", "pseudo_negative"]


def test_ties_go_to_the_better_dense_rank():
    assert decisions(0.95, 0.95) == ["pseudo_positive", "ignored"]


def test_only_one_pseudo_positive_per_question():
    assert decisions(0.99, 0.98, 0.97).count("pseudo_positive") == 1


def test_unscored_candidate_is_an_error():
    with pytest.raises(ValueError, match="not scored"):
        decide([Candidate("p", 1, 0.5, None)], 0.9, 0.1)


def test_pseudo_example():
    q = Question("u1", "what?")
    ds = decide(table(0.2, 0.97, 0.01, 0.05, 0.02), 0.9, 0.1)
    ex = pseudo_example(q, ds, max_negatives=2)
    assert ex.positives == ("p2",) and ex.negatives == ("p3", "p4")
    assert pseudo_example(q, decide(table(0.5, 0.01), 0.9, 0.1), 2) is None
    assert decide([], 0.9, 0.1) == []
