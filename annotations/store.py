"""Opening the annotation database: one connection per call, transactions that retry when busy.

A `Store` holds only configuration. Every public function of `annotations` takes a `Store` (or a
plain path) and opens a fresh SQLite connection for the duration of the call, so it is safe to
call from many threads (Gradio workers) and many processes at once:

- `Store.read(fn)` runs `fn(db)` on a fresh connection;
- `Store.write(fn)` runs `fn(db)` inside `BEGIN IMMEDIATE ... COMMIT`. The write lock is taken up
  front, so two writers never deadlock upgrading a read lock. If the database is busy beyond
  SQLite's own busy timeout, the whole transaction is rolled back and retried with jittered
  exponential backoff until `retry_deadline_s`; only then is `StoreBusyError` raised. `fn` must
  therefore touch nothing but the database. Any other exception rolls the transaction back, so
  an error never leaves half a write behind; SQLite's journal does the same for a killed process.

`db` is a `sqlite_utils.Database` wrapping the connection; sqlite-utils' own `atomic()` blocks
nest as savepoints inside our transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from . import schema
from .config import StoreConfig
from .errors import StoreBusyError

log = logging.getLogger(__name__)

T = TypeVar("T")
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def utc_now() -> str:
    """The timestamp format of every `*_at` column: ISO 8601, UTC, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _is_busy(err: sqlite3.OperationalError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    message = str(err).lower()
    return "locked" in message or "busy" in message


class Store:
    """Configuration of one annotation database; opens a connection per call."""

    def __init__(self, config: StoreConfig | str | os.PathLike[str]) -> None:
        self.config = config if isinstance(config, StoreConfig) else StoreConfig(path=Path(config))

    @property
    def path(self) -> Path:
        return self.config.path

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, journal_mode={self.config.journal_mode!r})"

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite_utils.Database]:
        """A fresh, migrated connection in autocommit mode; closed when the block ends."""
        schema.check_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=self.config.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            version = schema.check_compatible(conn, self.path)  # first read: refuses non-SQLite files
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA synchronous = {self.config.synchronous.upper()}")
            if version < schema.LATEST_VERSION:
                self._set_journal_mode(conn)
                schema.migrate(conn, self.path)
            elif self.config.journal_mode != "wal":
                # WAL is persistent in the file; "delete" must be asked for explicitly. Switching a
                # WAL file back is only possible when no one else has it open; try once, quietly.
                self._set_journal_mode(conn)
            yield sqlite_utils.Database(conn, execute_plugins=False)
        finally:
            conn.close()

    def _set_journal_mode(self, conn: sqlite3.Connection) -> None:
        wanted = self.config.journal_mode
        try:
            got = conn.execute(f"PRAGMA journal_mode = {wanted}").fetchone()[0]
        except sqlite3.OperationalError as err:
            if not _is_busy(err):
                raise
            got = "busy"
        if got != wanted:
            log.warning("annotation store %s: wanted journal_mode=%s, have %s", self.path, wanted, got)

    def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` on a fresh connection, retrying while the database is busy."""
        return self._retrying(fn, write=False)

    def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn(db)` in one write transaction (all or nothing), retrying while busy."""
        return self._retrying(fn, write=True)

    def _retrying(self, fn: Callable[[sqlite_utils.Database], T], write: bool) -> T:
        deadline = time.monotonic() + self.config.retry_deadline_s
        delay = 0.01
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.connect() as db:
                    if not write:
                        return fn(db)
                    return _in_transaction(db, fn)
            except sqlite3.OperationalError as err:
                if not _is_busy(err):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusyError(
                        f"{self.path} stayed locked by other writers for {self.config.retry_deadline_s:.0f} s "
                        f"({attempt} attempts); nothing was written. Try again."
                    ) from err
                log.debug("annotation store busy (attempt %d), retrying in %.3f s", attempt, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)


def _in_transaction(db: sqlite_utils.Database, fn: Callable[[sqlite_utils.Database], T]) -> T:
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.conn.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    return result


StoreLike = Store | str | os.PathLike


def as_store(store: StoreLike) -> Store:
    """Accept a `Store`, a `StoreConfig` or a path wherever a store is expected."""
    if isinstance(store, Store):
        return store
    return Store(store)
