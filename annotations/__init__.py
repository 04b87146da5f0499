"""Human judgments of RocketQA pseudo-labels: an SQLite store, a judging queue, an audit, exports.

Where things live:

- `config`: where the database is (`resolve_db_path`) and how it is opened (`StoreConfig`).
- `schema` / `store`: migrations, one connection per call, write transactions that retry when busy.
- `judgments`: register questions/passages, `judge`, `skip`, `retract`, `undo_last`.
- `labels`: current labels, full history, consensus grade of a pair.
- `decisions`: import the pipeline's `decisions.jsonl` (idempotent, all or nothing).
- `queue`: what an annotator judges next (random sample, uncertain, disagreements, overlap).
- `audit` / `thresholds` / `stats`: precision with intervals, confusion, threshold sweep,
  calibration, agreement, annotator statistics.
- `export`: TREC qrels, JSONL with provenance, Parquet for HF `datasets`, corrected train.jsonl.
- `cli`: `python -m annotations {import,audit,export,runs}`.

This package imports neither `engine` nor `gradio`; it stores ids, texts, scores and labels.
"""

from __future__ import annotations

from .audit import (
    AuditReport,
    agreement,
    annotator_stats,
    audit_report,
    confusion,
    labelled_decisions,
    precision,
)
from .config import DbLocation, StoreConfig, resolve_db_path
from .decisions import ImportResult, import_decisions, runs
from .errors import (
    AnnotationError,
    DecisionFileError,
    InvalidInputError,
    StoreBusyError,
    StoreFormatError,
    UnknownIdError,
)
from .export import export_hf, export_jsonl, export_qrels, export_training
from .judgments import ensure_passages, ensure_question, judge, retract, skip, undo_last
from .labels import consensus_labels, current_labels, history, is_relevant
from .queue import QueueConfig, QueueItem, next_items
from .store import Store
from .thresholds import Calibration, ThresholdSweep

__all__ = [
    "AnnotationError", "AuditReport", "Calibration", "DbLocation", "DecisionFileError", "ImportResult",
    "InvalidInputError", "QueueConfig", "QueueItem", "Store", "StoreBusyError", "StoreConfig", "StoreFormatError",
    "ThresholdSweep", "UnknownIdError", "agreement", "annotator_stats", "audit_report", "confusion",
    "consensus_labels", "current_labels", "ensure_passages", "ensure_question", "export_hf", "export_jsonl",
    "export_qrels", "export_training", "history", "import_decisions", "is_relevant", "judge", "labelled_decisions",
    "next_items", "precision", "resolve_db_path", "retract", "runs", "skip", "undo_last",
]  # fmt: skip
