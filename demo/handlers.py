"""Handlers of the Ask and Annotate tabs: plain functions over `Services`, no Gradio inside.

Each takes the services and the user's inputs and returns plain data (dataclasses, dicts,
DataFrames). Bad input raises `AppError` with a message meant for the user; the UI turns it
into a `gr.Error`, the API into an error response. An error means nothing was written.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from annotations import judgments as store_judgments
from annotations.errors import AnnotationError, UnknownIdError
from annotations.queue import QueueItem, next_items
from demo.config import MAX_K
from demo.render import Highlight, split_sentences
from demo.services import Services
from engine.data import Passage
from engine.retriever import QueryError, clean_question

log = logging.getLogger(__name__)

GRADE_NAMES = {0: "0 irrelevant", 1: "1 related", 2: "2 highly relevant", 3: "3 perfectly relevant"}


class AppError(ValueError):
    """Bad input or an impossible request; the message is shown to the user as is."""


# --- Ask ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AskResult:
    question_id: str
    question: str
    mode: str
    hits: list[dict]  # one dict per hit, best first (keys: see `_hit_row`)
    reranked: bool  # ordered by the cross-encoder
    notice: str
    seconds: float


def question_id_for(services: Services, text: str) -> str:
    """The data's id when the text is one of its questions, else a stable id from the text."""
    for q in services.dataset.questions.values():
        if q.text == text:
            return q.id
    return "ask-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def check_k(k: object) -> int:
    """k as a whole number in 1..MAX_K (ints, integral floats and numeric strings accepted)."""
    try:
        value = float(k)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(k, bool) or not math.isfinite(value) or value != int(value) or not 1 <= value <= MAX_K:
        raise AppError(f"k must be a whole number between 1 and {MAX_K}, got {k!r}")
    return int(value)


def _hit_row(hit, reranked: bool) -> dict:
    return {
        "rank": hit.rank,
        "passage_id": hit.passage.id,
        "title": hit.passage.title,
        "text": hit.passage.text,
        "dense_score": hit.dense_score,
        "dense_rank": hit.dense_rank,
        "bm25_score": hit.bm25_score,
        "bm25_rank": hit.bm25_rank,
        "first_stage_rank": hit.first_stage_rank,
        "ce_prob": hit.ce_prob if reranked else None,
        "ce_rank": hit.rank if reranked and hit.ce_prob is not None else None,
        "highlight": None,
        "highlight_prob": None,
    }


def highlights(services: Services, question: str, rows: list[dict]) -> list[Highlight | None]:
    """Per hit, the sentence the cross-encoder finds most answer-bearing (None below the bar or untrained)."""
    ce = services.cross_encoder
    if ce is None or not ce.is_trained or not rows:
        return [None] * len(rows)
    pieces: list[tuple[int, int, str]] = []
    for i, row in enumerate(rows):
        for j, sentence in enumerate(split_sentences(row["text"])):
            pieces.append((i, j, sentence))
    probs = ce.score(question, [Passage(f"s{i}-{j}", s, rows[i]["title"]) for i, j, s in pieces])
    best: list[Highlight | None] = [None] * len(rows)
    for (i, j, _), p in zip(pieces, probs):
        if p >= services.config.highlight_min_prob and (best[i] is None or p > best[i].prob):
            best[i] = Highlight(j, float(p))
    return best


def add_highlights(services: Services, question: str, rows: list[dict]) -> list[dict]:
    """Fill each row's `highlight` / `highlight_prob` (in place; returns `rows`).

    This scores every sentence of every row with the cross-encoder, which costs about as much as
    re-ranking the rows, so the Ask tab runs it as a second step after the ranking is shown."""
    for row, hl in zip(rows, highlights(services, question, rows)):
        row["highlight"] = split_sentences(row["text"])[hl.sentence_index] if hl is not None else None
        row["highlight_prob"] = hl.prob if hl is not None else None
    return rows


def ask(services: Services, question: object, k: object = 5, mode: str = "dense", highlight: bool = True) -> AskResult:
    """The top-k passages for a question, with dense (and BM25) scores, and cross-encoder
    probabilities and re-ranked order when a trained cross-encoder is loaded.

    highlight=False leaves out the answer-bearing sentences (`add_highlights` adds them later)."""
    t0 = time.perf_counter()
    if isinstance(question, bytes):
        question = question.decode("utf-8", errors="replace")
    try:
        text = clean_question(question)
    except QueryError as e:
        raise AppError(f"Cannot search: {e}.") from None
    k = check_k(k)
    if mode not in services.retriever.modes:
        raise AppError(f"retrieval mode {mode!r} is not available; choose one of {', '.join(services.retriever.modes)}")
    reranked = services.ce_trained
    hits = services.retriever.search(text, k=k, mode=mode, rerank_depth=k if reranked else 0)
    rows = [_hit_row(h, reranked) for h in hits]
    if highlight:
        add_highlights(services, text, rows)
    qid = question_id_for(services, text)
    services.remember_question(qid, text)
    notice = (
        ""
        if reranked
        else (
            "No trained cross-encoder yet: passages are in first-stage order, and no probabilities and no "
            "answer-bearing sentences are shown (an untrained head's scores mean nothing)."
        )
    )
    if not rows:
        notice = (notice + " " if notice else "") + "Nothing matched this question."
    return AskResult(qid, text, mode, rows, reranked, notice, time.perf_counter() - t0)


def order_label(services: Services, mode: str, reranked: bool) -> str:
    """What the Ask tab's list is ordered by, in words."""
    if not reranked:
        return f"{mode} order"
    r = services.retriever
    shares = "".join(
        f" + {w:g} x {name}" for name, w in (("dense", r.rerank_weight), ("BM25", r.rerank_bm25_weight)) if w
    )
    return f"cross-encoder{shares} order (first-stage ranks shown)"


def row_highlight(row: dict) -> Highlight | None:
    if not row.get("highlight"):
        return None
    return Highlight(split_sentences(row["text"]).index(row["highlight"]), float(row["highlight_prob"]))


# --- judging ------------------------------------------------------------------------------


def check_annotator(annotator: object) -> str:
    if not isinstance(annotator, str) or not annotator.strip():
        raise AppError(
            "No annotator identity: enter your name (or log in on a Space) before judging. Nothing was written."
        )
    name = annotator.strip()
    if len(name) > 100 or not name.isprintable():
        raise AppError("An annotator name must be printable and at most 100 characters. Nothing was written.")
    return name


def parse_grade(grade: object) -> int | None:
    """0..3 as int or string; "s" / "skip" -> None (an explicit skip, never a 0)."""
    if isinstance(grade, str) and grade.strip().lower() in ("s", "skip"):
        return None
    if isinstance(grade, bool):
        raise AppError(f"grade must be 0, 1, 2, 3 or 'skip', got {grade!r}")
    try:
        value = float(grade)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AppError(f"grade must be 0, 1, 2, 3 or 'skip', got {grade!r}") from None
    if not math.isfinite(value) or value not in (0, 1, 2, 3):
        raise AppError(f"grade must be 0, 1, 2, 3 or 'skip', got {grade!r}")
    return int(value)


def _question_text(services: Services, question_id: str) -> str | None:
    q = services.dataset.questions.get(question_id)
    if q is not None:
        return q.text
    return services.asked.get(question_id)


def judge(
    services: Services,
    annotator: object,
    question_id: object,
    passage_id: object,
    grade: object,
    *,
    suggestion_visible: bool = True,
    seconds: float | None = None,
    note: str | None = None,
) -> int:
    """Store one judgment of (question, passage) by an annotator; returns the judgment id."""
    name = check_annotator(annotator)
    value = parse_grade(grade)
    if not isinstance(question_id, str) or not question_id.strip():
        raise AppError("a question id is needed. Nothing was written.")
    if not isinstance(passage_id, str) or passage_id not in services.dataset.corpus:
        raise AppError(f"unknown passage id {passage_id!r}. Nothing was written.")
    passage = services.dataset.corpus[passage_id]
    text = _question_text(services, question_id)
    try:
        if text is not None:
            store_judgments.ensure_question(services.store, question_id, text)
        store_judgments.ensure_passages(services.store, [(passage.id, passage.title, passage.text)])
        if value is None:
            return store_judgments.skip(
                services.store,
                name,
                question_id,
                passage_id,
                suggestion_visible=suggestion_visible,
                seconds=seconds,
                note=note,
                stratum="adhoc",
            )
        return store_judgments.judge(
            services.store,
            name,
            question_id,
            passage_id,
            value,
            suggestion_visible=suggestion_visible,
            seconds=seconds,
            note=note,
            stratum="adhoc",
        )
    except UnknownIdError:
        raise AppError(
            f"unknown question id {question_id!r}: ask it first or use an id from the data. Nothing was written."
        ) from None
    except AnnotationError as e:
        raise AppError(f"{e}. Nothing was written.") from None


# --- Annotate -----------------------------------------------------------------------------


def run_id(services: Services) -> str | None:
    """The run whose decisions the queue serves (None: let the store pick its only run)."""
    if services.run is None:
        return None
    ids = services.run.decisions()["run_id"].dropna().unique()
    return str(ids[0]) if len(ids) else services.run.run_id


def next_item(services: Services, annotator: object) -> tuple[QueueItem | None, str]:
    """The next queued (question, passage) for the annotator, or None and the reason."""
    name = check_annotator(annotator)
    try:
        items = next_items(services.store, name, run_id(services), n=1)
    except UnknownIdError as e:
        return None, f"No machine decisions to judge yet ({e}). Load a pipeline run with --run, or wait for its import."
    except AnnotationError as e:
        raise AppError(str(e)) from None
    if not items:
        return None, "The queue is empty: every item has been judged. Thank you!"
    return items[0], ""


def judge_item(
    services: Services, annotator: object, item: dict, grade: object, seconds: float | None, blind: bool
) -> int:
    """Record the grade (or skip) of a queue item; the store links it to the machine decision."""
    name = check_annotator(annotator)
    if not item:
        raise AppError("There is no item to judge.")
    value = parse_grade(grade)
    kwargs = dict(
        seconds=seconds, suggestion_visible=not blind, decision_id=int(item["decision_id"]), stratum=item["stratum"]
    )
    try:
        if value is None:
            return store_judgments.skip(services.store, name, item["question_id"], item["passage_id"], **kwargs)
        return store_judgments.judge(services.store, name, item["question_id"], item["passage_id"], value, **kwargs)
    except AnnotationError as e:
        raise AppError(f"{e}. Nothing was written.") from None


def undo(services: Services, annotator: object) -> int | None:
    """Retract the annotator's latest grade or skip (a new row; history is kept)."""
    try:
        return store_judgments.undo_last(services.store, check_annotator(annotator))
    except AnnotationError as e:
        raise AppError(str(e)) from None


def progress(services: Services, annotator: str) -> tuple[int, int]:
    """(decisions of the loaded run this annotator has a current label for, decisions in the run)."""
    if services.run is None:
        return 0, 0
    frame = services.run.decisions()
    pairs = set(zip(frame["question_id"], frame["passage_id"]))
    mine = 0
    if annotator and annotator.strip():
        labels = store_judgments.current_labels(services.store, annotator=annotator.strip())
        mine = len(pairs & set(zip(labels["question_id"], labels["passage_id"])))
    return mine, len(pairs)
