"""Importing decisions.jsonl: validation with file:line, all-or-nothing, idempotent per run."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

import annotations as ann

CORPUS = [
    {"_id": "p1", "title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare."},
    {"_id": "p2", "title": "Macbeth", "text": "Macbeth is a tragedy by Shakespeare about a Scottish king."},
    {"_id": "p3", "title": "Paris", "text": "Paris is the capital of France."},
    {"_id": "p4", "title": "Unused", "text": "Not mentioned by any decision."},
]


def record(
    qid: str, pid: str, decision: str, rank: int | None, prob: float | None, step: str = "denoise", **kw
) -> dict:
    r = {
        "run_id": "run-a", "step": step, "question_id": qid, "question_text": f"text of {qid}", "passage_id": pid,
        "dense_rank": rank, "dense_score": None if rank is None else 10.0 - rank, "ce_prob": prob,
        "neg_threshold": 0.1, "pos_threshold": 0.9, "decision": decision,
        "is_labelled_positive": decision == "positive", "dual_encoder": "de@1", "cross_encoder": "ce@1",
    }  # fmt: skip
    return r | kw


RECORDS = [
    record("q1", "p1", "positive", 2, 0.95),
    record("q1", "p2", "dropped_false_negative", 1, 0.4),
    record("q1", "p3", "hard_negative", 3, 0.02),
    record("q2", "p3", "pseudo_positive", 1, 0.97, step="augment"),
    record("q2", "p1", "pseudo_negative", 2, 0.05, step="augment"),
    record("q2", "p2", "ignored", 3, 0.5, step="augment"),
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "decisions.jsonl", RECORDS), write_jsonl(tmp_path / "corpus.jsonl", CORPUS)


def table(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_import_stores_decisions_texts_and_derived_columns(tmp_path: Path, files) -> None:
    db = tmp_path / "a.db"
    result = ann.import_decisions(db, *files)
    assert (result.run_ids, result.n_records, result.n_inserted, result.n_new_questions, result.n_new_passages) == (
        ("run-a",),
        6,
        6,
        2,
        3,
    )
    assert table(db, "SELECT id, title FROM passages ORDER BY id") == [
        ("p1", "Hamlet"),
        ("p2", "Macbeth"),
        ("p3", "Paris"),
    ]
    assert table(db, "SELECT id, text FROM questions ORDER BY id") == [("q1", "text of q1"), ("q2", "text of q2")]
    rows = table(
        db,
        "SELECT passage_id, ce_rank, disagreement, uncertainty FROM decisions WHERE question_id = 'q1' ORDER BY passage_id",
    )
    # q1: CE order p1 (0.95) > p2 (0.4) > p3 (0.02); dense order p2, p1, p3
    assert [r[:2] for r in rows] == [("p1", 1), ("p2", 2), ("p3", 3)]
    assert rows[0][2] == pytest.approx(1.0) and rows[1][2] == pytest.approx(1.0) and rows[2][2] == 0.0
    assert rows[1][3] == pytest.approx(0.3)  # step 3: distance to neg_threshold only
    augment = dict(table(db, "SELECT passage_id, uncertainty FROM decisions WHERE question_id = 'q2'"))
    assert augment["p3"] == pytest.approx(0.07) and augment["p2"] == pytest.approx(0.4)  # nearest of 0.1 / 0.9
    keys = [k for (k,) in table(db, "SELECT sample_key FROM decisions")]
    assert all(0 <= k < 1 for k in keys) and len(set(keys)) == 6
    counts = ann.runs(db).iloc[0]
    assert counts["n_decisions"] == 6 and counts["positive"] == 1 and counts["random_fill"] == 0


def test_reimport_is_idempotent_and_adds_only_new_records(tmp_path: Path, files) -> None:
    db = tmp_path / "a.db"
    ann.import_decisions(db, *files)
    again = ann.import_decisions(db, *files)
    assert (again.n_inserted, again.n_already_present) == (0, 6)
    assert table(db, "SELECT count(*) FROM decisions") == [(6,)]
    extra = write_jsonl(tmp_path / "more.jsonl", [*RECORDS, record("q3", "p2", "hard_negative", 1, 0.01)])
    assert ann.import_decisions(db, extra, files[1]).n_inserted == 1
    assert table(db, "SELECT count(*) FROM decisions") == [(7,)]


def test_a_changed_run_is_refused(tmp_path: Path, files) -> None:
    db = tmp_path / "a.db"
    ann.import_decisions(db, *files)
    changed = write_jsonl(
        tmp_path / "changed.jsonl", [*RECORDS[:2], record("q1", "p3", "dropped_false_negative", 3, 0.2)]
    )
    with pytest.raises(ann.DecisionFileError, match=r"changed.jsonl:3: run 'run-a' already holds a different decision"):
        ann.import_decisions(db, changed, files[1])


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(record("q9", "p1", "maybe", 1, 0.5)), "decision must be one of"),
        (json.dumps(record("q9", "p1", "ignored", 1, 1.5)), r"ce_prob must be in \[0.0, 1.0\]"),
        (json.dumps(record("q9", "p1", "ignored", 0, 0.5)), "dense_rank must be an integer >= 1"),
        (
            json.dumps({k: v for k, v in record("q9", "p1", "ignored", 1, 0.5).items() if k != "cross_encoder"}),
            "missing key",
        ),
        (json.dumps(record("q9", "p1", "ignored", 1, 0.5, step="train")), "step must be one of"),
        (json.dumps(record("q9", "p1", "ignored", 1, 0.5, is_labelled_positive="no")), "is_labelled_positive"),
        (json.dumps(record("q1", "p1", "positive", 2, 0.95)), r"duplicate record .* \(first on line 1\)"),
        (
            json.dumps(record("q1", "p4", "ignored", 5, 0.5, question_text="another text")),
            "different text than on line 1",
        ),
        (json.dumps(record("q9", "p404", "ignored", 1, 0.5)), "passage id 'p404' not found"),
    ],
)
def test_a_malformed_line_names_file_and_line_and_writes_nothing(
    tmp_path: Path, files, bad_line: str, message: str
) -> None:
    db = tmp_path / "a.db"
    lines = [json.dumps(r) for r in RECORDS[:4]] + [bad_line] + [json.dumps(r) for r in RECORDS[4:]]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ann.DecisionFileError, match=message) as info:
        ann.import_decisions(db, path, files[1])
    assert "bad.jsonl:5" in str(info.value)
    if db.exists():
        assert table(
            db,
            "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM questions) + (SELECT count(*) FROM passages)",
        ) == [(0,)]


def test_without_a_corpus_passages_must_already_be_stored(tmp_path: Path, files) -> None:
    db = tmp_path / "a.db"
    with pytest.raises(ann.DecisionFileError, match="pass a corpus.jsonl"):
        ann.import_decisions(db, files[0])
    ann.ensure_passages(db, [(c["_id"], c["title"], c["text"]) for c in CORPUS])
    assert ann.import_decisions(db, files[0]).n_inserted == 6


def test_compatible_with_the_engines_decision_writer(tmp_path: Path) -> None:
    """The contract in docs/FORMATS.md: what engine.decisions writes, annotations imports."""
    decisions = pytest.importorskip("engine.decisions")
    records = [
        decisions.DecisionRecord(**{**r, "dense_rank": r["dense_rank"], "dense_score": r["dense_score"]})
        for r in RECORDS
    ] + [decisions.DecisionRecord(**record("q1", "p4", "random_fill", None, None))]
    path = decisions.write_decisions(records, tmp_path / "step3" / "decisions.jsonl")
    result = ann.import_decisions(tmp_path / "a.db", path, write_jsonl(tmp_path / "corpus.jsonl", CORPUS))
    assert result.n_inserted == 7
    fill = table(
        tmp_path / "a.db",
        "SELECT dense_rank, ce_prob, ce_rank, disagreement FROM decisions WHERE decision = 'random_fill'",
    )
    assert fill == [(None, None, None, None)]
    assert not math.isnan(ann.labelled_decisions(tmp_path / "a.db")["sample_key"].sum())
