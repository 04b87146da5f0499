"""Step 3 rules pinned on hand-built score tables (engine.denoise)."""

from __future__ import annotations

import random

import pytest

from engine.data import Question
from engine.denoise import Candidate, DenoiseConfig, Ranking, decide, denoise_question, random_fill, split_ranking


def row(pid, rank, prob, positive=False):
    return Candidate(pid, rank, 1.0 - rank / 100 if rank else None, prob, positive)


TABLE = [
    row("gold", 1, 0.97, positive=True),
    row("p2", 2, 0.50),  # suspected false negative
    row("p3", 3, 0.1),  # exactly at the threshold: dropped (strict <)
    row("p4", 4, 0.0999),  # just below: hard negative
    row("p5", 5, 0.0),
    row("p6", 6, None, positive=True),  # a positive needs no score
]


def test_decide_rules_and_boundary():
    got = {d.passage_id: d.decision for d in decide(TABLE, neg_threshold=0.1)}
    assert got == {
        "gold": "positive",
        "p2": "dropped_false_negative",
        "p3": "dropped_false_negative",
        "p4": "hard_negative",
        "p5": "hard_negative",
        "p6": "positive",
    }


def test_decide_keeps_scores_and_order():
    out = decide(TABLE, 0.1)
    assert [d.passage_id for d in out] == [c.passage_id for c in TABLE]
    assert out[3].ce_prob == pytest.approx(0.0999) and out[3].dense_rank == 4


def test_other_threshold_moves_boundary():
    got = {d.passage_id: d.decision for d in decide(TABLE, neg_threshold=0.6)}
    assert got["p2"] == "hard_negative" and got["p3"] == "hard_negative"


def test_undenoised_keeps_every_non_positive():
    got = {d.passage_id: d.decision for d in decide(TABLE, 0.1, denoise=False)}
    assert got == {
        "gold": "positive",
        "p2": "hard_negative",
        "p3": "hard_negative",
        "p4": "hard_negative",
        "p5": "hard_negative",
        "p6": "positive",
    }
    # undenoised needs no probabilities at all
    assert decide([row("x", 1, None)], 0.1, denoise=False)[0].decision == "hard_negative"


def test_unscored_non_positive_is_an_error():
    with pytest.raises(ValueError, match="not scored"):
        decide([row("x", 1, None)], 0.1)


def test_random_fill_is_seeded_and_never_picks_a_positive():
    pool = [row(f"d{i}", 10 + i, None, positive=(i % 3 == 0)) for i in range(30)]
    a = random_fill(pool, {"d1"}, 5, random.Random(7))
    b = random_fill(pool, {"d1"}, 5, random.Random(7))
    assert a == b and len(a) == 5
    for d in a:
        assert d.decision == "random_fill" and not d.is_positive and d.passage_id != "d1" and d.ce_prob is None
    picks = {d.passage_id for seed in range(50) for d in random_fill(pool, {"d1"}, 5, random.Random(seed))}
    assert not picks & {f"d{i}" for i in range(0, 30, 3)} and "d1" not in picks
    assert len(random_fill(pool[:4], set(), 10, random.Random(0))) == 2  # only d1, d2 eligible


def test_denoise_question_fills_shortfall_and_builds_example():
    q = Question("q1", "who?", ("x",))
    ranking = Ranking([c.passage_id for c in TABLE[:5]] + [f"deep{i}" for i in range(10)], [1.0] * 15)
    probs = {c.passage_id: c.ce_prob for c in TABLE[:5]}
    top, deeper = split_ranking(ranking, {"gold", "p6"}, 5, probs)
    cfg = DenoiseConfig(top_k=5, num_negatives=4)
    res = denoise_question(q, ["gold", "p6"], top, deeper, cfg, random.Random(1))
    by = {}
    for d in res.decisions:
        by.setdefault(d.decision, []).append(d.passage_id)
    assert by["positive"] == ["gold", "p6"]  # p6 was not retrieved: added with rank None
    assert by["hard_negative"] == ["p4", "p5"]
    assert len(by["random_fill"]) == 2 and all(p.startswith("deep") for p in by["random_fill"])
    assert res.example.positives == ("gold", "p6")
    assert res.example.negatives[:2] == ("p4", "p5") and len(res.example.negatives) == 4
    assert [d for d in res.decisions if d.passage_id == "p6"][0].dense_rank is None


def test_question_without_positive_is_refused():
    with pytest.raises(ValueError, match="no labelled positive"):
        denoise_question(Question("q", "t"), [], [], [], DenoiseConfig(), random.Random(0))
