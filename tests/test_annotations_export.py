"""Exports: qrels, JSONL provenance, a Parquet file for HF datasets, and corrected training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import annotations as ann

# (question, passage, decision, dense rank, ce_prob, step)
DECISIONS = [
    ("q1", "p1", "positive", 2, 0.9, "denoise"),
    ("q1", "p2", "dropped_false_negative", 1, 0.5, "denoise"),
    ("q1", "p3", "hard_negative", 3, 0.05, "denoise"),
    ("q1", "p4", "hard_negative", 4, 0.01, "denoise"),
    ("q1", "p5", "dropped_false_negative", 5, 0.3, "denoise"),
    ("q2", "p1", "pseudo_positive", 1, 0.95, "augment"),
    ("q2", "p2", "pseudo_negative", 2, 0.02, "augment"),
    ("q3", "p3", "pseudo_positive", 1, 0.97, "augment"),
    ("q3", "p4", "ignored", 2, 0.5, "augment"),
    ("q3", "p5", "pseudo_negative", 3, 0.01, "augment"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"run_id": "r", "step": step, "question_id": q, "question_text": f"text {q}", "passage_id": p,
                    "dense_rank": rank, "dense_score": 1.0, "ce_prob": prob, "neg_threshold": 0.1, "pos_threshold": 0.9,
                    "decision": d, "is_labelled_positive": d == "positive", "dual_encoder": "de", "cross_encoder": "ce"})
        for q, p, d, rank, prob, step in DECISIONS
    ]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"_id": f"p{i}", "title": f"T{i}", "text": f"passage {i}"}) + "\n" for i in range(1, 6))
    )
    path = tmp_path / "a.db"
    ann.import_decisions(path, tmp_path / "d.jsonl", tmp_path / "c.jsonl")
    first = ann.judge(path, "alice", "q1", "p2", 2)
    ann.retract(path, "alice", first)
    ann.judge(path, "alice", "q1", "p2", 0, note="about Macbeth, not Hamlet", seconds=12.5)
    ann.judge(path, "alice", "q1", "p3", 3)
    ann.judge(path, "bob", "q1", "p3", 2)
    ann.judge(path, "alice", "q2", "p1", 0)
    ann.judge(path, "alice", "q3", "p4", 2, suggestion_visible=True)
    ann.skip(path, "alice", "q3", "p5")
    return path


def test_qrels(db: Path, tmp_path: Path) -> None:
    result = ann.export_qrels(db, tmp_path / "out" / "human.qrels")
    assert (tmp_path / "out" / "human.qrels").read_text() == "q1 0 p2 0\nq1 0 p3 2\nq2 0 p1 0\nq3 0 p4 2\n"
    assert result.n_rows == 4


def test_jsonl_has_full_provenance(db: Path, tmp_path: Path) -> None:
    ann.export_jsonl(db, tmp_path / "labels.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [(r["annotator"], r["question_id"], r["passage_id"], r["action"], r["grade"]) for r in rows] == [
        ("alice", "q1", "p2", "grade", 0),
        ("alice", "q1", "p3", "grade", 3),
        ("bob", "q1", "p3", "grade", 2),
        ("alice", "q2", "p1", "grade", 0),
        ("alice", "q3", "p4", "grade", 2),
        ("alice", "q3", "p5", "skip", None),
    ]
    first = rows[0]
    assert [h["action"] for h in first["history"]] == ["grade", "retract", "grade"]
    assert first["note"] == "about Macbeth, not Hamlet" and first["seconds"] == 12.5 and first["passage"] == "passage 2"
    assert first["question"] == "text q1" and first["relevant"] is False and first["suggestion_visible"] is False
    (machine,) = first["machine_decisions"]
    assert (machine["run_id"], machine["step"], machine["decision"], machine["ce_prob"], machine["cross_encoder"]) == (
        "r",
        "denoise",
        "dropped_false_negative",
        0.5,
        "ce",
    )


def test_parquet_loads_with_hugging_face_datasets(db: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ann.export_hf(db, tmp_path / "labels.parquet")
    data = datasets.Dataset.from_parquet(str(tmp_path / "labels.parquet"))
    assert data.num_rows == 4
    assert data[1] | {"annotators": None} == {
        "question_id": "q1", "question": "text q1", "passage_id": "p3", "passage_title": "T3", "passage": "passage 3",
        "grade": 2, "relevant": True, "n_grades": 2, "annotators": None,
    }  # fmt: skip
    assert data[1]["annotators"] == "alice,bob"


def test_corrected_training_data(db: Path, tmp_path: Path) -> None:
    result = ann.export_training(db, tmp_path / "train.jsonl")
    examples = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert examples == [
        # p2 was dropped as a suspected positive; judged irrelevant, it is a hard negative again.
        # p3 was a hard negative; judged relevant, it is a positive. p5 (dropped, unjudged) stays out.
        {"question_id": "q1", "question": "text q1", "positives": ["p1", "p3"], "negatives": ["p2", "p4"]},
        # q2 lost its only (pseudo-)positive to a human label, so it is dropped.
        # q3: the ignored p4 was judged relevant and joins the pseudo-positive; the skip on p5 changes nothing.
        {"question_id": "q3", "question": "text q3", "positives": ["p3", "p4"], "negatives": ["p5"]},
    ]
    assert (
        result.n_questions,
        result.n_positives,
        result.n_negatives,
        result.n_overridden,
        result.n_questions_dropped,
    ) == (2, 4, 3, 4, 1)
    meta = json.loads((tmp_path / "train.jsonl.meta.json").read_text())
    assert meta["run_id"] == "r" and meta["n_overridden"] == 4 and meta["steps"] == ["denoise", "augment"]
    only_step3 = ann.export_training(db, tmp_path / "step3.jsonl", steps=("denoise",))
    assert only_step3.n_questions == 1


def test_exports_restricted_to_a_run(db: Path, tmp_path: Path) -> None:
    ann.ensure_question(db, "ask-1", "typed in the app")
    ann.judge(db, "alice", "ask-1", "p1", 3)
    assert ann.export_qrels(db, tmp_path / "all.qrels").n_rows == 5
    assert ann.export_qrels(db, tmp_path / "run.qrels", run_id="r").n_rows == 4
    with pytest.raises(ann.UnknownIdError):
        ann.export_qrels(db, tmp_path / "x.qrels", run_id="nope")
    assert not (tmp_path / "x.qrels").exists()


def test_the_engine_reads_the_corrected_training_data(db: Path, tmp_path: Path) -> None:
    """The contract in docs/FORMATS.md: what annotations exports, engine.examples reads for retraining."""
    examples = pytest.importorskip("engine.examples")
    ann.export_training(db, tmp_path / "train.jsonl")
    read = examples.read_examples(tmp_path / "train.jsonl")
    assert [(e.question_id, e.positives, e.negatives) for e in read] == [
        ("q1", ("p1", "p3"), ("p2", "p4")),
        ("q3", ("p3", "p4"), ("p5",)),
    ]
