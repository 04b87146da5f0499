"""Human labels out of the store: TREC qrels, JSONL with provenance, a Hugging Face file, and
corrected training data.

- `export_qrels`: `qid 0 pid grade`, one consensus grade per judged (question, passage); skips
  are left out (a skip is not a 0).
- `export_jsonl`: one line per current label of each annotator, with the question and passage
  texts, the judgment's own history (every row for that annotator and pair, retractions
  included) and every machine decision about the pair (run, step, scores, thresholds, models).
- `export_hf`: a flat Parquet file of consensus labels that `datasets.load_dataset("parquet",
  data_files=...)` or `Dataset.from_parquet` loads directly.
- `export_training`: the run's training examples with human labels overriding the machine, in the
  pipeline's input format (`train.jsonl`, docs/FORMATS.md), plus `<out>.meta.json` describing it.

Every file is written to a temporary name and renamed, so a failed export leaves no half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .audit import CLAIMS
from .decisions import resolve_run
from .labels import consensus_tx
from .store import StoreLike, as_store, utc_now


@dataclass(frozen=True)
class ExportResult:
    path: str
    n_rows: int


@dataclass(frozen=True)
class TrainingExport:
    path: str
    run_id: str
    n_questions: int
    n_positives: int
    n_negatives: int
    n_overridden: int  # machine decisions whose role a human label changed
    n_questions_dropped: int  # questions left without any positive


def _write_atomically(path: str | Path, lines: Iterable[str]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _run_pairs(db, run_id: str | None) -> set[tuple[str, str]] | None:
    if run_id is None:
        return None
    run = resolve_run(db, run_id)
    return {tuple(r) for r in db.execute("SELECT question_id, passage_id FROM decisions WHERE run_id = ?", [run])}


def export_qrels(store: StoreLike, out_path: str | Path, run_id: str | None = None) -> ExportResult:
    """TREC qrels of consensus grades (only pairs the run decided on, if `run_id` is given)."""

    def read(db):
        return consensus_tx(db), _run_pairs(db, run_id)

    labels, pairs = as_store(store).read(read)
    labels = labels[labels["grade"].notna()].sort_values(["question_id", "passage_id"])
    lines = [
        f"{q} 0 {p} {int(g)}\n"
        for q, p, g in zip(labels["question_id"], labels["passage_id"], labels["grade"])
        if pairs is None or (q, p) in pairs
    ]
    return ExportResult(str(out_path), _write_atomically(out_path, lines))


def export_jsonl(store: StoreLike, out_path: str | Path, run_id: str | None = None) -> ExportResult:
    """One JSON line per current label of each annotator, with full provenance (see module doc)."""

    def read(db):
        pairs = _run_pairs(db, run_id)
        current = list(db.query("SELECT * FROM current_judgments ORDER BY id"))
        rows = list(db.query("SELECT * FROM judgments ORDER BY id"))
        decisions = list(db.query("SELECT * FROM decisions ORDER BY id"))
        questions = dict(db.execute("SELECT id, text FROM questions").fetchall())
        passages = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, title, text FROM passages")}
        return pairs, current, rows, decisions, questions, passages

    pairs, current, rows, decisions, questions, passages = as_store(store).read(read)
    trail = defaultdict(list)
    for r in rows:
        trail[(r["annotator_id"], r["question_id"], r["passage_id"])].append(
            {k: r[k] for k in ("id", "action", "grade", "retracts", "note", "seconds", "created_at")}
        )
    machine = defaultdict(list)
    for d in decisions:
        keep = ("id", "run_id", "step", "decision", "dense_rank", "dense_score", "ce_prob", "neg_threshold",
                "pos_threshold", "is_labelled_positive", "dual_encoder", "cross_encoder")  # fmt: skip
        machine[(d["question_id"], d["passage_id"])].append({k: d[k] for k in keep})

    def lines():
        for c in current:
            key = (c["question_id"], c["passage_id"])
            if pairs is not None and key not in pairs:
                continue
            title, text = passages[c["passage_id"]]
            record = {
                "judgment_id": c["id"], "annotator": c["annotator_id"],
                "question_id": c["question_id"], "question": questions[c["question_id"]],
                "passage_id": c["passage_id"], "passage_title": title, "passage": text,
                "action": c["action"], "grade": c["grade"],
                "relevant": None if c["grade"] is None else c["grade"] >= 2,
                "note": c["note"], "seconds": c["seconds"], "suggestion_visible": bool(c["suggestion_visible"]),
                "stratum": c["stratum"], "decision_id": c["decision_id"], "created_at": c["created_at"],
                "history": trail[(c["annotator_id"], *key)], "machine_decisions": machine[key],
            }  # fmt: skip
            yield json.dumps(record, ensure_ascii=False) + "\n"

    return ExportResult(str(out_path), _write_atomically(out_path, lines()))


def export_hf(store: StoreLike, out_path: str | Path, run_id: str | None = None) -> ExportResult:
    """Consensus labels as a flat Parquet file loadable by Hugging Face `datasets`."""

    def read(db):
        labels = consensus_tx(db)
        texts = pd.DataFrame(list(db.query("SELECT id AS question_id, text AS question FROM questions")))
        ptexts = pd.DataFrame(
            list(db.query("SELECT id AS passage_id, title AS passage_title, text AS passage FROM passages"))
        )
        return labels, texts, ptexts, _run_pairs(db, run_id)

    labels, qtexts, ptexts, pairs = as_store(store).read(read)
    frame = labels[labels["grade"].notna()]
    if pairs is not None:
        keep = [(q, p) in pairs for q, p in zip(frame["question_id"], frame["passage_id"])]
        frame = frame.loc[pd.Series(keep, index=frame.index, dtype=bool)]
    frame = frame.merge(qtexts, on="question_id").merge(ptexts, on="passage_id")
    frame = frame[
        [
            "question_id",
            "question",
            "passage_id",
            "passage_title",
            "passage",
            "grade",
            "relevant",
            "n_grades",
            "annotators",
        ]
    ]
    frame = frame.astype({"grade": "int64", "relevant": "bool", "n_grades": "int64"}).sort_values(
        ["question_id", "passage_id"]
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out_path)
    return ExportResult(str(out_path), len(frame))


def corrected_examples(decisions: pd.DataFrame, labels: pd.DataFrame) -> tuple[list[dict], dict[str, int]]:
    """Training examples of one run with human labels overriding machine decisions.

    `decisions`: columns question_id, question, passage_id, decision, dense_rank. `labels`: consensus
    labels. A pair judged relevant is a positive and one judged irrelevant a negative, whatever the
    machine decided; unjudged pairs keep the machine's role (`positive`/`pseudo_positive` are positives,
    `hard_negative`/`random_fill`/`pseudo_negative` negatives, the rest unused). Questions without a
    positive are dropped. Negatives are ordered by dense rank.
    """
    human = {
        (q, p): bool(r)
        for q, p, r in zip(labels["question_id"], labels["passage_id"], labels["relevant"])
        if r is not pd.NA
    }
    per_question: dict[str, dict] = {}
    overridden = 0
    ordered = decisions.sort_values(["question_id", "dense_rank", "passage_id"], na_position="last")
    for q, text, p, decision in zip(
        ordered["question_id"], ordered["question"], ordered["passage_id"], ordered["decision"]
    ):
        entry = per_question.setdefault(q, {"question": text, "positives": [], "negatives": []})
        machine = CLAIMS[decision] if decision != "dropped_false_negative" else None  # dropped = unused in training
        role = human.get((q, p), machine)
        if (q, p) in human and role != machine:
            overridden += 1
        if role is True and p not in entry["positives"]:
            entry["positives"].append(p)
        elif role is False and p not in entry["negatives"]:
            entry["negatives"].append(p)
    examples, dropped = [], 0
    for q, entry in per_question.items():
        if not entry["positives"]:
            dropped += 1
            continue
        negatives = [p for p in entry["negatives"] if p not in entry["positives"]]
        examples.append(
            {"question_id": q, "question": entry["question"], "positives": entry["positives"], "negatives": negatives}
        )
    return examples, {"overridden": overridden, "dropped": dropped}


def export_training(
    store: StoreLike, out_path: str | Path, run_id: str | None = None, steps: tuple[str, ...] = ("denoise", "augment")
) -> TrainingExport:
    """Write corrected `train.jsonl` for the run (see `corrected_examples`) and `<out>.meta.json`."""

    def read(db):
        run = resolve_run(db, run_id)
        marks = ",".join("?" * len(steps))
        rows = list(
            db.query(
                "SELECT d.question_id, q.text AS question, d.passage_id, d.decision, d.dense_rank FROM decisions d"
                f" JOIN questions q ON q.id = d.question_id WHERE d.run_id = ? AND d.step IN ({marks})",
                [run, *steps],
            )
        )
        return (
            run,
            pd.DataFrame(rows, columns=["question_id", "question", "passage_id", "decision", "dense_rank"]),
            consensus_tx(db),
        )

    run, decisions, labels = as_store(store).read(read)
    examples, counts = corrected_examples(decisions, labels)
    examples.sort(key=lambda e: e["question_id"])
    _write_atomically(out_path, (json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    result = TrainingExport(
        path=str(out_path),
        run_id=run,
        n_questions=len(examples),
        n_positives=sum(len(e["positives"]) for e in examples),
        n_negatives=sum(len(e["negatives"]) for e in examples),
        n_overridden=counts["overridden"],
        n_questions_dropped=counts["dropped"],
    )
    meta = {**asdict(result), "steps": list(steps), "store": str(as_store(store).path), "written_at": utc_now(),
            "format": "docs/FORMATS.md#training-examples-trainjsonl-the-pipelines-input-format"}  # fmt: skip
    _write_atomically(Path(f"{out_path}.meta.json"), [json.dumps(meta, indent=2) + "\n"])
    return result
