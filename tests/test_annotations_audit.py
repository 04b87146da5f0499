"""Audit statistics: oracles for the maths, literal tables for the audit, and the random-sample logic."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, cohen_kappa_score

import annotations as ann
from annotations.audit import add_sample_columns, agreement_table, annotator_table, confusion_table, precision_table
from annotations.stats import brier_score, cohen_kappa, reliability_bins, wilson_interval
from annotations.thresholds import calibration_table, sweep_table

# --- statistics -------------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    p = wilson_interval(8, 10)
    assert (p.estimate, round(p.low, 4), round(p.high, 4)) == (0.8, 0.4902, 0.9433)
    assert wilson_interval(0, 20).low == 0.0 and wilson_interval(20, 20).high == 1.0
    assert math.isnan(wilson_interval(0, 0).estimate)
    wide, narrow = wilson_interval(50, 100, 0.99), wilson_interval(50, 100, 0.9)
    assert wide.low < narrow.low < 0.5 < narrow.high < wide.high
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_scikit_learn(weights: str | None) -> None:
    rng = random.Random(7)
    a = [rng.randint(0, 3) for _ in range(200)]
    b = [x if rng.random() < 0.6 else rng.randint(0, 3) for x in a]
    assert cohen_kappa(a, b, (0, 1, 2, 3), weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights))


def test_cohen_kappa_edge_cases() -> None:
    assert cohen_kappa([1, 1, 1], [1, 1, 1], (0, 1)) == 1.0  # full agreement on one category
    assert math.isnan(cohen_kappa([], [], (0, 1)))
    assert cohen_kappa([0, 1], [1, 0], (0, 1)) == pytest.approx(-1.0)


def test_brier_and_reliability() -> None:
    probs, outcomes = [0.05, 0.15, 0.8, 0.95, 0.9], [False, True, True, True, False]
    assert brier_score(probs, outcomes) == pytest.approx(brier_score_loss(outcomes, probs))
    bins = reliability_bins(probs, outcomes, bins=2)
    assert [(b.n, round(b.mean_prob, 4), b.frac_relevant) for b in bins] == [(2, 0.1, 0.5), (3, 0.8833, 2 / 3)]
    weighted = reliability_bins([0.2, 0.4], [True, False], bins=1, weights=[3, 1])
    assert weighted[0].frac_relevant == 0.75 and weighted[0].mean_prob == pytest.approx(0.25)


# --- the labelled-decisions frame -------------------------------------------------------------


def frame_of(rows: list[tuple]) -> pd.DataFrame:
    """rows: (decision, sample_key, ce_prob, grade or None, judged) -> the frame `labelled_decisions` returns."""
    records = []
    for i, (decision, key, prob, grade, judged) in enumerate(rows):
        records.append({
            "decision_id": i + 1, "run_id": "r", "step": "denoise", "question_id": f"q{i}", "passage_id": f"p{i}",
            "decision": decision, "ce_prob": prob, "sample_key": key,
            "grade": grade, "relevant": None if grade is None else grade >= 2,
            "n_grades": int(grade is not None), "n_skips": int(judged and grade is None),
        })  # fmt: skip
    frame = pd.DataFrame(records)
    frame.loc[frame["n_grades"] + frame["n_skips"] == 0, ["n_grades", "n_skips"]] = np.nan  # as after a left join
    return add_sample_columns(frame)


ROWS = [
    # dropped_false_negative: sample order .1 .2 .3 (unjudged) .4 -> sample = first two
    ("dropped_false_negative", 0.1, 0.50, 3, True),
    ("dropped_false_negative", 0.2, 0.30, 0, True),
    ("dropped_false_negative", 0.3, 0.20, None, False),
    ("dropped_false_negative", 0.4, 0.15, 0, True),  # judged (uncertain stratum) but after a gap: not in sample
    # hard_negative: three judged, one skipped, all in the sample
    ("hard_negative", 0.5, 0.01, 0, True),
    ("hard_negative", 0.6, 0.02, 1, True),
    ("hard_negative", 0.7, 0.05, None, True),  # skipped
    ("hard_negative", 0.8, 0.08, 2, True),
    ("ignored", 0.9, 0.6, 2, True),
]


def test_in_sample_is_the_judged_prefix_of_each_class() -> None:
    frame = frame_of(ROWS).set_index("decision_id")
    assert frame["in_sample"].to_dict() == {
        1: True,
        2: True,
        3: False,
        4: False,
        5: True,
        6: True,
        7: True,
        8: True,
        9: True,
    }
    # weights = population / graded sample size of the class
    assert frame.loc[1, "weight"] == 2.0 and frame.loc[4, "weight"] == 0.0
    assert frame.loc[5, "weight"] == pytest.approx(4 / 3) and frame.loc[7, "weight"] == 0.0


def test_precision_table_literal() -> None:
    table = precision_table(frame_of(ROWS)).set_index("decision")
    dropped, hard, ignored = table.loc["dropped_false_negative"], table.loc["hard_negative"], table.loc["ignored"]
    assert (dropped["population"], dropped["sampled"], dropped["graded"], dropped["correct"]) == (4, 2, 2, 1)
    assert dropped["precision"] == 0.5 and dropped["ci_low"] < 0.5 < dropped["ci_high"]
    assert dropped["graded_any"] == 3 and dropped["precision_any"] == pytest.approx(1 / 3)  # the biased view
    assert (hard["sampled"], hard["skipped"], hard["graded"], hard["correct"], hard["precision"]) == (4, 1, 3, 2, 2 / 3)
    assert pd.isna(ignored["claim"]) and math.isnan(ignored["precision"]) and ignored["relevant_rate"] == 1.0


def test_confusion_table_literal() -> None:
    table = confusion_table(frame_of(ROWS))
    assert table.loc["dropped_false_negative", ["grade_0", "grade_1", "grade_2", "grade_3", "skipped"]].tolist() == [
        1,
        0,
        0,
        1,
        0,
    ]
    assert table.loc["hard_negative", ["grade_0", "grade_1", "grade_2", "grade_3", "skipped"]].tolist() == [
        1,
        1,
        1,
        0,
        1,
    ]
    assert confusion_table(frame_of(ROWS), sample="all").loc["dropped_false_negative", "grade_0"] == 2


def test_threshold_sweep_literal() -> None:
    rows = [
        ("ignored", k / 10, p, g, True)
        for k, (p, g) in enumerate([(0.05, 0), (0.08, 0), (0.12, 1), (0.3, 2), (0.6, 0), (0.95, 3)])
    ]
    sweep = sweep_table(frame_of(rows), thresholds=[0.1, 0.2, 0.5, 0.9], neg_target=0.95, pos_target=0.9)
    t = sweep.table.set_index("threshold")
    assert t.loc[0.1, "precision_below"] == 1.0 and t.loc[0.1, "recall_below"] == 0.5  # 2 of 4 irrelevant below
    assert t.loc[0.2, "precision_below"] == 1.0  # the 0.12 item is grade 1: irrelevant
    assert t.loc[0.5, "precision_below"] == pytest.approx(3 / 4)
    assert t.loc[0.5, "precision_above"] == 0.5 and t.loc[0.5, "recall_above"] == 0.5
    assert t.loc[0.2, "precision_above"] == pytest.approx(2 / 3) and t.loc[0.2, "recall_above"] == 1.0
    assert t.loc[0.9, "precision_above"] == 1.0
    assert (sweep.recommended_neg_threshold, sweep.recommended_pos_threshold) == (0.2, 0.9)


def test_calibration_literal() -> None:
    rows = [("ignored", k / 10, p, g, True) for k, (p, g) in enumerate([(0.1, 0), (0.2, 2), (0.9, 3), (0.8, 3)])]
    cal = calibration_table(frame_of(rows), bins=2)
    assert cal.brier == pytest.approx((0.01 + 0.64 + 0.01 + 0.04) / 4)
    assert cal.table["frac_relevant"].tolist() == [0.5, 1.0]


def test_agreement_table_literal() -> None:
    a = [3, 2, 0, 1, 0, 2]
    b = [3, 1, 0, 1, 2, 2]
    labels = pd.DataFrame(
        [{"annotator": who, "question_id": f"q{i}", "passage_id": "p", "action": "grade", "grade": g}
         for who, grades in (("alice", a), ("bob", b)) for i, g in enumerate(grades)]
        + [{"annotator": "bob", "question_id": "q9", "passage_id": "p", "action": "skip", "grade": pd.NA}]
    )  # fmt: skip
    row = agreement_table(labels).iloc[0]
    assert (row["rater_a"], row["rater_b"], row["n_items"]) == ("alice", "bob", 6)
    assert row["kappa_grades"] == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert row["kappa_relevant"] == pytest.approx(cohen_kappa_score([g >= 2 for g in a], [g >= 2 for g in b]))
    assert row["agreement_relevant"] == pytest.approx(4 / 6)


def test_annotator_table_literal() -> None:
    log = pd.DataFrame(
        [
            (1, "alice", "q1", "p1", "grade", 2, None, 10.0, "2024-01-01T00:00:00"),
            (2, "alice", "q1", "p2", "grade", 0, None, 20.0, "2024-01-01T00:01:00"),
            (3, "alice", "q1", "p2", "retract", None, 2, None, "2024-01-01T00:02:00"),
            (4, "alice", "q1", "p3", "skip", None, None, 30.0, "2024-01-01T00:03:00"),
        ],
        columns=[
            "judgment_id",
            "annotator",
            "question_id",
            "passage_id",
            "action",
            "grade",
            "retracts",
            "seconds",
            "created_at",
        ],
    )
    row = annotator_table(log).iloc[0]
    assert (row["grades"], row["skips"], row["retractions"], row["judgments_total"]) == (1, 1, 1, 3)
    assert (row["seconds_total"], row["seconds_median"], row["items_per_hour"]) == (60.0, 20.0, 180.0)


# --- end to end on a store ---------------------------------------------------------------------


def test_audit_report_on_a_store_is_json_ready(tmp_path) -> None:
    records, corpus = [], []
    for i in range(12):
        decision = ["pseudo_positive", "pseudo_negative", "ignored"][i % 3]
        corpus.append({"_id": f"p{i}", "title": "", "text": f"t{i}"})
        records.append({"run_id": "r1", "step": "augment", "question_id": f"q{i}", "question_text": f"question {i}",
                        "passage_id": f"p{i}", "dense_rank": 1, "dense_score": 2.0, "ce_prob": [0.95, 0.05, 0.5][i % 3],
                        "neg_threshold": 0.1, "pos_threshold": 0.9, "decision": decision, "is_labelled_positive": False,
                        "dual_encoder": "d", "cross_encoder": "c"})  # fmt: skip
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    db = tmp_path / "a.db"
    ann.import_decisions(db, tmp_path / "d.jsonl", tmp_path / "c.jsonl")
    for item in ann.next_items(db, "alice", n=12, config=ann.QueueConfig(overlap=0)):
        ann.judge(
            db, "alice", item.question_id, item.passage_id, 3 if item.decision == "pseudo_positive" else 0, seconds=2.0
        )
    ann.judge(db, "bob", "q0", "p0", 2)
    report = ann.audit_report(db)
    precision = report.precision.set_index("decision")
    assert precision.loc["pseudo_positive", "precision"] == 1.0 and precision.loc["pseudo_negative", "precision"] == 1.0
    assert precision["sampled"].tolist() == [4, 4, 4]
    assert report.sweep.n_items == 12 and report.calibration.n_items == 12
    machine = report.agreement.set_index(["rater_a", "rater_b"])
    assert machine.loc[("alice", "machine"), "n_items"] == 8 and machine.loc[("alice", "bob"), "n_items"] == 1
    assert report.annotators.set_index("annotator").loc["alice", "run_progress"] == 1.0
    encoded = json.loads(json.dumps(report.to_dict()))
    assert encoded["run_id"] == "r1" and encoded["precision"][0]["decision"] == "pseudo_positive"
    assert set(encoded) == {
        "run_id",
        "precision",
        "confusion",
        "threshold_sweep",
        "calibration",
        "agreement",
        "annotators",
        "notes",
    }
