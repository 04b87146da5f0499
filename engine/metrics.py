"""Retrieval metrics: recall, MRR and nDCG against qrels, and DPR-style top-k answer accuracy.

`evaluate_rankings` takes rankings (question id -> passage ids, best first) and returns an
`EvalResult` whose metrics are percentages (0-100), as the RocketQA and DPR papers report them:

- `R@k`      |relevant in top-k| / |relevant| per question (relevant = grade > 0), averaged;
- `MRR@10`   1 / rank of the first relevant passage if it is in the top 10, else 0;
- `nDCG@10`  linear gain = grade, discount log2(rank + 1), ideal ranking from the qrels
             (the pytrec_eval / BEIR definition);
- `Acc@k`    the top-k holds a passage whose text contains an answer (`has_answer`), over the
             questions with at least one non-empty answer; needs `answers` and `corpus`.

`normalize_answer` is the SQuAD normalisation plus DPR's NFD: NFD, lowercase, punctuation removed
(ASCII punctuation and every Unicode punctuation character), articles a/an/the removed,
whitespace collapsed. Answer matching (`has_answer`) uses the same steps except that punctuation
splits tokens instead of vanishing, as DPR's tokenizer does, so the answer "Manning" is found in
"Manning's problems" and "11" in "an 11-year veteran"; an answer matches when its tokens occur
contiguously in the passage's tokens, so "cat" never matches "category". Reader metrics (exact
match, F1) are out of scope.
"""

from __future__ import annotations

import logging
import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.data import Corpus, Qrels

log = logging.getLogger(__name__)

CUTOFF = 10  # MRR@10 and nDCG@10, as in the RocketQA paper and BEIR
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class _PunctuationTable(dict):
    """A `str.translate` table mapping punctuation to `replacement`, filled one code point at a time."""

    def __init__(self, replacement: str | None) -> None:
        super().__init__()
        self.replacement = replacement

    def __missing__(self, code: int) -> int | str | None:
        ch = chr(code)
        value = self.replacement if ch in string.punctuation or unicodedata.category(ch).startswith("P") else code
        self[code] = value
        return value


_DELETE_PUNCTUATION = _PunctuationTable(None)
_SPLIT_ON_PUNCTUATION = _PunctuationTable(" ")


def _normalize(s: str, table: _PunctuationTable) -> str:
    s = unicodedata.normalize("NFD", s).lower().translate(table)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_answer(s: str) -> str:
    """SQuAD/DPR answer normalisation: NFD, lowercase, no punctuation, no articles, single spaces."""
    return _normalize(s, _DELETE_PUNCTUATION)


def match_tokens(s: str) -> str:
    """The space-joined tokens `has_answer` compares: `normalize_answer`, except that punctuation
    separates tokens instead of vanishing, as in DPR's tokenizer ("Manning's" -> "manning s")."""
    return _normalize(s, _SPLIT_ON_PUNCTUATION)


def _padded(normalized: str) -> str:
    # With a space on both sides, substring search is token-sequence search: " cat " is not in " category ".
    return f" {normalized} "


def _contains(padded_text: str, normalized_answers: Sequence[str]) -> bool:
    return any(_padded(a) in padded_text for a in normalized_answers if a)


def has_answer(text: str, answers: Sequence[str]) -> bool:
    """True if some answer's tokens (`match_tokens`) occur contiguously in the text's. Empty answers never match."""
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    return _contains(_padded(match_tokens(text)), [match_tokens(a) for a in answers])


@dataclass(frozen=True)
class EvalResult:
    """Metrics in percent, and per question: `first_relevant_rank` (1-based, 0 = not ranked),
    `reciprocal_rank` (over the whole ranking, 0 = not ranked) and, when answer accuracy was
    computed for the question, `answer_rank` (first passage with an answer within the top max(ks),
    0 = none)."""

    metrics: dict[str, float]
    num_questions: int  # questions averaged for R@k / MRR / nDCG (in qrels, >= 1 relevant passage)
    num_with_answers: int  # questions averaged for Acc@k (>= 1 non-empty answer)
    per_question: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return {
            "metrics": dict(self.metrics),
            "num_questions": self.num_questions,
            "num_with_answers": self.num_with_answers,
            "per_question": {qid: dict(v) for qid, v in self.per_question.items()},
        }

    def summary(self) -> str:
        """One line, e.g. 'R@1 41.2  R@5 63.0 ... (829 questions, 829 with answers)'."""
        values = "  ".join(f"{k} {v:.1f}" for k, v in self.metrics.items())
        return f"{values}  ({self.num_questions} questions, {self.num_with_answers} with answers)"


def _ranking(rankings: Mapping[str, Sequence[str]], qid: str) -> list[str]:
    ranking = rankings.get(qid, ())
    if isinstance(ranking, str):
        raise TypeError(f"ranking of question {qid!r} is a string; expected a sequence of passage ids")
    return list(dict.fromkeys(ranking))  # a passage counts once, at its best rank


def _qrels_scores(ranking: list[str], relevant: dict[str, int], ks: Sequence[int]) -> dict[str, float]:
    """R@k, MRR@10, nDCG@10 (fractions, not percent) and the first relevant rank of one question."""
    scores = {f"R@{k}": sum(pid in relevant for pid in ranking[:k]) / len(relevant) for k in ks}
    first = next((rank for rank, pid in enumerate(ranking, 1) if pid in relevant), 0)
    scores[f"MRR@{CUTOFF}"] = 1.0 / first if 0 < first <= CUTOFF else 0.0
    dcg = sum(relevant.get(pid, 0) / math.log2(rank + 1) for rank, pid in enumerate(ranking[:CUTOFF], 1))
    ideal = sorted(relevant.values(), reverse=True)[:CUTOFF]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, 1))
    scores[f"nDCG@{CUTOFF}"] = dcg / idcg
    scores["_first"] = float(first)
    return scores


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    qrels: Qrels,
    corpus: Corpus | None = None,
    answers: Mapping[str, Sequence[str]] | None = None,
    ks: Sequence[int] = (1, 5, 20, 100),
) -> EvalResult:
    """Score rankings (question id -> passage ids, best first) against qrels and, optionally, answers.

    Qrels metrics average over the questions in `qrels` with a relevant passage; one without a
    ranking counts as all misses (logged). `Acc@k` is computed when both `corpus` and `answers`
    are given, over the same questions (or over all of `answers` when `qrels` is empty: then only
    `Acc@k` is reported). Rankings of questions outside that set are ignored.
    """
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    judged = {qid: {pid: g for pid, g in rels.items() if g > 0} for qid, rels in qrels.items()}
    judged = {qid: rels for qid, rels in judged.items() if rels}
    if len(judged) < len(qrels):
        log.warning("%d questions in qrels have no relevant passage and are not evaluated", len(qrels) - len(judged))
    unranked = sum(qid not in rankings for qid in judged)
    if unranked:
        log.warning("%d of %d questions have no ranking and count as misses", unranked, len(judged))
    duplicates = sum(len(r) != len(set(r)) for qid, r in rankings.items() if qid in judged and not isinstance(r, str))
    if duplicates:
        log.warning("%d rankings repeat a passage id; each passage counts at its first rank", duplicates)

    per_question: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {f"R@{k}": 0.0 for k in ks} | {f"MRR@{CUTOFF}": 0.0, f"nDCG@{CUTOFF}": 0.0}
    for qid, relevant in judged.items():
        scores = _qrels_scores(_ranking(rankings, qid), relevant, ks)
        first = scores.pop("_first")
        for key in totals:
            totals[key] += scores[key]
        per_question[qid] = {"first_relevant_rank": first, "reciprocal_rank": 1.0 / first if first else 0.0}
    metrics = {key: 100.0 * total / len(judged) if judged else 0.0 for key, total in totals.items()} if qrels else {}

    num_with_answers = 0
    if answers is not None and corpus is not None:
        pool = list(judged) if qrels else list(answers)
        acc, num_with_answers = _answer_accuracy(rankings, pool, corpus, answers, ks, per_question)
        metrics.update(acc)
    elif not qrels:
        raise ValueError("nothing to evaluate: qrels is empty and no answers with a corpus were given")
    return EvalResult(metrics, len(judged), num_with_answers, per_question)


def _answer_accuracy(
    rankings: Mapping[str, Sequence[str]],
    pool: list[str],
    corpus: Corpus,
    answers: Mapping[str, Sequence[str]],
    ks: tuple[int, ...],
    per_question: dict[str, dict[str, float]],
) -> tuple[dict[str, float], int]:
    """Acc@k in percent over the questions of `pool` with a non-empty answer; fills `answer_rank`."""
    depth = max(ks)
    texts: dict[str, str] = {}  # passage id -> padded normalised text, each passage normalised once
    hits = dict.fromkeys(ks, 0)
    counted = 0
    for qid in pool:
        if isinstance(answers.get(qid), str):
            raise TypeError(f"answers of question {qid!r} is a string; expected a sequence of strings")
        normalized = [a for a in (match_tokens(x) for x in answers.get(qid, ())) if a]
        if not normalized:
            continue
        counted += 1
        rank = 0
        for r, pid in enumerate(_ranking(rankings, qid)[:depth], 1):
            if pid not in texts:
                if pid not in corpus:
                    raise ValueError(f"ranking of question {qid!r} names passage {pid!r}, which is not in the corpus")
                texts[pid] = _padded(match_tokens(corpus[pid].text))
            if _contains(texts[pid], normalized):
                rank = r
                break
        for k in ks:
            hits[k] += 0 < rank <= k
        per_question.setdefault(qid, {})["answer_rank"] = float(rank)
    skipped = len(pool) - counted
    if skipped:
        log.info("answer accuracy: %d of %d questions have no non-empty answer and are left out", skipped, len(pool))
    return {f"Acc@{k}": 100.0 * hits[k] / counted if counted else 0.0 for k in ks}, counted


# --- paired comparisons: two rankings of the same questions -----------------------------


def rr10(result: EvalResult, qids: list[str]) -> np.ndarray:
    """Each question's reciprocal rank of its first relevant passage within the top CUTOFF (0 beyond)."""
    out = []
    for qid in qids:
        first = result.per_question.get(qid, {}).get("first_relevant_rank", 0)
        out.append(1.0 / first if 0 < first <= CUTOFF else 0.0)
    return np.asarray(out)


def paired_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean of y - x per question in points (x 100) and the half-width of its 95% interval."""
    d = 100 * (np.asarray(y, dtype=float) - np.asarray(x, dtype=float))
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()) if len(d) else 0.0, 1.96 * se


def paired_mrr10(a: EvalResult, b: EvalResult) -> dict:
    """MRR@10 of b minus a over the questions both evaluated, paired, with its 95% half-width."""
    both = sorted(set(a.per_question) & set(b.per_question))
    mean, half = paired_interval(rr10(a, both), rr10(b, both))
    verdict = "within noise" if abs(mean) <= half else ("better" if mean > 0 else "worse")
    return {"MRR@10": round(mean, 2), "ci95": round(half, 2), "questions": len(both), "verdict": verdict}
