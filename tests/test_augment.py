"""Step 4 rules pinned on hand-built score tables (engine.augment)."""

from __future__ import annotations

import pytest

from engine.augment import choose_pos_threshold, decide, pseudo_example
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


def test_positive_threshold_chosen_on_dev_is_the_lowest_that_reaches_the_precision():
    # (top probability, top is gold, top has an answer) per dev question
    best = [(0.92, False, True)] * 10 + [(0.96, True, True)] * 9 + [(0.96, False, False)] + [(0.5, False, False)] * 5
    choice = choose_pos_threshold(best, (0.9, 0.95, 0.99), target=0.9, min_support=5, default=0.9)
    rows = {r["pos_threshold"]: r for r in choice["table"]}
    assert rows[0.9] == {"pos_threshold": 0.9, "pseudo_positives": 20, "precision_gold": 0.45, "precision_answer": 0.95}
    assert (rows[0.95]["pseudo_positives"], rows[0.95]["precision_gold"]) == (10, 0.9)
    assert rows[0.99]["pseudo_positives"] == 0 and rows[0.99]["precision_gold"] is None
    assert choice["reached"] and choice["pos_threshold"] == 0.95 and choice["questions"] == 25
    # too few pseudo-positives at 0.95: nothing is eligible, the default stays
    choice = choose_pos_threshold(best, (0.9, 0.95, 0.99), target=0.9, min_support=11, default=0.9)
    assert not choice["reached"] and choice["pos_threshold"] == 0.9
    # never below the configured threshold, even when a lower one would reach the target
    choice = choose_pos_threshold([(0.5, True, True)] * 10, (0.3, 0.4), target=0.9, min_support=1, default=0.45)
    assert choice["pos_threshold"] == 0.45 and [r["pos_threshold"] for r in choice["table"]] == [0.3, 0.4, 0.45]
    with pytest.raises(ValueError, match="precision target"):
        choose_pos_threshold(best, (0.9,), target=0.0, min_support=1, default=0.9)
