"""Decision records (docs/FORMATS.md): round trip, strict reading, and the correctness summary."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from engine.data import Corpus, DataError, Passage
from engine.decisions import DecisionRecord, read_decisions, summarize, write_decisions

BASE = DecisionRecord(
    run_id="run",
    step="denoise",
    question_id="q1",
    question_text="Who lays the eggs?",
    passage_id="p1",
    dense_rank=1,
    dense_score=0.8,
    ce_prob=0.02,
    neg_threshold=0.1,
    pos_threshold=0.9,
    decision="hard_negative",
    is_labelled_positive=False,
    dual_encoder="run/step1_dual_encoder/model@abc",
    cross_encoder="run/step2_cross_encoder/model@def",
)

CORPUS = Corpus(
    [
        Passage("p1", "The queen lays all the fertilised eggs of the colony."),
        Passage("p2", "Drones are male bees."),
        Passage("p3", "Workers build comb from wax."),
        Passage("gold", "Only the queen lays eggs."),
    ]
)


def test_round_trip_and_keys(tmp_path):
    records = [
        BASE,
        replace(BASE, passage_id="p2", dense_rank=None, dense_score=None, ce_prob=None, decision="random_fill"),
    ]
    path = write_decisions(records, tmp_path / "d" / "decisions.jsonl")
    assert read_decisions(path) == records
    first = json.loads(path.read_text().splitlines()[0])
    assert sorted(first) == sorted(asdict(BASE))  # exactly the documented keys


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown decision"):
        replace(BASE, decision="maybe")
    path = tmp_path / "decisions.jsonl"
    good = json.dumps(asdict(BASE))
    path.write_text(good + "\n" + json.dumps({**asdict(BASE), "decision": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"decisions.jsonl:2"):
        read_decisions(path)
    partial = dict(asdict(BASE))
    del partial["ce_prob"]
    path.write_text(json.dumps(partial) + "\n")
    with pytest.raises(DataError, match="lacks ce_prob"):
        read_decisions(path)


def test_summary_counts_and_correctness():
    records = [
        replace(BASE, passage_id="gold", decision="positive", is_labelled_positive=True),
        replace(
            BASE, passage_id="p1", decision="dropped_false_negative", ce_prob=0.7
        ),  # contains "queen": right to drop
        replace(BASE, passage_id="p2", decision="dropped_false_negative", ce_prob=0.2),  # no answer: wrongly dropped
        replace(BASE, passage_id="p3", decision="hard_negative"),
        replace(BASE, step="augment", question_id="u1", passage_id="gold", decision="pseudo_positive", ce_prob=0.95),
        replace(BASE, step="augment", question_id="u2", passage_id="p2", decision="pseudo_positive", ce_prob=0.93),
        replace(BASE, step="augment", question_id="u2", passage_id="p3", decision="pseudo_negative", ce_prob=0.01),
    ]
    gold = {"q1": {"gold"}, "u1": {"gold"}, "u2": {"p1"}}
    answers = {"q1": ("queen",), "u1": ("queen",), "u2": ("fertilised eggs",)}
    s = summarize(records, CORPUS, gold, answers)
    assert s.questions == {"denoise": 1, "augment": 2}
    denoise = {x.decision: x for x in s.steps["denoise"]}
    assert [x.decision for x in s.steps["denoise"]] == ["positive", "hard_negative", "dropped_false_negative"]
    assert denoise["dropped_false_negative"].count == 2
    assert denoise["dropped_false_negative"].answer_fraction == 0.5
    assert denoise["dropped_false_negative"].gold_fraction == 0.0
    assert denoise["hard_negative"].answer_fraction == 0.0
    assert denoise["positive"].gold_fraction == 1.0
    augment = {x.decision: x for x in s.steps["augment"]}
    assert augment["pseudo_positive"].gold_fraction == 0.5  # pseudo-positive precision vs gold
    assert augment["pseudo_positive"].answer_fraction == 0.5
    text = s.text()
    assert "pseudo_positive" in text and "50.0% of 2" in text
    assert json.loads(json.dumps(s.to_dict()))["steps"]["augment"][0]["gold_fraction"] == 0.5


def test_summary_without_gold_counts_only():
    s = summarize([BASE, replace(BASE, passage_id="p2")])
    (stats,) = s.steps["denoise"]
    assert stats.count == 2 and stats.questions == 1
    assert stats.gold_fraction is None and stats.answer_fraction is None
