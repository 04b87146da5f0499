"""Command line: `python -m annotations {import,audit,export,runs} ...`.

    python -m annotations import RUN/decisions.jsonl --corpus DATA/corpus.jsonl [--db PATH]
    python -m annotations audit [--run RUN_ID] [--json] [--db PATH]
    python -m annotations export {qrels,jsonl,hf,train} OUT [--run RUN_ID] [--db PATH]
    python -m annotations runs [--db PATH]

Without `--db` the database path comes from `config.resolve_db_path()` (env `ROCKETQA_DB`, then
`/data/annotations.db` on Spaces storage, then `./annotations.db`). Errors print one line to
stderr and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import pandas as pd

from .audit import audit_report
from .config import StoreConfig, resolve_db_path
from .decisions import import_decisions, runs
from .errors import AnnotationError
from .export import export_hf, export_jsonl, export_qrels, export_training
from .store import Store

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m annotations", description="Human judgments of RocketQA pseudo-labels."
    )
    parser.add_argument("--db", help="database path (default: ROCKETQA_DB, /data/annotations.db, ./annotations.db)")
    parser.add_argument("--journal", choices=("wal", "delete"), help="journal mode (delete for network file systems)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="import a pipeline decisions.jsonl (idempotent, all or nothing)")
    p.add_argument("decisions", nargs="+", help="decisions.jsonl file(s) written by pipeline steps 3/4")
    p.add_argument("--corpus", help="BEIR corpus.jsonl with the passage texts")
    p.add_argument("--seed", type=int, default=0, help="seed of the random audit order (default 0)")

    p = sub.add_parser("audit", help="precision, threshold sweep, calibration, agreement, annotators")
    p.add_argument("--run", help="run id (default: the only run)")
    p.add_argument("--json", action="store_true", help="print the whole audit as JSON")

    p = sub.add_parser("export", help="write labels as qrels, JSONL, Parquet (HF datasets) or corrected train.jsonl")
    p.add_argument("format", choices=("qrels", "jsonl", "hf", "train"))
    p.add_argument("out", help="output file")
    p.add_argument("--run", help="run id (required for train when several runs are stored)")

    sub.add_parser("runs", help="list imported runs and their decision counts")
    return parser


def _store(args: argparse.Namespace) -> Store:
    if args.db:
        return Store(StoreConfig(path=args.db, journal_mode=args.journal or "wal"))
    location = resolve_db_path()
    print(location.notice, file=sys.stderr)
    return Store(
        location.store_config() if not args.journal else StoreConfig(path=location.path, journal_mode=args.journal)
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store = _store(args)
        if args.command == "import":
            for path in args.decisions:
                r = import_decisions(store, path, args.corpus, seed=args.seed)
                print(
                    f"{r.source}: runs {', '.join(r.run_ids)}: {r.n_records} records, {r.n_inserted} new, "
                    f"{r.n_already_present} already present; {r.n_new_questions} new questions, {r.n_new_passages} new passages"
                )
        elif args.command == "audit":
            report = audit_report(store, args.run)
            if args.json:
                print(json.dumps(report.to_dict(), indent=2))
            else:
                print(_render(report))
        elif args.command == "export":
            if args.format == "train":
                t = export_training(store, args.out, args.run)
                print(
                    f"{t.path}: {t.n_questions} questions, {t.n_positives} positives, {t.n_negatives} negatives, "
                    f"{t.n_overridden} decisions overridden by humans, {t.n_questions_dropped} questions dropped"
                )
            else:
                fn = {"qrels": export_qrels, "jsonl": export_jsonl, "hf": export_hf}[args.format]
                r = fn(store, args.out, args.run)
                print(f"{r.path}: {r.n_rows} rows")
        elif args.command == "runs":
            print(runs(store).to_string(index=False))
    except AnnotationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _render(report) -> str:
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        sweep = report.sweep
        prec = report.precision[
            ["decision", "claim", "population", "sampled", "skipped", "graded", "precision", "ci_low", "ci_high"]
        ]
        parts = [
            f"Audit of run {report.run_id}",
            "", "Precision on the random sample (Wilson 95% CI):", prec.to_string(index=False),
            "", "Confusion (random sample; rows: machine decision):", report.confusion.to_string(),
            "", f"Threshold sweep on {sweep.n_items} items: recommended neg_threshold {sweep.recommended_neg_threshold} "
            f"(precision of negatives >= {sweep.neg_target}), pos_threshold {sweep.recommended_pos_threshold} "
            f"(precision of positives >= {sweep.pos_target})",
            "", f"Calibration: Brier {report.calibration.brier:.4f} on {report.calibration.n_items} items",
            report.calibration.table.to_string(index=False),
            "", "Agreement:", report.agreement.to_string(index=False) if len(report.agreement) else "(no overlapping labels)",
            "", "Annotators:", report.annotators.to_string(index=False) if len(report.annotators) else "(none)",
            "", *report.notes,
        ]  # fmt: skip
    return "\n".join(parts)
