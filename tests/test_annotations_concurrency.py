"""Many writers at once lose nothing; a killed writer leaves a consistent database (real files, real processes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import annotations as ann

ROOT = Path(__file__).resolve().parents[1]
N_PASSAGES = 10


def _prepare(path: Path, journal: str) -> ann.Store:
    # A short SQLite busy timeout forces the store's own retry-with-backoff loop to do the work.
    store = ann.Store(ann.StoreConfig(path, journal_mode=journal, busy_timeout_s=0.05, synchronous="normal"))
    ann.ensure_question(store, "q", "a question")
    ann.ensure_passages(store, [(f"p{i}", "", f"passage {i}") for i in range(N_PASSAGES)])
    return store


def _threads(store: ann.Store, worker: str, n_threads: int, n_each: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(n_each):
                ann.judge(store, f"{worker}-t{t}", "q", f"p{i % N_PASSAGES}", i % 4, seconds=0.1)
                if i % 10 == 0:
                    ann.current_labels(store, annotator=f"{worker}-t{t}")  # readers interleave with writers
        except BaseException as err:  # noqa: BLE001 (collected and re-raised by the test)
            errors.append(err)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _process_main(path: str, journal: str, worker: str, n_threads: int, n_each: int) -> None:
    store = ann.Store(ann.StoreConfig(path, journal_mode=journal, busy_timeout_s=0.05, synchronous="normal"))
    errors = _threads(store, worker, n_threads, n_each)
    if errors:
        print(f"{worker}: {errors[0]!r}", file=sys.stderr)
        os._exit(1)


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_threads_and_processes_writing_at_once_lose_nothing(tmp_path: Path, journal: str) -> None:
    store = _prepare(tmp_path / "shared.db", journal)
    n_procs, n_threads, n_each = 2, 1, 50  # 2 processes x 1 thread + this process x 2 threads = 4 writers x 50
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_process_main, args=(str(store.path), journal, f"proc{p}", n_threads, n_each))
        for p in range(n_procs)
    ]
    for p in procs:
        p.start()
    errors = _threads(store, "main", 2, n_each)  # this process writes too, from two threads, at the same time
    for p in procs:
        p.join(timeout=120)
    assert not errors, errors
    assert [p.exitcode for p in procs] == [0] * n_procs
    log = ann.history(store)
    assert len(log) == 4 * n_each == 200
    assert log.groupby("annotator").size().to_dict() == dict.fromkeys(
        ["main-t0", "main-t1", "proc0-t0", "proc1-t0"], n_each
    )
    assert log["judgment_id"].is_unique


def test_a_lock_held_too_long_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    store = _prepare(tmp_path / "locked.db", "wal")
    quick = ann.Store(ann.StoreConfig(store.path, busy_timeout_s=0.05, retry_deadline_s=0.3))
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(ann.StoreBusyError, match="stayed locked .* nothing was written"):
            ann.judge(quick, "alice", "q", "p0", 2)
        assert time.monotonic() - started < 5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(ann.history(store)) == 0
    ann.judge(quick, "alice", "q", "p0", 2)  # and works once the lock is gone
    assert len(ann.history(store)) == 1


_HANG_IN_TRANSACTION = """
import sys, time
from pathlib import Path
import annotations as ann
store = ann.Store(ann.StoreConfig(sys.argv[1], journal_mode=sys.argv[2]))
def tx(db):
    db.execute("INSERT OR IGNORE INTO annotators (id, created_at) VALUES ('bulk', 'now')")
    db.conn.executemany(
        "INSERT INTO judgments (annotator_id, question_id, passage_id, action, grade, created_at) VALUES ('bulk', 'q', 'p0', 'grade', 1, 'now')",
        [()] * 20000,
    )
    Path(sys.argv[3]).write_text("inside")  # tell the parent we are mid-transaction
    time.sleep(60)
store.write(tx)
"""


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_process_killed_mid_transaction_leaves_a_consistent_database(tmp_path: Path, journal: str) -> None:
    store = _prepare(tmp_path / "crash.db", journal)
    ann.judge(store, "alice", "q", "p1", 3)  # committed before the crash: must survive
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _HANG_IN_TRANSACTION, str(store.path), journal, str(marker)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "child exited early"
            assert time.monotonic() < deadline, "child never reached the middle of its transaction"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert _integrity(store.path) == "ok"
    log = ann.history(store)
    assert log["annotator"].tolist() == ["alice"]  # none of the killed transaction, all of the earlier one
    ann.judge(store, "bob", "q", "p2", 0)  # the store is writable again (hot journal rolled back)
    assert _integrity(store.path) == "ok"


_BIG_IMPORT = """
import sys
import annotations as ann
print("start", flush=True)
ann.import_decisions(ann.Store(sys.argv[1]), sys.argv[2], sys.argv[3])
print("done", flush=True)
"""


def test_an_import_killed_at_a_random_moment_is_all_or_nothing(tmp_path: Path) -> None:
    n_questions, per_question = 1500, 20
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"p{i}", "title": "", "text": f"text {i}"}) + "\n" for i in range(per_question))
    )
    decisions = tmp_path / "decisions.jsonl"
    with open(decisions, "w") as handle:
        for q in range(n_questions):
            for r in range(per_question):
                rec = {"run_id": "big", "step": "augment", "question_id": f"q{q}", "question_text": f"question {q}",
                       "passage_id": f"p{r}", "dense_rank": r + 1, "dense_score": 1.0, "ce_prob": r / per_question,
                       "neg_threshold": 0.1, "pos_threshold": 0.9, "decision": "ignored", "is_labelled_positive": False,
                       "dual_encoder": "d", "cross_encoder": "c"}  # fmt: skip
                handle.write(json.dumps(rec) + "\n")
    db = tmp_path / "import.db"
    ann.ensure_question(db, "before", "committed before the crash")
    child = subprocess.Popen(
        [sys.executable, "-c", _BIG_IMPORT, str(db), str(decisions), str(corpus)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "start"
    time.sleep(0.8)  # parsing takes a while; the kill lands while reading or while writing
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert _integrity(db) == "ok"
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
        questions = conn.execute("SELECT count(*) FROM questions").fetchone()[0]
    assert (n, questions) in {(0, 1), (n_questions * per_question, n_questions + 1)}
