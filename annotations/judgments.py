"""Human judgments: questions and passages to judge, grades, skips and retractions (reading them: `labels`).

The judgment log is append-only. A grade is on the TREC scale (0 irrelevant, 1 related, 2 highly
relevant, 3 perfectly relevant; *relevant* means grade >= 2). A skip is its own action, never a
0. Undo is a `retract` row pointing at the judgment it withdraws; an annotator's *current label*
for a (question, passage) is their latest grade or skip that has not been retracted, so undoing
a correction brings the previous label back. Nothing is ever updated or deleted (triggers in the
schema enforce it), so the full history is always there.

Labels are per (question, passage), not per pipeline run: a pair judged once counts for every
run that made a decision about it. When several annotators judged a pair, `labels.consensus_labels`
takes the lower median of their current grades (for two annotators: the lower grade).

Every function validates its arguments and the ids it refers to before writing; bad input
raises `InvalidInputError` / `UnknownIdError` and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlite_utils

from .errors import InvalidInputError, UnknownIdError
from .labels import GRADES, consensus_labels, current_labels, history  # noqa: F401 (re-exported: reading labels)
from .store import StoreLike, as_store, utc_now

STRATA = ("random", "uncertain", "disagreement", "overlap", "adhoc")
_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's variable limit


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{kind} must be a non-empty string, got {value!r}")
    return value


def _check_annotator(annotator: object) -> str:
    if not isinstance(annotator, str) or not annotator.strip():
        raise InvalidInputError(f"annotator must be a non-empty name, got {annotator!r}")
    return annotator.strip()


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- questions and passages -------------------------------------------------------------------


def upsert_questions_tx(db: sqlite_utils.Database, questions: dict[str, str]) -> int:
    """Inside a transaction: add new questions, refuse changed texts. Returns how many were new."""
    for qid, text in questions.items():
        _check_id("question id", qid)
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"question {qid!r} has an empty text")
    existing: dict[str, str] = {}
    ids = list(questions)
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        existing.update(db.execute(f"SELECT id, text FROM questions WHERE id IN ({marks})", list(chunk)).fetchall())
    for qid, text in existing.items():
        if text != questions[qid]:
            raise InvalidInputError(f"question {qid!r} is already stored with a different text: {text!r}")
    now = utc_now()
    new = [{"id": q, "text": questions[q], "created_at": now} for q in ids if q not in existing]
    if new:
        db["questions"].insert_all(new)
    return len(new)


def upsert_passages_tx(db: sqlite_utils.Database, passages: Sequence[Passage]) -> int:
    """Inside a transaction: add new passages, refuse changed texts. Returns how many were new."""
    by_id: dict[str, Passage] = {}
    for p in passages:
        _check_id("passage id", p.id)
        if not isinstance(p.text, str) or not isinstance(p.title, str):
            raise InvalidInputError(f"passage {p.id!r}: title and text must be strings")
        if p.id in by_id and by_id[p.id] != p:
            raise InvalidInputError(f"passage {p.id!r} is given twice with different texts")
        by_id[p.id] = p
    existing: dict[str, tuple[str, str]] = {}
    ids = list(by_id)
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for pid, title, text in db.execute(f"SELECT id, title, text FROM passages WHERE id IN ({marks})", list(chunk)):
            existing[pid] = (title, text)
    for pid, (title, text) in existing.items():
        if (title, text) != (by_id[pid].title, by_id[pid].text):
            raise InvalidInputError(f"passage {pid!r} is already stored with a different title or text")
    now = utc_now()
    new = [
        {"id": p.id, "title": p.title, "text": p.text, "created_at": now}
        for p in by_id.values()
        if p.id not in existing
    ]
    if new:
        db["passages"].insert_all(new)
    return len(new)


def ensure_question(store: StoreLike, question_id: str, text: str) -> bool:
    """Register a question (e.g. one typed in the app). True if new; an id with another text is an error."""
    return as_store(store).write(lambda db: upsert_questions_tx(db, {question_id: text}) == 1)


def ensure_passages(store: StoreLike, passages: Iterable[tuple[str, str, str] | Passage]) -> int:
    """Register passages given as `(id, title, text)`; returns how many were new."""
    items = [p if isinstance(p, Passage) else Passage(*p) for p in passages]
    return as_store(store).write(lambda db: upsert_passages_tx(db, items))


# --- judging ---------------------------------------------------------------------------------


def judge(
    store: StoreLike,
    annotator: str,
    question_id: str,
    passage_id: str,
    grade: int,
    *,
    note: str | None = None,
    seconds: float | None = None,
    suggestion_visible: bool = False,
    decision_id: int | None = None,
    stratum: str | None = None,
) -> int:
    """Record a grade (0-3). `suggestion_visible` is False in blind mode. Returns the judgment id.

    `decision_id` and `stratum` come from the `QueueItem` that was judged (None for ad-hoc judging).
    """
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in GRADES:
        raise InvalidInputError(f"grade must be one of {GRADES} (use skip() to skip), got {grade!r}")
    return _append(
        store,
        "grade",
        annotator,
        question_id,
        passage_id,
        grade,
        note,
        seconds,
        suggestion_visible,
        decision_id,
        stratum,
    )


def skip(
    store: StoreLike,
    annotator: str,
    question_id: str,
    passage_id: str,
    *,
    note: str | None = None,
    seconds: float | None = None,
    suggestion_visible: bool = False,
    decision_id: int | None = None,
    stratum: str | None = None,
) -> int:
    """Record an explicit skip (cannot judge / not sure). A skip is never counted as grade 0."""
    return _append(
        store, "skip", annotator, question_id, passage_id, None, note, seconds, suggestion_visible, decision_id, stratum
    )


def _append(
    store, action, annotator, question_id, passage_id, grade, note, seconds, visible, decision_id, stratum
) -> int:
    annotator = _check_annotator(annotator)
    _check_id("question id", question_id)
    _check_id("passage id", passage_id)
    if seconds is not None and (isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0):
        raise InvalidInputError(f"seconds must be a finite number >= 0, got {seconds!r}")
    if stratum is not None and stratum not in STRATA:
        raise InvalidInputError(f"stratum must be one of {STRATA}, got {stratum!r}")
    if note is not None and not isinstance(note, str):
        raise InvalidInputError(f"note must be a string, got {type(note).__name__}")

    def tx(db: sqlite_utils.Database) -> int:
        if db.execute("SELECT 1 FROM questions WHERE id = ?", [question_id]).fetchone() is None:
            raise UnknownIdError(
                f"unknown question id {question_id!r}: register it with ensure_question() or import a run"
            )
        if db.execute("SELECT 1 FROM passages WHERE id = ?", [passage_id]).fetchone() is None:
            raise UnknownIdError(
                f"unknown passage id {passage_id!r}: register it with ensure_passages() or import a run"
            )
        if decision_id is not None:
            row = db.execute("SELECT question_id, passage_id FROM decisions WHERE id = ?", [decision_id]).fetchone()
            if row is None:
                raise UnknownIdError(f"unknown decision id {decision_id!r}")
            if tuple(row) != (question_id, passage_id):
                raise InvalidInputError(
                    f"decision {decision_id} is about {tuple(row)}, not ({question_id!r}, {passage_id!r})"
                )
        now = utc_now()
        db.execute("INSERT OR IGNORE INTO annotators (id, created_at) VALUES (?, ?)", [annotator, now])
        cursor = db.execute(
            "INSERT INTO judgments (annotator_id, question_id, passage_id, action, grade, note, seconds,"
            " suggestion_visible, decision_id, stratum, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                annotator,
                question_id,
                passage_id,
                action,
                grade,
                note,
                seconds,
                int(bool(visible)),
                decision_id,
                stratum,
                now,
            ],
        )
        return int(cursor.lastrowid)

    return as_store(store).write(tx)


def retract(store: StoreLike, annotator: str, judgment_id: int, *, note: str | None = None) -> int:
    """Withdraw one of the annotator's own grades or skips; returns the id of the retraction row."""
    annotator = _check_annotator(annotator)

    def tx(db: sqlite_utils.Database) -> int:
        row = db.execute(
            "SELECT annotator_id, question_id, passage_id, action FROM judgments WHERE id = ?", [judgment_id]
        ).fetchone()
        if row is None:
            raise UnknownIdError(f"unknown judgment id {judgment_id!r}")
        owner, qid, pid, action = row
        if owner != annotator:
            raise InvalidInputError(f"judgment {judgment_id} belongs to another annotator; only they can retract it")
        if action == "retract":
            raise InvalidInputError(f"judgment {judgment_id} is itself a retraction; judge again instead")
        if db.execute("SELECT 1 FROM judgments WHERE retracts = ?", [judgment_id]).fetchone():
            raise InvalidInputError(f"judgment {judgment_id} is already retracted")
        cursor = db.execute(
            "INSERT INTO judgments (annotator_id, question_id, passage_id, action, retracts, note, created_at)"
            " VALUES (?, ?, ?, 'retract', ?, ?, ?)",
            [annotator, qid, pid, judgment_id, note, utc_now()],
        )
        return int(cursor.lastrowid)

    return as_store(store).write(tx)


def undo_last(store: StoreLike, annotator: str) -> int | None:
    """Retract the annotator's most recent grade or skip that is still in force; None if there is none."""
    annotator = _check_annotator(annotator)
    last = as_store(store).read(
        lambda db: db.execute(
            "SELECT max(id) FROM judgments j WHERE annotator_id = ? AND action IN ('grade', 'skip')"
            " AND NOT EXISTS (SELECT 1 FROM judgments r WHERE r.retracts = j.id)",
            [annotator],
        ).fetchone()[0]
    )
    return None if last is None else retract(store, annotator, last, note="undo")
