"""The audit: how often were the machine's decisions right, according to the human labels?

Everything starts from `labelled_decisions(store, run_id)`: one row per machine decision of the
run with the consensus human label of its (question, passage) and two audit columns:

- `in_sample`: the decision is in the run's *random sample*. For each decision class the sample
  is the longest prefix of the class's `sample_key` order (a uniform random permutation fixed at
  import) in which every item has a judgment (grade or skip). Because the order is random and
  independent of the labels, the prefix is a uniform random sample of the class whichever queue
  stratum the judgments came from; items judged further down the order (uncertain ones, say)
  do not enter it until the gap before them is filled. Skipped items stay in the sample and
  are counted as skipped: they are the one bias this cannot remove, so they are reported.
- `weight`: for graded sample items, population / graded sample size of the class, so that
  statistics pooled over classes (threshold sweep, calibration) estimate the whole run.

The tables are plain pandas DataFrames built by pure functions of that frame (`*_table`), with
store-level wrappers that read the frame first. Threshold sweep and calibration live in
`annotations.thresholds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .decisions import resolve_run
from .labels import GRADES, consensus_tx, current_labels, history, is_relevant
from .schema import DECISIONS
from .stats import cohen_kappa, wilson_interval
from .store import StoreLike, as_store
from .thresholds import Calibration, ThresholdSweep, calibration_table, sweep_table

# What each decision claims about the passage: True = relevant, False = irrelevant, None = no claim.
CLAIMS: dict[str, bool | None] = {
    "positive": True,
    "hard_negative": False,
    "dropped_false_negative": True,  # dropped because it was believed to be an unlabeled positive
    "random_fill": False,
    "pseudo_positive": True,
    "pseudo_negative": False,
    "ignored": None,
}
SAMPLES = ("random", "all")


def labelled_decisions(store: StoreLike, run_id: str | None = None) -> pd.DataFrame:
    """Decisions of the run joined with consensus labels, with `in_sample` and `weight` (see module doc)."""

    def read(db):
        run = resolve_run(db, run_id)
        decisions = pd.read_sql_query(
            "SELECT id AS decision_id, run_id, step, question_id, passage_id, decision, dense_rank, dense_score,"
            " ce_prob, neg_threshold, pos_threshold, sample_key FROM decisions WHERE run_id = ?",
            db.conn,
            params=[run],
        )
        return decisions, consensus_tx(db)

    decisions, labels = as_store(store).read(read)
    return add_sample_columns(decisions.merge(labels, on=["question_id", "passage_id"], how="left"))


def add_sample_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add judged / in_sample / weight / claim to decisions already merged with consensus labels."""
    frame = frame.copy()
    frame["n_grades"] = frame["n_grades"].fillna(0).astype(int)
    frame["n_skips"] = frame["n_skips"].fillna(0).astype(int)
    frame["grade"] = frame["grade"].astype("Int64")
    frame["relevant"] = frame["relevant"].astype("boolean")
    frame["judged"] = (frame["n_grades"] + frame["n_skips"]) > 0
    frame = frame.sort_values(["decision", "sample_key", "decision_id"], kind="stable").reset_index(drop=True)
    frame["in_sample"] = frame.groupby("decision")["judged"].cummin().astype(bool)
    graded = frame["in_sample"] & frame["grade"].notna()
    population = frame.groupby("decision")["decision_id"].transform("size")
    n_graded = graded.groupby(frame["decision"]).transform("sum")
    frame["weight"] = np.where(graded, population / n_graded.where(n_graded > 0, 1), 0.0)
    frame["claim"] = frame["decision"].map(CLAIMS)
    return frame


def _classes(frame: pd.DataFrame) -> list[str]:
    present = set(frame["decision"].unique())
    return [d for d in DECISIONS if d in present]


def _subset(frame: pd.DataFrame, sample: str) -> pd.DataFrame:
    if sample not in SAMPLES:
        raise ValueError(f"sample must be one of {SAMPLES}, got {sample!r}")
    return frame[frame["in_sample"]] if sample == "random" else frame[frame["judged"]]


def confusion_table(frame: pd.DataFrame, sample: str = "random") -> pd.DataFrame:
    """Machine decision x human grade counts (plus skipped) on the random sample or on all judged items."""
    part = _subset(frame, sample)
    rows = []
    for decision in _classes(frame):
        cls = part[part["decision"] == decision]
        row = {"decision": decision, "population": int((frame["decision"] == decision).sum()), "judged": len(cls)}
        for g in GRADES:
            row[f"grade_{g}"] = int((cls["grade"] == g).sum())
        row["skipped"] = int(cls["grade"].isna().sum())
        row["relevant"] = int(cls["relevant"].fillna(False).sum())
        row["irrelevant"] = int((cls["relevant"] == False).sum())  # noqa: E712 (nullable boolean)
        rows.append(row)
    return pd.DataFrame(rows).set_index("decision") if rows else pd.DataFrame()


def precision_table(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per decision class, on the random sample: how often the machine's claim was right, with a Wilson
    interval. `positive`, `dropped_false_negative`, `pseudo_positive` are right when the passage is
    relevant (grade >= 2); `hard_negative`, `random_fill`, `pseudo_negative` when it is not;
    `ignored` claims nothing (precision NaN, see `relevant_rate`). The `*_any` columns use every
    judged item instead (biased towards the queue's uncertain strata; shown for contrast)."""
    rows = []
    for decision in _classes(frame):
        cls = frame[frame["decision"] == decision]
        claim = CLAIMS[decision]
        sample = cls[cls["in_sample"]]
        graded = sample[sample["grade"].notna()]
        relevant = int(graded["relevant"].sum())
        correct = relevant if claim else len(graded) - relevant
        interval = wilson_interval(correct, len(graded), confidence)
        any_graded = cls[cls["grade"].notna()]
        any_relevant = int(any_graded["relevant"].sum())
        any_correct = any_relevant if claim else len(any_graded) - any_relevant
        rows.append({
            "decision": decision,
            "claim": None if claim is None else ("relevant" if claim else "irrelevant"),
            "population": len(cls),
            "sampled": len(sample),
            "skipped": len(sample) - len(graded),
            "graded": len(graded),
            "correct": correct if claim is not None else None,
            "precision": interval.estimate if claim is not None else math.nan,
            "ci_low": interval.low if claim is not None else math.nan,
            "ci_high": interval.high if claim is not None else math.nan,
            "relevant_rate": relevant / len(graded) if len(graded) else math.nan,
            "graded_any": len(any_graded),
            "precision_any": (any_correct / len(any_graded)) if len(any_graded) and claim is not None else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def confusion(store: StoreLike, run_id: str | None = None, sample: str = "random") -> pd.DataFrame:
    return confusion_table(labelled_decisions(store, run_id), sample)


def precision(store: StoreLike, run_id: str | None = None, confidence: float = 0.95) -> pd.DataFrame:
    return precision_table(labelled_decisions(store, run_id), confidence)


def agreement_table(labels: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cohen's kappa between annotator pairs (quadratic-weighted on grades, and nominal on relevant),
    and, given the run's labelled decisions, between each annotator (and the consensus) and the machine's
    claims. `labels` is `current_labels(...)`; skips are left out."""
    grades = labels[labels["action"] == "grade"]
    by_annotator = {
        a: dict(zip(zip(g["question_id"], g["passage_id"]), g["grade"].astype(int)))
        for a, g in grades.groupby("annotator")
    }
    rows = []
    names = sorted(by_annotator)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sorted(by_annotator[a].keys() & by_annotator[b].keys())
            ga = [by_annotator[a][k] for k in common]
            gb = [by_annotator[b][k] for k in common]
            rows.append(_agreement_row(a, b, ga, gb))
    if frame is not None:
        claims = frame[frame["claim"].notna()].drop_duplicates(["question_id", "passage_id"])
        machine = dict(zip(zip(claims["question_id"], claims["passage_id"]), claims["claim"].astype(bool)))
        raters = {a: {k: bool(is_relevant(g)) for k, g in d.items()} for a, d in by_annotator.items()}
        graded = frame[frame["grade"].notna()]
        raters["consensus"] = dict(
            zip(zip(graded["question_id"], graded["passage_id"]), graded["relevant"].astype(bool))
        )
        for a, labels_a in raters.items():
            common = sorted(labels_a.keys() & machine.keys())
            rows.append(
                _agreement_row(a, "machine", [labels_a[k] for k in common], [machine[k] for k in common], binary=True)
            )
    columns = ["rater_a", "rater_b", "n_items", "kappa_grades", "kappa_relevant", "agreement_relevant"]
    return pd.DataFrame(rows, columns=columns)


def _agreement_row(a: str, b: str, la: list, lb: list, binary: bool = False) -> dict:
    rel_a = la if binary else [bool(is_relevant(g)) for g in la]
    rel_b = lb if binary else [bool(is_relevant(g)) for g in lb]
    return {
        "rater_a": a,
        "rater_b": b,
        "n_items": len(la),
        "kappa_grades": math.nan if binary else cohen_kappa(la, lb, GRADES, weights="quadratic"),
        "kappa_relevant": cohen_kappa(rel_a, rel_b, (False, True)),
        "agreement_relevant": float(np.mean([x == y for x, y in zip(rel_a, rel_b)])) if la else math.nan,
    }


def agreement(store: StoreLike, run_id: str | None = None, with_machine: bool = True) -> pd.DataFrame:
    frame = labelled_decisions(store, run_id) if with_machine else None
    return agreement_table(current_labels(store), frame)


def annotator_table(log: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per annotator: current grades and skips, retractions, time spent, speed, and progress on the run.
    `log` is `history(...)` (every judgment row)."""
    rows = []
    run_pairs = set(zip(frame["question_id"], frame["passage_id"])) if frame is not None else set()
    for annotator, own in log.groupby("annotator"):
        retracted = set(own["retracts"].dropna().astype(int))
        acts = own[own["action"] != "retract"]
        live = acts[~acts["judgment_id"].isin(retracted)].drop_duplicates(["question_id", "passage_id"], keep="last")
        seconds = acts["seconds"].dropna()
        done = set(zip(live["question_id"], live["passage_id"])) & run_pairs
        rows.append({
            "annotator": annotator,
            "grades": int((live["action"] == "grade").sum()),
            "skips": int((live["action"] == "skip").sum()),
            "retractions": int((own["action"] == "retract").sum()),
            "judgments_total": len(acts),
            "seconds_total": float(seconds.sum()),
            "seconds_median": float(seconds.median()) if len(seconds) else math.nan,
            "items_per_hour": 3600 * len(seconds) / float(seconds.sum()) if seconds.sum() > 0 else math.nan,
            "first_at": own["created_at"].min(),
            "last_at": own["created_at"].max(),
            "run_items_done": len(done),
            "run_progress": len(done) / len(run_pairs) if run_pairs else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def annotator_stats(store: StoreLike, run_id: str | None = None) -> pd.DataFrame:
    frame = labelled_decisions(store, run_id) if _has_runs(store) else None
    return annotator_table(history(store), frame)


def _has_runs(store: StoreLike) -> bool:
    return as_store(store).read(lambda db: db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0)


@dataclass(frozen=True)
class AuditReport:
    """Every audit table for one run (see `audit_report`)."""

    run_id: str
    precision: pd.DataFrame
    confusion: pd.DataFrame
    sweep: ThresholdSweep
    calibration: Calibration
    agreement: pd.DataFrame
    annotators: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: tables become lists of records, NaN becomes None."""

        def records(df: pd.DataFrame) -> list[dict]:
            df = df.reset_index() if df.index.name else df
            return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]

        return {
            "run_id": self.run_id,
            "precision": records(self.precision),
            "confusion": records(self.confusion),
            "threshold_sweep": self.sweep.to_dict(records),
            "calibration": self.calibration.to_dict(records),
            "agreement": records(self.agreement),
            "annotators": records(self.annotators),
            "notes": list(self.notes),
        }


def _plain(value: object) -> object:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def audit_report(store: StoreLike, run_id: str | None = None, confidence: float = 0.95, bins: int = 10) -> AuditReport:
    """All audit tables for one run, from one read of the labels."""
    run = as_store(store).read(lambda db: resolve_run(db, run_id))
    frame = labelled_decisions(store, run)
    notes = [
        "Precision, threshold sweep and calibration use the random sample only (per-class uniform, reweighted "
        "to the run's class sizes when pooled); *_any columns use every judged item and are biased.",
    ]
    skipped = int((frame["in_sample"] & frame["grade"].isna()).sum())
    if skipped:
        notes.append(f"{skipped} sampled item(s) were skipped by every annotator and are left out of the estimates.")
    return AuditReport(
        run_id=run,
        precision=precision_table(frame, confidence),
        confusion=confusion_table(frame),
        sweep=sweep_table(frame),
        calibration=calibration_table(frame, bins=bins),
        agreement=agreement_table(current_labels(store), frame),
        annotators=annotator_table(history(store), frame),
        notes=notes,
    )
