"""The annotation database schema, as an ordered list of migrations.

The schema version is SQLite's `user_version` pragma: version N means migrations 1..N have been
applied. Opening a database applies the missing migrations in one `BEGIN IMMEDIATE` transaction
(so two processes opening a new file at once cannot both migrate it), and refuses, with a clear
error and without writing anything:

- a file that is not SQLite at all (SQLite reports SQLITE_NOTADB on the first read; nothing is written);
- an SQLite file that belongs to another application (`application_id`, or foreign tables);
- a database made by a newer version of this code (`user_version` above the latest migration).

Tables (see `docs/FORMATS.md` for the decision-record fields):
questions, passages, runs, imports (one row per imported file), decisions (machine decisions,
unique per run/step/question/passage), annotators, judgments (append-only: triggers forbid
UPDATE and DELETE), served (which queue items were handed to whom, to avoid handing the same
unjudged item to two annotators at once). The view `current_judgments` is the current label of
each (annotator, question, passage): the latest grade or skip that no later row retracted.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .errors import StoreFormatError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x52514131  # "RQA1": marks a file as a RocketQA workbench annotation store

DECISIONS = (
    "positive",
    "hard_negative",
    "dropped_false_negative",
    "random_fill",
    "pseudo_positive",
    "pseudo_negative",
    "ignored",
)
STEPS = ("denoise", "augment")
ACTIONS = ("grade", "skip", "retract")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# Each migration is a list of single SQL statements (executescript would COMMIT implicitly).
MIGRATIONS: list[list[str]] = [
    # 1: the initial schema
    [
        """CREATE TABLE questions (
            id TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE passages (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE imports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,
            n_records INTEGER NOT NULL,
            n_inserted INTEGER NOT NULL,
            imported_at TEXT NOT NULL)""",
        f"""CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            step TEXT NOT NULL CHECK (step IN {_in(STEPS)}),
            question_id TEXT NOT NULL REFERENCES questions(id),
            passage_id TEXT NOT NULL REFERENCES passages(id),
            dense_rank INTEGER CHECK (dense_rank IS NULL OR dense_rank >= 1),
            dense_score REAL,
            ce_prob REAL CHECK (ce_prob IS NULL OR (ce_prob >= 0 AND ce_prob <= 1)),
            neg_threshold REAL NOT NULL,
            pos_threshold REAL NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN {_in(DECISIONS)}),
            is_labelled_positive INTEGER NOT NULL CHECK (is_labelled_positive IN (0, 1)),
            dual_encoder TEXT NOT NULL,
            cross_encoder TEXT NOT NULL,
            ce_rank INTEGER,          -- rank by ce_prob among the question's scored decisions
            uncertainty REAL,         -- distance of ce_prob to the nearest threshold that matters
            disagreement REAL,        -- |log2(dense_rank) - log2(ce_rank)|
            sample_key REAL NOT NULL, -- uniform in [0, 1): order of the random audit sample
            overlap_key REAL NOT NULL,-- uniform in [0, 1) per (question, passage): double-annotation
            UNIQUE (run_id, step, question_id, passage_id))""",
        "CREATE INDEX decisions_sample ON decisions (run_id, decision, sample_key)",
        "CREATE INDEX decisions_pair ON decisions (question_id, passage_id)",
        "CREATE INDEX decisions_uncertainty ON decisions (run_id, uncertainty)",
        "CREATE INDEX decisions_disagreement ON decisions (run_id, disagreement)",
        """CREATE TABLE annotators (
            id TEXT PRIMARY KEY CHECK (length(trim(id)) > 0),
            created_at TEXT NOT NULL)""",
        f"""CREATE TABLE judgments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            annotator_id TEXT NOT NULL REFERENCES annotators(id),
            question_id TEXT NOT NULL REFERENCES questions(id),
            passage_id TEXT NOT NULL REFERENCES passages(id),
            action TEXT NOT NULL CHECK (action IN {_in(ACTIONS)}),
            grade INTEGER CHECK (grade IS NULL OR grade IN (0, 1, 2, 3)),
            retracts INTEGER REFERENCES judgments(id),
            note TEXT,
            seconds REAL CHECK (seconds IS NULL OR seconds >= 0),
            suggestion_visible INTEGER NOT NULL DEFAULT 0 CHECK (suggestion_visible IN (0, 1)),
            decision_id INTEGER REFERENCES decisions(id),
            stratum TEXT,
            created_at TEXT NOT NULL,
            CHECK ((action = 'grade') = (grade IS NOT NULL)),
            CHECK ((action = 'retract') = (retracts IS NOT NULL)))""",
        "CREATE INDEX judgments_key ON judgments (annotator_id, question_id, passage_id)",
        "CREATE INDEX judgments_pair ON judgments (question_id, passage_id)",
        "CREATE UNIQUE INDEX judgments_retracts ON judgments (retracts) WHERE retracts IS NOT NULL",
        """CREATE TRIGGER judgments_no_update BEFORE UPDATE ON judgments
           BEGIN SELECT RAISE(ABORT, 'judgments are append-only: record a retraction instead'); END""",
        """CREATE TRIGGER judgments_no_delete BEFORE DELETE ON judgments
           BEGIN SELECT RAISE(ABORT, 'judgments are append-only: record a retraction instead'); END""",
        """CREATE VIEW current_judgments AS
           SELECT * FROM (
               SELECT j.*, row_number() OVER (
                   PARTITION BY j.annotator_id, j.question_id, j.passage_id ORDER BY j.id DESC) AS rn
               FROM judgments j
               WHERE j.action IN ('grade', 'skip')
                 AND NOT EXISTS (SELECT 1 FROM judgments r WHERE r.retracts = j.id))
           WHERE rn = 1""",
        """CREATE TABLE served (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            annotator_id TEXT NOT NULL,
            decision_id INTEGER NOT NULL REFERENCES decisions(id),
            stratum TEXT NOT NULL,
            served_at REAL NOT NULL)""",
        "CREATE INDEX served_decision ON served (decision_id, served_at)",
        "CREATE INDEX served_time ON served (served_at)",
    ],
]
LATEST_VERSION = len(MIGRATIONS)


def check_path(path: Path) -> None:
    """Refuse a directory. The file itself is never opened here: opening and closing a database file
    outside SQLite would drop the POSIX locks SQLite holds on it in other threads of this process."""
    if path.is_dir():
        raise StoreFormatError(f"{path} is a directory, not an SQLite database file")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_compatible(conn: sqlite3.Connection, path: Path) -> int:
    """Return the current schema version, or raise `StoreFormatError` for a foreign/newer file."""
    try:
        version = schema_version(conn)
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    except sqlite3.OperationalError:
        raise  # busy / locked / cannot open: the store's retry loop or the caller handles these
    except sqlite3.DatabaseError as err:
        if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise StoreFormatError(f"{path} is not an SQLite database ({err})") from err
        raise StoreFormatError(f"{path} is not a readable SQLite database: {err}") from err
    if app_id not in (0, APPLICATION_ID):
        raise StoreFormatError(f"{path} is an SQLite database of another application (application_id {app_id:#x})")
    if version > LATEST_VERSION:
        raise StoreFormatError(
            f"{path} was written by a newer version of the annotation store (schema {version}; this code "
            f"knows up to {LATEST_VERSION}). Upgrade the code; nothing was changed."
        )
    if version == 0:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")]
        if tables:
            raise StoreFormatError(
                f"{path} is an SQLite database but not an annotation store (it has tables {sorted(tables)[:5]})"
            )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Apply missing migrations atomically; return the version after. `conn` is in autocommit mode."""
    if check_compatible(conn, path) == LATEST_VERSION:
        return LATEST_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_compatible(conn, path)  # re-read under the write lock: another process may have won
        for number in range(version + 1, LATEST_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            log.info("annotation store %s: applied migration %d", path, number)
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION
