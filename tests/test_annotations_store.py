"""The annotation store: configuration, schema checks, and the append-only judgment log (real SQLite files)."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

import annotations as ann
from annotations import schema
from annotations.config import resolve_db_path
from annotations.labels import consensus_labels, lower_median


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "a.db"
    ann.ensure_question(path, "q1", "Who wrote Hamlet?")
    ann.ensure_passages(
        path, [("p1", "Hamlet", "Hamlet is a tragedy by William Shakespeare."), ("p2", "Paris", "Paris is in France.")]
    )
    return path


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- configuration -----------------------------------------------------------------------------


def test_resolve_db_path_order(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-data-mount")
    env = resolve_db_path({"ROCKETQA_DB": str(tmp_path / "x.db")}, data_dir=missing, cwd=tmp_path)
    assert (env.path, env.source, env.ephemeral, env.journal_mode) == (tmp_path / "x.db", "env", False, "wal")

    mount = tmp_path / "data"
    mount.mkdir()
    spaces = resolve_db_path({"SPACE_ID": "me/app"}, data_dir=str(mount), cwd=tmp_path)
    assert (spaces.path, spaces.source, spaces.ephemeral, spaces.journal_mode) == (
        mount / "annotations.db",
        "spaces-storage",
        False,
        "delete",
    )

    local = resolve_db_path({}, data_dir=missing, cwd=tmp_path)
    assert (local.path, local.ephemeral) == (tmp_path / "annotations.db", False)

    ephemeral = resolve_db_path({"SPACE_ID": "me/app"}, data_dir=missing, cwd=tmp_path)
    assert ephemeral.ephemeral and "EPHEMERAL" in ephemeral.notice

    forced = resolve_db_path({"ROCKETQA_DB_JOURNAL": "delete"}, data_dir=missing, cwd=tmp_path)
    assert forced.journal_mode == "delete"
    with pytest.raises(ValueError, match="ROCKETQA_DB_JOURNAL"):
        resolve_db_path({"ROCKETQA_DB_JOURNAL": "memory"}, data_dir=missing, cwd=tmp_path)


def test_journal_modes(tmp_path: Path) -> None:
    wal = ann.Store(ann.StoreConfig(tmp_path / "wal.db"))
    delete = ann.Store(ann.StoreConfig(tmp_path / "delete.db", journal_mode="delete"))
    for store, mode in ((wal, "wal"), (delete, "delete")):
        ann.ensure_question(store, "q", "text")
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode
    with pytest.raises(ValueError):
        ann.StoreConfig(tmp_path / "x.db", journal_mode="memory")


# --- schema --------------------------------------------------------------------------------------


def test_new_store_has_latest_schema(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"questions", "passages", "runs", "decisions", "annotators", "judgments", "served"} <= tables


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not a database\n" * 10)
    with pytest.raises(ann.StoreFormatError, match="not an SQLite database"):
        ann.ensure_question(path, "q", "text")
    assert path.read_text().startswith("this is a text file")  # untouched


def test_refuses_a_newer_schema_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    ann.ensure_question(path, "q", "text")
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    with pytest.raises(ann.StoreFormatError, match="newer version"):
        ann.ensure_question(path, "q2", "other")
    assert count(path, "questions") == 1


def test_refuses_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(ann.StoreFormatError, match="not an annotation store"):
        ann.current_labels(path)


# --- judgments ------------------------------------------------------------------------------------


def test_judge_skip_retract_and_current_label(db: Path) -> None:
    first = ann.judge(db, "alice", "q1", "p1", 2, seconds=4.5, note="mentions Shakespeare")
    second = ann.judge(db, "alice", "q1", "p1", 3)
    ann.skip(db, "bob", "q1", "p1")
    labels = ann.current_labels(db)
    assert labels[["annotator", "action", "grade"]].astype(object).values.tolist() == [
        ["alice", "grade", 3],
        ["bob", "skip", pd_na()],
    ]

    undo = ann.retract(db, "alice", second)
    assert ann.current_labels(db, annotator="alice")["judgment_id"].tolist() == [first]  # the earlier grade is back
    log = ann.history(db, annotator="alice")
    assert log["action"].tolist() == ["grade", "grade", "retract"]
    assert log["retracts"].tolist()[-1] == second and log["judgment_id"].tolist()[-1] == undo
    assert count(db, "judgments") == 4  # nothing was deleted


def pd_na():
    import pandas as pd

    return pd.NA


def test_skip_is_never_a_zero(db: Path) -> None:
    ann.skip(db, "alice", "q1", "p1")
    consensus = consensus_labels(db)
    assert consensus["grade"].isna().all() and consensus["n_skips"].tolist() == [1]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT grade FROM judgments").fetchall() == [(None,)]


def test_undo_last_and_retract_rules(db: Path) -> None:
    a = ann.judge(db, "alice", "q1", "p1", 1)
    b = ann.judge(db, "alice", "q1", "p2", 0)
    assert ann.history(db)["retracts"].dropna().tolist() == []
    undo = ann.undo_last(db, "alice")
    assert ann.history(db).set_index("judgment_id").loc[undo, "retracts"] == b
    assert ann.current_labels(db)["judgment_id"].tolist() == [a]
    with pytest.raises(ann.InvalidInputError, match="already retracted"):
        ann.retract(db, "alice", b)
    with pytest.raises(ann.InvalidInputError, match="another annotator"):
        ann.retract(db, "bob", a)
    with pytest.raises(ann.InvalidInputError, match="itself a retraction"):
        ann.retract(db, "alice", undo)
    with pytest.raises(ann.UnknownIdError):
        ann.retract(db, "alice", 999)
    assert ann.undo_last(db, "nobody") is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"question_id": "q404"}, ann.UnknownIdError, "unknown question id 'q404'"),
        ({"passage_id": "p404"}, ann.UnknownIdError, "unknown passage id 'p404'"),
        ({"grade": 4}, ann.InvalidInputError, "grade must be one of"),
        ({"grade": -1}, ann.InvalidInputError, "grade must be one of"),
        ({"grade": True}, ann.InvalidInputError, "grade must be one of"),
        ({"grade": 2.0}, ann.InvalidInputError, "grade must be one of"),
        ({"annotator": "   "}, ann.InvalidInputError, "annotator must be a non-empty name"),
        ({"annotator": ""}, ann.InvalidInputError, "annotator must be a non-empty name"),
        ({"seconds": -3}, ann.InvalidInputError, "seconds"),
        ({"stratum": "vip"}, ann.InvalidInputError, "stratum"),
        ({"decision_id": 77}, ann.UnknownIdError, "unknown decision id"),
    ],
)
def test_bad_input_raises_and_writes_nothing(db: Path, kwargs: dict, error: type, message: str) -> None:
    args = {"annotator": "alice", "question_id": "q1", "passage_id": "p1", "grade": 2} | kwargs
    with pytest.raises(error, match=message):
        ann.judge(db, args.pop("annotator"), args.pop("question_id"), args.pop("passage_id"), args.pop("grade"), **args)
    assert count(db, "judgments") == 0 and count(db, "annotators") == 0


def test_judgments_are_append_only_in_the_database(db: Path) -> None:
    ann.judge(db, "alice", "q1", "p1", 2)
    with sqlite3.connect(db) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE judgments SET grade = 0")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM judgments")


def test_registering_questions_and_passages(db: Path) -> None:
    assert ann.ensure_question(db, "q1", "Who wrote Hamlet?") is False  # same text: nothing new
    assert ann.ensure_question(db, "ask-1", "A question typed in the app") is True
    with pytest.raises(ann.InvalidInputError, match="different text"):
        ann.ensure_question(db, "q1", "Who wrote Macbeth?")
    assert (
        ann.ensure_passages(db, [("p1", "Hamlet", "Hamlet is a tragedy by William Shakespeare."), ("p3", "", "new")])
        == 1
    )
    with pytest.raises(ann.InvalidInputError, match="different title or text"):
        ann.ensure_passages(db, [("p4", "", "ok"), ("p2", "Paris", "changed")])
    assert count(db, "passages") == 3  # p4 was not written either: all or nothing


def test_consensus_is_the_lower_median() -> None:
    assert [lower_median(g) for g in ([3], [1, 2], [0, 3, 3], [3, 2, 1, 0])] == [3, 1, 3, 1]


def test_annotations_imports_neither_engine_nor_gradio() -> None:
    package = Path(ann.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in {"engine", "gradio", "demo"}, f"{source.name} imports {name}"
