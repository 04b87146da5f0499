"""Handlers of the Hard negatives tab: a training question, its candidates and the pipeline's decisions.

With a pipeline run loaded, the candidates of a question and their decisions are the run's
decision records (docs/FORMATS.md). Without one, a *preview* is computed on the fly: the dense
top-k of the question, scored by the trained cross-encoder (if any), decided by the same rule
the pipeline uses (`engine.denoise.decide`). Moving the threshold sliders re-applies the rules
(`engine.denoise.decide` for step 3, `engine.augment.decide` for step 4) and marks the
decisions that would change; no model runs again.
"""

from __future__ import annotations

import pandas as pd

from demo.handlers import AppError
from demo.render import esc, notice
from demo.run import DECISIONS
from demo.services import Services
from engine import augment, denoise
from engine.denoise import Candidate

TABLE_COLUMNS = ["dense_rank", "passage_id", "title", "gold", "ce_prob", "decision", "at_slider", "changes", "text"]
MAX_CHOICES = 200
_COUNTS: dict[tuple, pd.Series] = {}  # (run frame, thresholds) -> decision counts; slider positions repeat


def training_questions(services: Services, search: str = "") -> list[tuple[str, str]]:
    """(label, question id) choices: the run's questions, else the training split; filtered by `search`."""
    if services.run is not None and len(services.run.decisions()):
        frame = services.run.decisions()[["question_id", "question_text", "step"]].drop_duplicates("question_id")
        pairs = [(f"[{r.step}] {r.question_text}", r.question_id) for r in frame.itertuples()]
    else:
        split = services.train_split()
        questions = services.dataset.split(split)[0] if split else []
        pairs = [(q.text, q.id) for q in questions]
    needle = (search or "").strip().lower()
    if needle:
        pairs = [(label, qid) for label, qid in pairs if needle in label.lower() or needle == qid.lower()]
    return pairs[:MAX_CHOICES]


def _gold(services: Services, question_id: str) -> list[str]:
    return [pid for qrels in services.dataset.qrels.values() for pid, g in qrels.get(question_id, {}).items() if g > 0]


def redecide(frame: pd.DataFrame, neg_threshold: float, pos_threshold: float) -> pd.Series:
    """The decision each record would get at these thresholds (same index as `frame`)."""
    out = frame["decision"].astype(object).copy()
    for (step, _qid), group in frame.groupby(["step", "question_id"], sort=False):
        scored = group[group["ce_prob"].notna() & (group["decision"] != denoise.RANDOM_FILL)]
        if scored.empty:
            continue
        cands = [
            Candidate(
                r.passage_id,
                None if pd.isna(r.dense_rank) else int(r.dense_rank),
                None,
                float(r.ce_prob),
                bool(r.is_labelled_positive),
            )
            for r in scored.itertuples()
        ]
        if step == "augment":
            decisions = augment.decide(cands, pos_threshold, neg_threshold)
        else:
            decisions = denoise.decide(cands, neg_threshold)
        out.loc[scored.index] = [d.decision for d in decisions]
    return out


def _preview_frame(services: Services, question_id: str, k: int) -> pd.DataFrame:
    q = services.dataset.questions.get(question_id)
    if q is None:
        raise AppError(f"unknown question id {question_id!r}")
    gold = set(_gold(services, question_id))
    mode = "dense" if "dense" in services.retriever.modes else "bm25"
    hits = services.retriever.search(q.text, k=k, mode=mode)
    probs = [None] * len(hits)
    if services.ce_trained:
        probs = [float(p) for p in services.cross_encoder.score(q.text, [h.passage for h in hits])]
    rows = []
    for h, p in zip(hits, probs):
        rows.append(
            {"step": "denoise", "question_id": q.id, "question_text": q.text, "passage_id": h.passage.id,
             "dense_rank": h.dense_rank or h.rank, "ce_prob": p, "is_labelled_positive": h.passage.id in gold}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if services.ce_trained:
        cands = [
            Candidate(r["passage_id"], r["dense_rank"], None, r["ce_prob"], r["is_labelled_positive"]) for r in rows
        ]
        frame["decision"] = [d.decision for d in denoise.decide(cands, 0.1)]
    else:
        frame["decision"] = ["positive" if r["is_labelled_positive"] else "(no cross-encoder)" for r in rows]
    return frame


def question_view(
    services: Services, question_id: str, k: int, neg_threshold: float, pos_threshold: float
) -> tuple[str, pd.DataFrame]:
    """(HTML with the question and its gold passage(s), the candidates table)."""
    if not question_id:
        return notice("Pick a training question."), pd.DataFrame(columns=TABLE_COLUMNS)
    source = ""
    frame = pd.DataFrame()
    if services.run is not None:
        decisions = services.run.decisions()
        frame = decisions[decisions["question_id"] == question_id].copy()
        source = f"Decisions recorded by run {services.run.run_id}."
    if frame.empty:
        frame = _preview_frame(services, question_id, k)
        source = "Preview computed now (no recorded decisions for this question): dense top-k, " + (
            "scored by the loaded cross-encoder, decided at threshold 0.1."
            if services.ce_trained
            else "no trained cross-encoder yet, so no decisions."
        )
    if frame.empty:
        return notice("Nothing retrieved for this question.", "warn"), pd.DataFrame(columns=TABLE_COLUMNS)
    frame = frame.sort_values("dense_rank", na_position="last")
    if services.ce_trained or frame["ce_prob"].notna().any():
        frame["at_slider"] = redecide(frame, neg_threshold, pos_threshold)
    else:
        frame["at_slider"] = frame["decision"]
    frame["changes"] = (frame["at_slider"] != frame["decision"]).map({True: "CHANGES", False: ""})
    corpus = services.dataset.corpus
    frame["title"] = [corpus[p].title if p in corpus else "" for p in frame["passage_id"]]
    frame["text"] = [corpus[p].text[:300] if p in corpus else "(not in the loaded corpus)" for p in frame["passage_id"]]
    gold = set(_gold(services, question_id)) | set(frame.loc[frame["decision"] == "positive", "passage_id"])
    frame["gold"] = frame["passage_id"].isin(gold).map({True: "gold", False: ""})
    frame["ce_prob"] = frame["ce_prob"].astype(float).round(4)
    question = frame["question_text"].iloc[0] if "question_text" in frame else ""
    gold_html = "".join(
        f"<div class='hit'><b>{esc(corpus[p].title)}</b> <code>{esc(p)}</code><br>{esc(corpus[p].text)}</div>"
        for p in sorted(gold) if p in corpus
    ) or notice("No gold passage: an unlabeled question (step 4).")  # fmt: skip
    n_changed = int((frame["changes"] != "").sum())
    head = (
        f"<div class='question'>Q: {esc(question)} <code>{esc(question_id)}</code></div>"
        f"{notice(source)}{notice(f'{n_changed} decision(s) change at the slider thresholds.', 'warn' if n_changed else 'info')}"
        f"<h4>Gold passage</h4>{gold_html}"
    )
    return head, frame[TABLE_COLUMNS].reset_index(drop=True)


def decision_counts(services: Services, neg_threshold: float, pos_threshold: float) -> pd.DataFrame:
    """Counts per decision over the whole run: recorded, at the slider thresholds, and the difference."""
    columns = ["decision", "recorded", "at_slider", "difference"]
    if services.run is None or services.run.decisions().empty:
        return pd.DataFrame(columns=columns)
    frame = services.run.decisions()
    recorded = frame["decision"].value_counts()
    key = (id(frame), round(float(neg_threshold), 4), round(float(pos_threshold), 4))
    if key not in _COUNTS:
        if len(_COUNTS) > 256:
            _COUNTS.clear()
        _COUNTS[key] = redecide(frame, neg_threshold, pos_threshold).value_counts()  # whole run: seconds on SQuAD
    at = _COUNTS[key]
    rows = []
    for name in dict.fromkeys([*DECISIONS, *recorded.index, *at.index]):
        r, a = int(recorded.get(name, 0)), int(at.get(name, 0))
        if r == a == 0:
            continue
        rows.append({"decision": name, "recorded": r, "at_slider": a, "difference": a - r})
    return pd.DataFrame(rows, columns=columns)
