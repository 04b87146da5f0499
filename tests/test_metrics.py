"""Tests for engine.metrics: hand-computed values, answer-matching edge cases, and an independent oracle."""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path

import pytest

from engine.data import Corpus, Passage, read_beir
from engine.metrics import EvalResult, evaluate_rankings, has_answer, match_tokens, normalize_answer

SHARED = Path(os.environ.get("ROCKETQA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SQUAD_DEV = SHARED / "squad-v1.1-dev"


# --- normalisation and answer matching -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The  Denver Broncos!", "denver broncos"),
        ("Levi's Stadium", "levis stadium"),
        ("an apple a day", "apple day"),
        ("Theater, Anthem and Banana", "theater anthem and banana"),  # articles only as whole words
        ("24–10 «quoted»", "2410 quoted"),  # Unicode punctuation too
        ("Café", "cafe\u0301"),  # NFD: the accent becomes a combining mark
        ("  ", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_match_tokens_split_on_punctuation():
    assert match_tokens("Manning's 11-year career.") == "manning s 11 year career"


@pytest.mark.parametrize(
    ("text", "answers", "expected"),
    [
        ("The Denver Broncos won the game.", ["denver broncos"], True),  # punctuation and case
        ("Broncos won.", ["The Broncos"], True),  # articles
        ("They played at Levi's Stadium.", ["Levi's Stadium"], True),
        ("Despite Manning's problems", ["Manning"], True),  # possessive splits, as in DPR
        ("an 11-year veteran", ["11"], True),
        ("a category of things", ["cat"], False),  # no partial-word match
        ("the cat sat", ["cat"], True),
        ("new york city", ["new york"], True),
        ("new york city", ["york new"], False),  # order matters
        ("new york city", ["new city"], False),  # contiguous only
        ("anything at all", [""], False),  # empty answers never match
        ("the cat", ["the"], False),  # an answer that normalises to nothing
        ("the cat", ["!!!"], False),
        ("the cat", [], False),
        ("Wilhelm Conrad Ro\u0308ntgen", ["Röntgen"], True),  # NFD text vs NFC answer
        ("no match here", ["dog", "match"], True),  # any answer
    ],
)
def test_has_answer(text, answers, expected):
    assert has_answer(text, answers) is expected


def test_has_answer_rejects_a_bare_string():
    with pytest.raises(TypeError):
        has_answer("the cat", "cat")


# --- hand-computed metrics -----------------------------------------------------------------


def test_mrr_and_recall_by_hand():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    rankings = {
        "q1": ["a", "x", "y"],  # first relevant at rank 1
        "q2": ["x", "y", "b"],  # rank 3
        "q3": [f"n{i}" for i in range(11)] + ["c"],  # rank 12: outside MRR@10, inside R@20
    }
    result = evaluate_rankings(rankings, qrels, ks=(1, 5, 20))
    assert list(result.metrics) == ["R@1", "R@5", "R@20", "MRR@10", "nDCG@10"]
    assert result.metrics["MRR@10"] == pytest.approx((1 + 1 / 3 + 0) / 3 * 100)
    assert result.metrics["R@1"] == pytest.approx(100 / 3)
    assert result.metrics["R@5"] == pytest.approx(200 / 3)
    assert result.metrics["R@20"] == pytest.approx(100)
    assert result.metrics["nDCG@10"] == pytest.approx((1 + 1 / math.log2(4) + 0) / 3 * 100)
    assert result.num_questions == 3 and result.num_with_answers == 0
    assert result.per_question == {
        "q1": {"first_relevant_rank": 1.0, "reciprocal_rank": 1.0},
        "q2": {"first_relevant_rank": 3.0, "reciprocal_rank": 1 / 3},
        "q3": {"first_relevant_rank": 12.0, "reciprocal_rank": 1 / 12},
    }


def test_recall_with_several_relevant_passages():
    result = evaluate_rankings({"q": ["a", "x", "y", "b"]}, {"q": {"a": 1, "b": 1, "c": 1}}, ks=(1, 5))
    assert result.metrics["R@1"] == pytest.approx(100 / 3)
    assert result.metrics["R@5"] == pytest.approx(200 / 3)


def test_graded_ndcg_by_hand():
    # grades a=2, b=1, c=0 (judged non-relevant); ranking b, x, a, c
    result = evaluate_rankings({"q": ["b", "x", "a", "c"]}, {"q": {"a": 2, "b": 1, "c": 0}})
    dcg = 1 / math.log2(2) + 2 / math.log2(4)  # b at rank 1, a at rank 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3)  # a, then b
    assert result.metrics["nDCG@10"] == pytest.approx(100 * dcg / idcg)  # 76.02
    assert result.metrics["nDCG@10"] == pytest.approx(76.0180, abs=1e-3)
    assert result.metrics["MRR@10"] == pytest.approx(100)
    assert result.metrics["R@1"] == pytest.approx(50)


def test_missing_rankings_count_as_misses(caplog):
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has nothing relevant
    with caplog.at_level(logging.WARNING, logger="engine.metrics"):
        result = evaluate_rankings({"q1": ["a"], "other": ["b"]}, qrels)
    assert result.num_questions == 2
    assert result.metrics["R@1"] == pytest.approx(50)
    assert result.per_question["q2"] == {"first_relevant_rank": 0.0, "reciprocal_rank": 0.0}
    assert "1 of 2 questions have no ranking" in caplog.text
    assert "1 questions in qrels have no relevant passage" in caplog.text


def test_repeated_passage_counts_once():
    result = evaluate_rankings({"q": ["x", "x", "a"]}, {"q": {"a": 1}}, ks=(2,))
    assert result.metrics["R@2"] == pytest.approx(100)  # x counted once, so a is at rank 2
    assert result.per_question["q"]["first_relevant_rank"] == 2.0


CORPUS = Corpus(
    [
        Passage("p1", "The Denver Broncos won Super Bowl 50.", "Super Bowl 50"),
        Passage("p2", "Cats purr when they are content.", "Cat"),
        Passage("p3", "A category is a class of things.", "Category"),
        Passage("p4", "Levi's Stadium is in Santa Clara.", "Levi's Stadium"),
    ]
)


def test_answer_accuracy_by_hand():
    qrels = {"q1": {"p1": 1}, "q2": {"p2": 1}, "q3": {"p4": 1}, "q4": {"p1": 1}}
    rankings = {
        "q1": ["p1", "p2", "p3"],  # answer at rank 1
        "q2": ["p3", "p4", "p2"],  # "cat" is not in "category": answer at rank 3
        "q3": ["p1", "p2", "p3"],  # answer nowhere in the ranking
        "q4": ["p2"],  # no answers: left out of Acc
    }
    answers = {"q1": ["Denver Broncos"], "q2": ["cats", "purr"], "q3": ["Santa Clara"], "q4": ["", "the"]}
    result = evaluate_rankings(rankings, qrels, CORPUS, answers, ks=(1, 3))
    assert result.num_with_answers == 3 and result.num_questions == 4
    assert result.metrics["Acc@1"] == pytest.approx(100 / 3)
    assert result.metrics["Acc@3"] == pytest.approx(200 / 3)
    assert [result.per_question[q].get("answer_rank") for q in ("q1", "q2", "q3", "q4")] == [1.0, 3.0, 0.0, None]
    assert list(result.metrics) == ["R@1", "R@3", "MRR@10", "nDCG@10", "Acc@1", "Acc@3"]


def test_answer_accuracy_without_qrels():
    result = evaluate_rankings(
        {"a": ["p2", "p1"], "b": ["p3"]}, {}, CORPUS, {"a": ["Broncos"], "b": ["cat"]}, ks=(1, 2)
    )
    assert result.metrics == {"Acc@1": 0.0, "Acc@2": 50.0}
    assert result.num_questions == 0 and result.num_with_answers == 2


def test_default_keys_and_to_dict_is_json():
    result = evaluate_rankings({"q1": ["p1"]}, {"q1": {"p1": 1}}, CORPUS, {"q1": ["Broncos"]})
    assert list(result.metrics) == [
        "R@1",
        "R@5",
        "R@20",
        "R@100",
        "MRR@10",
        "nDCG@10",
        "Acc@1",
        "Acc@5",
        "Acc@20",
        "Acc@100",
    ]
    assert all(v == 100.0 for v in result.metrics.values())
    assert json.loads(json.dumps(result.to_dict())) == {
        "metrics": result.metrics,
        "num_questions": 1,
        "num_with_answers": 1,
        "per_question": {"q1": {"first_relevant_rank": 1.0, "reciprocal_rank": 1.0, "answer_rank": 1.0}},
    }
    assert result.summary().startswith("R@1 100.0  R@5 100.0")
    with pytest.raises(AttributeError):
        result.num_questions = 2  # frozen


def test_bad_inputs():
    with pytest.raises(ValueError, match="not in the corpus"):
        evaluate_rankings({"q": ["nope"]}, {"q": {"p1": 1}}, CORPUS, {"q": ["x"]})
    with pytest.raises(TypeError, match="is a string"):
        evaluate_rankings({"q": "p1"}, {"q": {"p1": 1}})
    with pytest.raises(ValueError, match="ks must be positive"):
        evaluate_rankings({}, {"q": {"p1": 1}}, ks=(0,))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_rankings({}, {})


# --- oracle --------------------------------------------------------------------------------


def oracle(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int) -> tuple[float, float]:
    """Mean nDCG@10 and R@k in percent, written out the plain textbook way (rankings have no repeats)."""
    ndcgs, recalls = [], []
    for qid, grades in qrels.items():
        relevant = {pid for pid, g in grades.items() if g > 0}
        if not relevant:
            continue
        ranking = rankings.get(qid, [])
        gains = [max(grades.get(pid, 0), 0) for pid in ranking[:10]]
        dcg = 0.0
        for i, gain in enumerate(gains):
            dcg += gain / math.log2(i + 2)
        best = sorted((max(g, 0) for g in grades.values()), reverse=True)[:10]
        idcg = 0.0
        for i, gain in enumerate(best):
            idcg += gain / math.log2(i + 2)
        ndcgs.append(dcg / idcg)
        recalls.append(len(relevant & set(ranking[:k])) / len(relevant))
    return 100 * sum(ndcgs) / len(ndcgs), 100 * sum(recalls) / len(recalls)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndcg_and_recall_match_the_oracle(seed):
    rng = random.Random(seed)
    pids = [f"p{i}" for i in range(40)]
    qrels = {
        f"q{i}": {pid: rng.choice([0, 1, 1, 2, 3]) for pid in rng.sample(pids, rng.randint(1, 6))} for i in range(60)
    }
    rankings = {qid: rng.sample(pids, rng.randint(0, 30)) for qid in qrels if rng.random() < 0.9}
    result = evaluate_rankings(rankings, qrels, ks=(1, 5, 20))
    for k in (1, 5, 20):
        ndcg, recall = oracle(rankings, qrels, k)
        assert result.metrics[f"R@{k}"] == pytest.approx(recall)
    assert result.metrics["nDCG@10"] == pytest.approx(ndcg)
    assert 0 < result.metrics["nDCG@10"] < 100


# --- real data -----------------------------------------------------------------------------


@pytest.mark.skipif(not SQUAD_DEV.is_dir(), reason=f"shared data not found at {SHARED}")
def test_gold_passages_first_on_squad_dev():
    ds = read_beir(SQUAD_DEV, splits=["dev"])
    questions, qrels = ds.split("dev")
    rankings = {qid: list(rels) + ds.corpus.ids[:5] for qid, rels in qrels.items()}
    answers = {q.id: q.answers for q in questions}
    result = evaluate_rankings(rankings, qrels, ds.corpus, answers)
    assert isinstance(result, EvalResult)
    assert result.num_questions == result.num_with_answers == 829
    assert result.metrics["R@1"] == result.metrics["MRR@10"] == result.metrics["nDCG@10"] == 100.0
    assert result.metrics["Acc@1"] >= 99.0  # a SQuAD answer is a span of its own paragraph
