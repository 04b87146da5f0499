"""Reading human labels: current labels, full history, and the consensus grade of a pair.

An annotator's *current label* for a (question, passage) is their latest grade or skip that no
later row retracted (the `current_judgments` view). `history` returns every row, retractions
included. `consensus_labels` combines annotators: the lower median of their current grades
(for two annotators: the lower grade), `<NA>` when everyone skipped. A grade is relevant when it
is >= 2 (TREC: 2 highly, 3 perfectly relevant).

Pass `annotator=` from the app so an annotator never sees anyone else's labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import sqlite_utils

from .store import StoreLike, as_store

GRADES = (0, 1, 2, 3)
RELEVANT_MIN_GRADE = 2  # TREC convention: 2 (highly) and 3 (perfectly relevant) count as relevant


def is_relevant(grade: int | None) -> bool | None:
    """True for grades 2 and 3, False for 0 and 1, None for no grade (a skip or nothing)."""
    return None if grade is None else grade >= RELEVANT_MIN_GRADE


_LABEL_COLUMNS = [
    "judgment_id", "annotator", "question_id", "passage_id", "action", "grade", "note", "seconds",
    "suggestion_visible", "decision_id", "stratum", "created_at",
]  # fmt: skip


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if "grade" in frame:
        frame["grade"] = frame["grade"].astype("Int64")
    if "suggestion_visible" in frame:
        frame["suggestion_visible"] = frame["suggestion_visible"].astype(bool)
    return frame


def _filters(annotator: str | None, question_id: str | None, passage_id: str | None, alias: str) -> tuple[str, list]:
    clauses, params = [], []
    for column, value in (("annotator_id", annotator), ("question_id", question_id), ("passage_id", passage_id)):
        if value is not None:
            clauses.append(f"{alias}.{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def current_labels(
    store: StoreLike, *, annotator: str | None = None, question_id: str | None = None, passage_id: str | None = None
) -> pd.DataFrame:
    """Current label per (annotator, question, passage): a grade or a skip. Pass `annotator` in the
    app so an annotator never sees anyone else's labels."""
    where, params = _filters(annotator, question_id, passage_id, "c")
    sql = (
        "SELECT c.id AS judgment_id, c.annotator_id AS annotator, c.question_id, c.passage_id, c.action, c.grade,"
        f" c.note, c.seconds, c.suggestion_visible, c.decision_id, c.stratum, c.created_at FROM current_judgments c{where}"
        " ORDER BY c.id"
    )
    return _frame(as_store(store).read(lambda db: list(db.query(sql, params))), _LABEL_COLUMNS)


def history(
    store: StoreLike, *, annotator: str | None = None, question_id: str | None = None, passage_id: str | None = None
) -> pd.DataFrame:
    """Every judgment row (grades, skips and retractions) in the order they were written."""
    where, params = _filters(annotator, question_id, passage_id, "j")
    sql = (
        "SELECT j.id AS judgment_id, j.annotator_id AS annotator, j.question_id, j.passage_id, j.action, j.grade,"
        " j.retracts, j.note, j.seconds, j.suggestion_visible, j.decision_id, j.stratum, j.created_at"
        f" FROM judgments j{where} ORDER BY j.id"
    )
    columns = _LABEL_COLUMNS[:6] + ["retracts"] + _LABEL_COLUMNS[6:]
    frame = _frame(as_store(store).read(lambda db: list(db.query(sql, params))), columns)
    frame["retracts"] = frame["retracts"].astype("Int64")
    return frame


def lower_median(grades: Sequence[int]) -> int:
    """The consensus grade of several annotators: the lower median (for two: the lower grade)."""
    ordered = sorted(grades)
    return ordered[(len(ordered) - 1) // 2]


def consensus_labels(store: StoreLike) -> pd.DataFrame:
    """One row per judged (question, passage): consensus grade over annotators' current grades.

    Columns: question_id, passage_id, grade (Int64, <NA> when every annotator skipped), relevant
    (boolean, <NA> likewise), n_grades, n_skips, annotators (sorted, comma-separated).
    """
    return as_store(store).read(consensus_tx)


def consensus_tx(db: sqlite_utils.Database) -> pd.DataFrame:
    """`consensus_labels` on an open connection (so a caller can read it in the same snapshot)."""
    rows = db.execute(
        "SELECT question_id, passage_id, annotator_id, action, grade FROM current_judgments"
        " ORDER BY question_id, passage_id, annotator_id"
    ).fetchall()
    pairs: dict[tuple[str, str], dict] = {}
    for qid, pid, annotator, action, grade in rows:
        entry = pairs.setdefault((qid, pid), {"grades": [], "skips": 0, "annotators": []})
        entry["annotators"].append(annotator)
        if action == "grade":
            entry["grades"].append(grade)
        else:
            entry["skips"] += 1
    records = []
    for (qid, pid), entry in pairs.items():
        grade = lower_median(entry["grades"]) if entry["grades"] else None
        records.append({
            "question_id": qid, "passage_id": pid, "grade": grade, "relevant": is_relevant(grade),
            "n_grades": len(entry["grades"]), "n_skips": entry["skips"], "annotators": ",".join(entry["annotators"]),
        })  # fmt: skip
    columns = ["question_id", "passage_id", "grade", "relevant", "n_grades", "n_skips", "annotators"]
    frame = pd.DataFrame(records, columns=columns)
    frame["grade"] = frame["grade"].astype("Int64")
    frame["relevant"] = frame["relevant"].astype("boolean")
    return frame
