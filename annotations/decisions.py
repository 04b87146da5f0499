"""Importing the pipeline's machine decisions (`decisions.jsonl`, see docs/FORMATS.md).

`import_decisions(store, decisions_path, corpus_path)` reads and validates the whole file first
(a malformed line raises `DecisionFileError` naming `file:line`), fetches the texts of the
passages it mentions from a BEIR `corpus.jsonl`, and then writes everything in one transaction:
all of it or nothing. Import is idempotent per run: a record already stored for the same
(run_id, step, question_id, passage_id) is skipped, and one stored with *different* values is an
error (a changed run must get a new run_id).

At import each decision also gets the derived columns the queue uses: the cross-encoder rank of
the passage within its question (`ce_rank`), the rank disagreement `|log2 dense_rank - log2
ce_rank|`, the distance of `ce_prob` to the threshold(s) that matter for its step
(`uncertainty`), and two deterministic pseudo-random keys in [0, 1): `sample_key` orders the
uniform random audit sample, `overlap_key` (per question/passage) picks items for double
annotation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlite_utils

from .errors import DecisionFileError, UnknownIdError
from .judgments import Passage, upsert_passages_tx, upsert_questions_tx
from .schema import DECISIONS, STEPS
from .store import StoreLike, as_store, utc_now

log = logging.getLogger(__name__)

# Columns compared when a record is imported again; they must be identical.
VALUE_COLUMNS = (
    "dense_rank", "dense_score", "ce_prob", "neg_threshold", "pos_threshold", "decision",
    "is_labelled_positive", "dual_encoder", "cross_encoder",
)  # fmt: skip
KEY_COLUMNS = ("run_id", "step", "question_id", "passage_id")


@dataclass(frozen=True)
class ImportResult:
    source: str
    run_ids: tuple[str, ...]
    n_records: int
    n_inserted: int
    n_already_present: int
    n_new_questions: int
    n_new_passages: int


def unit_hash(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from the parts (52 bits of SHA-256)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:13], 16) / float(16**13)


def _number(value: object, where: str, key: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DecisionFileError(f"{where}: {key} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise DecisionFileError(f"{where}: {key} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def _text(value: object, where: str, key: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DecisionFileError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def parse_record(obj: object, where: str) -> dict:
    """Validate one decision record (a parsed JSON line); return the row to store."""
    if not isinstance(obj, dict):
        raise DecisionFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in (*KEY_COLUMNS, "question_text", *VALUE_COLUMNS) if k not in obj]
    if missing:
        raise DecisionFileError(f"{where}: missing key(s) {missing}")
    row = {k: _text(obj[k], where, k) for k in ("run_id", "question_id", "passage_id", "question_text")}
    if obj["step"] not in STEPS:
        raise DecisionFileError(f"{where}: step must be one of {STEPS}, got {obj['step']!r}")
    if obj["decision"] not in DECISIONS:
        raise DecisionFileError(f"{where}: decision must be one of {DECISIONS}, got {obj['decision']!r}")
    rank = obj["dense_rank"]
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise DecisionFileError(f"{where}: dense_rank must be an integer >= 1 or null, got {rank!r}")
    if not isinstance(obj["is_labelled_positive"], bool):
        raise DecisionFileError(
            f"{where}: is_labelled_positive must be true or false, got {obj['is_labelled_positive']!r}"
        )
    row.update(
        step=obj["step"],
        decision=obj["decision"],
        dense_rank=rank,
        dense_score=None if obj["dense_score"] is None else _number(obj["dense_score"], where, "dense_score"),
        ce_prob=None if obj["ce_prob"] is None else _number(obj["ce_prob"], where, "ce_prob", 0.0, 1.0),
        neg_threshold=_number(obj["neg_threshold"], where, "neg_threshold", 0.0, 1.0),
        pos_threshold=_number(obj["pos_threshold"], where, "pos_threshold", 0.0, 1.0),
        is_labelled_positive=int(obj["is_labelled_positive"]),
        dual_encoder=_text(obj["dual_encoder"], where, "dual_encoder", allow_empty=True),
        cross_encoder=_text(obj["cross_encoder"], where, "cross_encoder", allow_empty=True),
    )
    return row


def read_decision_file(path: Path) -> list[dict]:
    """All records of a decisions.jsonl, validated; each row remembers its `line`."""
    rows: list[dict] = []
    seen: dict[tuple, int] = {}
    texts: dict[str, tuple[str, int]] = {}
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise DecisionFileError(f"cannot read decision file {path}: {err}") from err
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DecisionFileError(f"{where}: not valid JSON ({err.msg})") from err
            row = parse_record(obj, where)
            key = tuple(row[k] for k in KEY_COLUMNS)
            if key in seen:
                raise DecisionFileError(f"{where}: duplicate record for {key} (first on line {seen[key]})")
            seen[key] = number
            qid, text = row["question_id"], row["question_text"]
            if qid in texts and texts[qid][0] != text:
                raise DecisionFileError(f"{where}: question {qid!r} has a different text than on line {texts[qid][1]}")
            texts.setdefault(qid, (text, number))
            row["line"] = number
            rows.append(row)
    if not rows:
        raise DecisionFileError(f"{path}: no decision records")
    return rows


def read_corpus(path: Path, wanted: set[str]) -> dict[str, Passage]:
    """The passages of a BEIR corpus.jsonl whose ids are in `wanted` (the file is streamed)."""
    found: dict[str, Passage] = {}
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise DecisionFileError(f"cannot read corpus {path}: {err}") from err
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                pid = obj["_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DecisionFileError(f"{path}:{number}: not a corpus record with an _id ({err})") from err
            if pid in wanted:
                found[pid] = Passage(str(pid), str(obj.get("title") or ""), str(obj.get("text") or ""))
    return found


def add_derived_columns(rows: list[dict], seed: int = 0) -> None:
    """Fill ce_rank, disagreement, uncertainty, sample_key and overlap_key in place."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        row["ce_rank"] = None
        if row["ce_prob"] is not None:
            groups[(row["run_id"], row["step"], row["question_id"])].append(row)
    for group in groups.values():
        group.sort(key=lambda r: (-r["ce_prob"], r["dense_rank"] or math.inf, r["passage_id"]))
        for rank, row in enumerate(group, start=1):
            row["ce_rank"] = rank
    for row in rows:
        p, neg, pos = row["ce_prob"], row["neg_threshold"], row["pos_threshold"]
        if p is None:
            row["uncertainty"] = None
        elif row["step"] == "denoise":  # only the negative threshold decides in step 3
            row["uncertainty"] = abs(p - neg)
        else:
            row["uncertainty"] = min(abs(p - neg), abs(p - pos))
        both = row["dense_rank"] is not None and row["ce_rank"] is not None
        row["disagreement"] = abs(math.log2(row["dense_rank"]) - math.log2(row["ce_rank"])) if both else None
        row["sample_key"] = unit_hash(seed, "sample", *(row[k] for k in KEY_COLUMNS))
        row["overlap_key"] = unit_hash(seed, "overlap", row["question_id"], row["passage_id"])


_INSERT_COLUMNS = (
    *KEY_COLUMNS, *VALUE_COLUMNS, "ce_rank", "uncertainty", "disagreement", "sample_key", "overlap_key",
)  # fmt: skip


def import_decisions(
    store: StoreLike, decisions_path: str | Path, corpus_path: str | Path | None = None, *, seed: int = 0
) -> ImportResult:
    """Import a decisions.jsonl (all or nothing, idempotent). Passage texts come from `corpus_path`;
    without it every passage must already be in the store."""
    path = Path(decisions_path)
    rows = read_decision_file(path)
    add_derived_columns(rows, seed)
    wanted = {r["passage_id"] for r in rows}
    passages = read_corpus(Path(corpus_path), wanted) if corpus_path is not None else {}
    first_line = {}
    for r in rows:
        first_line.setdefault(r["passage_id"], r["line"])
    questions = {r["question_id"]: r["question_text"] for r in rows}
    run_ids = tuple(sorted({r["run_id"] for r in rows}))

    def tx(db: sqlite_utils.Database) -> ImportResult:
        missing = sorted(wanted - passages.keys())
        if missing:
            stored = set()
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                stored.update(r[0] for r in db.execute(f"SELECT id FROM passages WHERE id IN ({marks})", chunk))
            absent = [p for p in missing if p not in stored]
            if absent:
                where = f"{path}:{first_line[absent[0]]}"
                source = f"in {corpus_path}" if corpus_path is not None else "in the store (pass a corpus.jsonl)"
                raise DecisionFileError(f"{where}: passage id {absent[0]!r} not found {source} ({len(absent)} missing)")
        new_questions = upsert_questions_tx(db, questions)
        new_passages = upsert_passages_tx(db, list(passages.values()))
        now = utc_now()
        existing: dict[tuple, tuple] = {}
        for run_id in run_ids:
            db.execute("INSERT OR IGNORE INTO runs (id, created_at) VALUES (?, ?)", [run_id, now])
            cols = ", ".join(KEY_COLUMNS + VALUE_COLUMNS)
            for stored in db.execute(f"SELECT {cols} FROM decisions WHERE run_id = ?", [run_id]):
                existing[tuple(stored[:4])] = tuple(stored[4:])
        fresh = []
        for r in rows:
            key = tuple(r[k] for k in KEY_COLUMNS)
            if key not in existing:
                fresh.append(r)
            elif existing[key] != tuple(r[k] for k in VALUE_COLUMNS):
                raise DecisionFileError(
                    f"{path}:{r['line']}: run {r['run_id']!r} already holds a different decision for step "
                    f"{r['step']!r}, question {r['question_id']!r}, passage {r['passage_id']!r}; a changed run "
                    "needs a new run_id"
                )
        marks = ", ".join("?" * len(_INSERT_COLUMNS))
        db.conn.executemany(
            f"INSERT INTO decisions ({', '.join(_INSERT_COLUMNS)}) VALUES ({marks})",
            ([r[c] for c in _INSERT_COLUMNS] for r in fresh),
        )
        for run_id in run_ids:
            n_run = sum(r["run_id"] == run_id for r in rows)
            n_new = sum(r["run_id"] == run_id for r in fresh)
            db.execute(
                "INSERT INTO imports (run_id, source, n_records, n_inserted, imported_at) VALUES (?, ?, ?, ?, ?)",
                [run_id, str(path), n_run, n_new, now],
            )
        return ImportResult(
            str(path), run_ids, len(rows), len(fresh), len(rows) - len(fresh), new_questions, new_passages
        )

    result = as_store(store).write(tx)
    log.info("imported %s: %d records, %d new", path, result.n_records, result.n_inserted)
    return result


def runs(store: StoreLike) -> pd.DataFrame:
    """One row per imported run: run_id, created_at, n_decisions, and one count column per decision."""
    sql = (
        "SELECT r.id AS run_id, r.created_at, d.decision, count(d.id) AS n FROM runs r"
        " LEFT JOIN decisions d ON d.run_id = r.id GROUP BY r.id, d.decision ORDER BY r.created_at, r.id"
    )
    rows = as_store(store).read(lambda db: list(db.query(sql)))
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(
            row["run_id"], {"run_id": row["run_id"], "created_at": row["created_at"], "n_decisions": 0}
        )
        if row["decision"] is not None:
            entry[row["decision"]] = row["n"]
            entry["n_decisions"] += row["n"]
    columns = ["run_id", "created_at", "n_decisions", *DECISIONS]
    return (
        pd.DataFrame(list(table.values()), columns=columns)
        .fillna({d: 0 for d in DECISIONS})
        .astype({d: int for d in DECISIONS})
    )


def resolve_run(db: sqlite_utils.Database, run_id: str | None) -> str:
    """`run_id` if it exists; with None, the only run in the store. Otherwise a clear error."""
    ids = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY created_at, id")]
    if run_id is None:
        if len(ids) == 1:
            return ids[0]
        raise UnknownIdError(
            f"the store holds {len(ids)} runs {ids[:10]}; name one with run_id" if ids else "no run imported yet"
        )
    if run_id not in ids:
        raise UnknownIdError(f"unknown run id {run_id!r}; stored runs: {ids[:10]}")
    return run_id
