"""The judging queue: strata, the random sample order, blind items, leases and overlap."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

import annotations as ann
from annotations.queue import QueueConfig

CLASSES = {"hard_negative": (0.0, 0.1), "dropped_false_negative": (0.1, 1.0), "positive": (0.5, 1.0)}


def make_run(tmp_path: Path, per_class: int = 12) -> Path:
    """A denoise run: question qK has one decision per class; probabilities spread over each class's range."""
    records, corpus = [], []
    for k in range(per_class):
        for c, (decision, (lo, hi)) in enumerate(CLASSES.items()):
            pid = f"p{k}-{c}"
            corpus.append({"_id": pid, "title": "", "text": f"passage {pid}"})
            records.append({
                "run_id": "r", "step": "denoise", "question_id": f"q{k}", "question_text": f"question {k}",
                "passage_id": pid, "dense_rank": 1 + (c + k) % 3, "dense_score": 1.0,
                "ce_prob": round(lo + (hi - lo) * (k + 0.5) / per_class, 4), "neg_threshold": 0.1,
                "pos_threshold": 0.9, "decision": decision, "is_labelled_positive": decision == "positive",
                "dual_encoder": "d", "cross_encoder": "c",
            })  # fmt: skip
    (tmp_path / "decisions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    db = tmp_path / "q.db"
    ann.import_decisions(db, tmp_path / "decisions.jsonl", tmp_path / "corpus.jsonl")
    return db


def sample_order(db: Path, decision: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT id FROM decisions WHERE decision = ? ORDER BY sample_key, id", [decision])
        ]


def judge_all(db: Path, annotator: str, items: list, grade: int = 2) -> None:
    for item in items:
        ann.judge(
            db, annotator, item.question_id, item.passage_id, grade, decision_id=item.decision_id, stratum=item.stratum
        )


def test_queue_mixes_strata_in_proportion(tmp_path: Path) -> None:
    db = make_run(tmp_path)
    items = ann.next_items(db, "alice", n=10)
    assert [i.stratum for i in items].count("random") == 5
    assert [i.stratum for i in items].count("uncertain") == 3
    assert [i.stratum for i in items].count("disagreement") == 2
    assert len({(i.question_id, i.passage_id) for i in items}) == 10
    assert items[0].question_text.startswith("question ") and items[0].passage_text.startswith("passage ")


def test_items_carry_the_machine_suggestion_but_never_human_labels() -> None:
    names = {f.name for f in dataclasses.fields(ann.QueueItem)}
    assert {"decision", "ce_prob", "dense_rank"} <= names
    assert not names & {"grade", "annotator", "label", "note", "judgment_id"}


def test_random_stratum_walks_each_class_in_sample_order(tmp_path: Path) -> None:
    db = make_run(tmp_path)
    only_random = QueueConfig(random_share=1, uncertain_share=0, disagreement_share=0, overlap=0)
    items = ann.next_items(db, "alice", n=6, config=only_random)
    assert {i.stratum for i in items} == {"random"}
    for decision in CLASSES:  # balanced: two per class, the first two of the class's order
        assert [i.decision_id for i in items if i.decision == decision] == sample_order(db, decision)[:2]
    judge_all(db, "alice", items)
    frame = ann.labelled_decisions(db)
    assert sorted(frame.loc[frame["in_sample"], "decision_id"]) == sorted(i.decision_id for i in items)


def test_uncertain_and_disagreement_strata_order(tmp_path: Path) -> None:
    db = make_run(tmp_path)
    uncertain = ann.next_items(
        db, "a", n=4, config=QueueConfig(random_share=0, uncertain_share=1, disagreement_share=0, overlap=0)
    )
    distances = [abs(i.ce_prob - 0.1) for i in uncertain]
    frame = ann.labelled_decisions(db)
    assert distances == sorted(distances) and distances[0] == pytest.approx(min(abs(frame["ce_prob"] - 0.1)))
    disagree = ann.next_items(
        db, "b", n=3, config=QueueConfig(random_share=0, uncertain_share=0, disagreement_share=1, overlap=0)
    )
    with sqlite3.connect(db) as conn:
        top = [r[0] for r in conn.execute("SELECT disagreement FROM decisions ORDER BY disagreement DESC LIMIT 3")]
        got = [
            conn.execute("SELECT disagreement FROM decisions WHERE id = ?", [i.decision_id]).fetchone()[0]
            for i in disagree
        ]
    assert got == top and got[0] > 0


def test_judged_items_do_not_come_back_and_retracted_ones_do(tmp_path: Path) -> None:
    db = make_run(tmp_path, per_class=2)  # 6 decisions
    first = ann.next_items(db, "alice", n=4, config=QueueConfig(overlap=0))
    judge_all(db, "alice", first[:3])
    ann.skip(db, "alice", first[3].question_id, first[3].passage_id)
    rest = ann.next_items(db, "alice", n=10, config=QueueConfig(overlap=0))
    assert len(rest) == 2 and not {i.decision_id for i in rest} & {i.decision_id for i in first}
    judge_all(db, "alice", rest)
    assert ann.next_items(db, "alice", n=10, config=QueueConfig(overlap=0)) == []
    ann.undo_last(db, "alice")
    assert [i.decision_id for i in ann.next_items(db, "alice", n=10, config=QueueConfig(overlap=0))] == [
        rest[-1].decision_id
    ]


def test_two_annotators_asking_at_once_get_different_items(tmp_path: Path) -> None:
    db = make_run(tmp_path)
    a = ann.next_items(db, "alice", n=8, config=QueueConfig(overlap=0))
    b = ann.next_items(db, "bob", n=8, config=QueueConfig(overlap=0))
    assert not {i.decision_id for i in a} & {i.decision_id for i in b}
    again = ann.next_items(db, "alice", n=8, config=QueueConfig(overlap=0))
    assert [i.decision_id for i in again] == [i.decision_id for i in a]  # a refresh shows the same items
    no_lease = ann.next_items(db, "carol", n=8, config=QueueConfig(overlap=0, lease_s=0))
    assert {i.decision_id for i in no_lease} & {i.decision_id for i in a}


def test_overlap_items_get_a_second_annotator_and_no_third(tmp_path: Path) -> None:
    db = make_run(tmp_path, per_class=2)
    everything_twice = QueueConfig(overlap=1.0, lease_s=0)
    first = ann.next_items(db, "alice", n=6, config=everything_twice)
    judge_all(db, "alice", first, grade=3)
    second = ann.next_items(db, "bob", n=6, config=everything_twice)
    assert sorted(i.decision_id for i in second) == sorted(i.decision_id for i in first)
    assert [i.stratum for i in second][:3] == ["overlap"] * 3  # second opinions first (capped at n/2)
    judge_all(db, "bob", second, grade=0)
    assert ann.next_items(db, "carol", n=6, config=everything_twice) == []
    assert ann.next_items(db, "carol", n=6, config=QueueConfig(overlap=0.0, lease_s=0)) == []


def test_queue_argument_errors(tmp_path: Path) -> None:
    db = make_run(tmp_path, per_class=1)
    with pytest.raises(ann.InvalidInputError, match="annotator"):
        ann.next_items(db, " ")
    with pytest.raises(ann.InvalidInputError, match="n must be"):
        ann.next_items(db, "a", n=0)
    with pytest.raises(ann.UnknownIdError, match="unknown run id 'nope'"):
        ann.next_items(db, "a", run_id="nope")
    with pytest.raises(ann.InvalidInputError, match="shares"):
        QueueConfig(random_share=0, uncertain_share=0, disagreement_share=0)
