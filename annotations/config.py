"""Where the annotation database lives and how it is opened.

`StoreConfig` is the frozen configuration of one store (path, journal mode, timeouts).
`resolve_db_path()` picks the path the way the app is deployed:

1. the environment variable `ROCKETQA_DB`, if set;
2. `/data/annotations.db` when `/data` is a writable directory (Hugging Face Spaces persistent
   storage, a network mount: the rollback journal is chosen there because WAL needs shared memory
   that network file systems do not provide reliably);
3. `./annotations.db` otherwise. On a Space (`SPACE_ID` set) without `/data` this path is
   ephemeral: it disappears when the Space restarts, and the returned notice says so.

Nothing here opens the database; see `annotations.store`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_FILENAME = "annotations.db"
SPACES_DATA_DIR = "/data"  # Hugging Face Spaces mounts persistent storage here
JOURNAL_MODES = ("wal", "delete")


@dataclass(frozen=True)
class StoreConfig:
    """How to open one annotation database."""

    path: Path
    # "wal": readers never block the writer (local disks). "delete": classic rollback journal,
    # the safe choice on network file systems (Spaces storage buckets, NFS).
    journal_mode: str = "wal"
    # Seconds SQLite itself waits for a lock before reporting SQLITE_BUSY.
    busy_timeout_s: float = 10.0
    # Total seconds a write keeps retrying (with backoff) before `StoreBusyError` is raised.
    retry_deadline_s: float = 60.0
    # "full" fsyncs every commit: a power loss loses no acknowledged judgment.
    synchronous: str = "full"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.journal_mode not in JOURNAL_MODES:
            raise ValueError(f"journal_mode must be one of {JOURNAL_MODES}, got {self.journal_mode!r}")
        if self.synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {self.synchronous!r}")
        if self.busy_timeout_s <= 0 or self.retry_deadline_s <= 0:
            raise ValueError("busy_timeout_s and retry_deadline_s must be positive")


@dataclass(frozen=True)
class DbLocation:
    """The resolved database path, whether it survives a restart, and a sentence saying so."""

    path: Path
    journal_mode: str
    ephemeral: bool
    source: str  # "env" | "spaces-storage" | "local"
    notice: str

    def store_config(self, **overrides: object) -> StoreConfig:
        """A `StoreConfig` for this location (keyword overrides for timeouts etc.)."""
        return StoreConfig(path=self.path, journal_mode=self.journal_mode, **overrides)  # type: ignore[arg-type]


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK)


def resolve_db_path(
    env: Mapping[str, str] | None = None,
    data_dir: str = SPACES_DATA_DIR,
    cwd: Path | None = None,
) -> DbLocation:
    """Decide where the annotation database lives (see the module docstring for the order).

    `env`, `data_dir` and `cwd` default to the real environment; tests pass their own.
    `ROCKETQA_DB_JOURNAL` ("wal" or "delete") overrides the journal mode in every case.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    on_space = bool(env.get("SPACE_ID"))
    journal_override = env.get("ROCKETQA_DB_JOURNAL", "").strip().lower() or None
    if journal_override is not None and journal_override not in JOURNAL_MODES:
        raise ValueError(f"ROCKETQA_DB_JOURNAL must be one of {JOURNAL_MODES}, got {journal_override!r}")

    if env.get("ROCKETQA_DB"):
        path = Path(env["ROCKETQA_DB"]).expanduser()
        on_mount = _is_under(path, Path(data_dir))
        ephemeral = on_space and not on_mount
        mode = journal_override or ("delete" if on_space and on_mount else "wal")
        notice = f"Annotations are stored in {path} (from ROCKETQA_DB)."
        if ephemeral:
            notice += " WARNING: this Space path is not persistent storage; labels are lost on restart."
        return DbLocation(path, mode, ephemeral, "env", notice)

    if _writable_dir(data_dir):
        path = Path(data_dir) / DEFAULT_FILENAME
        mode = journal_override or "delete"
        notice = f"Annotations are stored in persistent storage at {path} (journal mode {mode})."
        return DbLocation(path, mode, False, "spaces-storage", notice)

    path = cwd / DEFAULT_FILENAME
    mode = journal_override or "wal"
    if on_space:
        notice = (
            f"WARNING: no persistent storage is mounted at {data_dir}; annotations go to {path}, which is "
            "EPHEMERAL and is lost when the Space restarts. Attach persistent storage or set ROCKETQA_DB."
        )
        log.warning(notice)
        return DbLocation(path, mode, True, "local", notice)
    return DbLocation(path, mode, False, "local", f"Annotations are stored in {path}.")


def _is_under(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True
