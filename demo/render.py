"""HTML for the app: ranked hits, the highlighted answer-bearing sentence, notices, progress bars.

Every piece of text that comes from data (passage titles and texts, questions, ids, decisions)
goes through `html.escape` here, so a passage holding `<script>` or `<img onerror=...>` is shown
as text and never runs in the browser. Nothing in this module builds markup from unescaped input;
`test_demo_render.py` checks it on hostile strings.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (a light rule: end punctuation followed by a capital or digit).

    Invariant: "".join of the pieces with the whitespace between them gives back the text, so a
    highlight never loses characters; pieces are returned without their trailing whitespace.
    """
    parts = [p for p in _SENTENCE_END.split(text) if p]
    return parts or [text]


@dataclass(frozen=True)
class Highlight:
    sentence_index: int
    prob: float


def passage_html(text: str, highlight: Highlight | None = None) -> str:
    """The passage text, escaped, with the answer-bearing sentence wrapped in <mark>."""
    if highlight is None:
        return esc(text)
    out = []
    pos = 0
    for i, sentence in enumerate(split_sentences(text)):
        start = text.find(sentence, pos)
        if start < 0:  # cannot happen for pieces of `text`; fall back to plain text
            return esc(text)
        out.append(esc(text[pos:start]))
        piece = esc(sentence)
        if i == highlight.sentence_index:
            title = esc(f"cross-encoder probability {highlight.prob:.2f}: the sentence most likely to answer")
            piece = f'<mark class="answer" title="{title}">{piece}</mark>'
        out.append(piece)
        pos = start + len(sentence)
    out.append(esc(text[pos:]))
    return "".join(out)


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def hit_card(row: dict, highlight: Highlight | None = None, ce_trained: bool = False) -> str:
    """One ranked passage as a card: rank, scores side by side, title, text."""
    scores = [
        f"<span class='score dense'>dense {fmt(row.get('dense_score'))} (rank {esc(row.get('dense_rank') or '–')})</span>"
    ]
    if row.get("bm25_score") is not None:
        scores.append(
            f"<span class='score bm25'>BM25 {fmt(row.get('bm25_score'), 2)} (rank {esc(row.get('bm25_rank') or '–')})</span>"
        )
    if ce_trained and row.get("ce_prob") is not None:
        scores.append(f"<span class='score ce'>cross-encoder p = {fmt(row.get('ce_prob'))}</span>")
    title = f"<b>{esc(row.get('title') or '')}</b> " if row.get("title") else ""
    return (
        f"<div class='hit' data-pid='{esc(row['passage_id'])}'>"
        f"<div class='hit-head'><span class='rank'>#{esc(row['rank'])}</span> "
        f"<code>{esc(row['passage_id'])}</code> {' · '.join(scores)}</div>"
        f"<div class='hit-text'>{title}{passage_html(row.get('text') or '', highlight)}</div></div>"
    )


def notice(text: str, kind: str = "info") -> str:
    """A boxed message; `kind` is info | warn | error."""
    return f"<div class='notice {esc(kind)}'>{esc(text)}</div>"


def progress_bar(fraction: float, label: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f"<div class='progress'><div class='bar' style='width:{pct:.0f}%'></div></div>"
        f"<div class='progress-label'>{esc(label)} ({pct:.0f}%)</div>"
    )


def item_card(question: str, title: str, text: str, suggestion: str = "") -> str:
    """A (question, passage) pair to judge in the Annotate tab; `suggestion` is omitted in blind mode."""
    sug = f"<div class='suggestion'>Machine: {esc(suggestion)}</div>" if suggestion else ""
    head = f"<b>{esc(title)}</b> " if title else ""
    return (
        f"<div class='item'><div class='question'>Q: {esc(question)}</div>"
        f"<div class='hit-text'>{head}{esc(text)}</div>{sug}</div>"
    )


CSS = """
.hit { border: 1px solid #ddd; border-radius: 8px; padding: 8px 12px; margin: 4px 0; }
.hit-head { font-size: 0.9em; color: #444; margin-bottom: 4px; }
.rank { font-weight: bold; font-size: 1.1em; }
.score { background: #f1f5f9; border-radius: 4px; padding: 1px 5px; margin-right: 2px; }
.score.ce { background: #dcfce7; }
mark.answer { background: #fde68a; padding: 0 2px; }
.notice { border-left: 4px solid #3b82f6; background: #eff6ff; padding: 8px 12px; margin: 4px 0; }
.notice.warn { border-color: #f59e0b; background: #fffbeb; }
.notice.error { border-color: #ef4444; background: #fef2f2; }
.progress { height: 12px; background: #e5e7eb; border-radius: 6px; overflow: hidden; }
.progress .bar { height: 100%; background: #3b82f6; }
.item { border: 1px solid #ccc; border-radius: 8px; padding: 10px 14px; }
.item .question { font-weight: bold; margin-bottom: 6px; }
.suggestion { margin-top: 6px; color: #555; font-style: italic; }
"""
