"""Threshold sweep and calibration of the cross-encoder probability against human labels.

Both work on the frame of `audit.labelled_decisions` (columns `ce_prob`, `relevant`, `grade`,
`decision`, `in_sample`, `weight`). With `sample="random"` (the default) only the random audit
sample is used, each item weighted by its class's population / sample size, so the numbers
estimate the whole run; `sample="all"` uses every graded item unweighted (more data, biased
towards whatever the queue chose to show).

The denoising rules being swept: a passage with `ce_prob >= t` is treated as relevant (step 3
drops it as a suspected false negative; step 4 makes the top one a pseudo-positive), and one
with `ce_prob < t` as irrelevant (a hard / pseudo negative). For each t the table gives the
precision and recall of both sides. The recommended negative threshold is the largest t whose
"below" precision, and that of every smaller t, reaches `neg_target`; the recommended positive
threshold is the smallest t whose "above" precision, and that of every larger t with data,
reaches `pos_target`. Labelled positives (`positive`) are left out: no rule decides them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .stats import brier_score, reliability_bins

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.01))


@dataclass(frozen=True)
class ThresholdSweep:
    table: pd.DataFrame  # threshold, precision/recall above and below, counts
    recommended_neg_threshold: float  # NaN when no threshold reaches neg_target
    recommended_pos_threshold: float  # NaN when no threshold reaches pos_target
    neg_target: float
    pos_target: float
    n_items: int
    sample: str

    def to_dict(self, records: Callable[[pd.DataFrame], list[dict]]) -> dict:
        nan_to_none = lambda x: None if isinstance(x, float) and math.isnan(x) else x  # noqa: E731
        return {
            "recommended_neg_threshold": nan_to_none(self.recommended_neg_threshold),
            "recommended_pos_threshold": nan_to_none(self.recommended_pos_threshold),
            "neg_target": self.neg_target,
            "pos_target": self.pos_target,
            "n_items": self.n_items,
            "sample": self.sample,
            "table": records(self.table),
        }


@dataclass(frozen=True)
class Calibration:
    table: pd.DataFrame  # one row per probability bin: low, high, n, weight, mean_prob, frac_relevant
    brier: float
    n_items: int
    sample: str

    def to_dict(self, records: Callable[[pd.DataFrame], list[dict]]) -> dict:
        brier = None if math.isnan(self.brier) else self.brier
        return {"brier": brier, "n_items": self.n_items, "sample": self.sample, "table": records(self.table)}


def _scored(frame: pd.DataFrame, sample: str, exclude: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if sample not in ("random", "all"):
        raise ValueError(f"sample must be 'random' or 'all', got {sample!r}")
    part = frame[frame["grade"].notna() & frame["ce_prob"].notna() & ~frame["decision"].isin(list(exclude))]
    if sample == "random":
        part = part[part["in_sample"]]
        weights = part["weight"].to_numpy(float)
    else:
        part = part.drop_duplicates(["question_id", "passage_id"])
        weights = np.ones(len(part))
    return part["ce_prob"].to_numpy(float), part["relevant"].to_numpy(bool), weights


def sweep_table(
    frame: pd.DataFrame,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    sample: str = "random",
    neg_target: float = 0.95,
    pos_target: float = 0.9,
    exclude: Sequence[str] = ("positive",),
) -> ThresholdSweep:
    """Precision/recall of `ce_prob >= t` (relevant) and `ce_prob < t` (irrelevant) for every t."""
    prob, rel, w = _scored(frame, sample, exclude)
    total_rel, total_irr = float(w[rel].sum()), float(w[~rel].sum())

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    rows = []
    for t in thresholds:
        above = prob >= t
        w_above, w_below = float(w[above].sum()), float(w[~above].sum())
        tp = float(w[above & rel].sum())  # relevant and called relevant
        tn = float(w[~above & ~rel].sum())  # irrelevant and called irrelevant
        p_above, r_above = ratio(tp, w_above), ratio(tp, total_rel)
        rows.append({
            "threshold": float(t),
            "n_above": int(above.sum()), "n_below": int((~above).sum()),
            "precision_above": p_above, "recall_above": r_above,
            "f1_above": ratio(2 * p_above * r_above, p_above + r_above) if not math.isnan(p_above + r_above) else math.nan,
            "precision_below": ratio(tn, w_below), "recall_below": ratio(tn, total_irr),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return ThresholdSweep(
        table=table,
        recommended_neg_threshold=_recommend(table, "precision_below", neg_target, from_low=True),
        recommended_pos_threshold=_recommend(table, "precision_above", pos_target, from_low=False),
        neg_target=neg_target,
        pos_target=pos_target,
        n_items=len(prob),
        sample=sample,
    )


def _recommend(table: pd.DataFrame, column: str, target: float, from_low: bool) -> float:
    """Negative side: walk up from the lowest t while precision stays >= target; return the last t.
    Positive side: walk down from the highest t the same way. Rows without data (NaN) are passed over."""
    rows = table if from_low else table.iloc[::-1]
    best = math.nan
    for t, value in zip(rows["threshold"], rows[column]):
        if math.isnan(value):
            continue
        if value < target:
            break
        best = float(t)
    return best


def calibration_table(frame: pd.DataFrame, bins: int = 10, sample: str = "random") -> Calibration:
    """Reliability curve (probability bins vs observed fraction relevant) and Brier score."""
    prob, rel, w = _scored(frame, sample, exclude=())
    table = pd.DataFrame([b.__dict__ for b in reliability_bins(prob, rel, bins, w)])
    return Calibration(table, brier_score(prob, rel, w) if len(prob) else math.nan, len(prob), sample)
