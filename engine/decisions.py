"""Decision records: one line per (question, passage) that pipeline steps 3 and 4 considered.

The format is `decisions.jsonl` in docs/FORMATS.md ("Decision records"); `DecisionRecord` has
exactly those keys. `write_decisions` writes atomically, `read_decisions` validates every line
(a malformed record raises `DataError` naming the file and line).

`summarize` counts decisions and, where gold qrels or answer strings exist for the questions (as
in the `unlabeled` split of SQuAD, whose gold is held back), measures how often each decision was
right: the fraction of dropped passages that really are gold or contain an answer (the higher,
the better the denoising), the same fraction for kept hard negatives (the lower, the better) and
the precision of pseudo-positives. Answer matching is `engine.metrics.has_answer`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from engine.data import Corpus, DataError, iter_jsonl
from engine.metrics import has_answer

DECISIONS = (
    "positive",
    "hard_negative",
    "dropped_false_negative",
    "random_fill",
    "pseudo_positive",
    "pseudo_negative",
    "ignored",
)
STEPS = ("denoise", "augment")


@dataclass(frozen=True)
class DecisionRecord:
    run_id: str
    step: str  # "denoise" (step 3) or "augment" (step 4)
    question_id: str
    question_text: str
    passage_id: str
    dense_rank: int | None  # 1-based; None = not in the dual-encoder's ranking
    dense_score: float | None
    ce_prob: float | None  # None = not scored
    neg_threshold: float
    pos_threshold: float
    decision: str
    is_labelled_positive: bool
    dual_encoder: str  # version of the retriever that ranked
    cross_encoder: str  # version of the cross-encoder that scored

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"unknown decision {self.decision!r} (known: {', '.join(DECISIONS)})")
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r} (known: {', '.join(STEPS)})")


_KEYS = [f.name for f in fields(DecisionRecord)]


def write_decisions(records: Iterable[DecisionRecord], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_decisions(path: str | Path) -> list[DecisionRecord]:
    out = []
    for lineno, obj in iter_jsonl(Path(path)):
        missing = [k for k in _KEYS if k not in obj]
        if missing:
            raise DataError(f"{path}:{lineno}: decision record lacks {', '.join(missing)}")
        try:
            out.append(DecisionRecord(**{k: obj[k] for k in _KEYS}))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
    return out


# --- summary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionStats:
    """One decision's count and, where checkable, how many of its passages are gold / contain an answer."""

    decision: str
    count: int
    questions: int  # distinct questions with this decision
    gold_checked: int = 0  # records whose question has gold qrels
    gold: int = 0  # ... of which the passage is a gold passage
    answer_checked: int = 0  # records whose question has answer strings
    with_answer: int = 0  # ... of which the passage text contains an answer

    @property
    def gold_fraction(self) -> float | None:
        return self.gold / self.gold_checked if self.gold_checked else None

    @property
    def answer_fraction(self) -> float | None:
        return self.with_answer / self.answer_checked if self.answer_checked else None


@dataclass(frozen=True)
class DecisionSummary:
    steps: dict[str, list[DecisionStats]]  # step -> stats per decision present, in DECISIONS order
    questions: dict[str, int]  # step -> distinct questions
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "questions": dict(self.questions),
            "steps": {
                step: [
                    asdict(s) | {"gold_fraction": s.gold_fraction, "answer_fraction": s.answer_fraction} for s in stats
                ]
                for step, stats in self.steps.items()
            },
            "notes": list(self.notes),
        }

    def text(self) -> str:
        """A plain-text table per step, the way `pipeline summary` prints it."""
        lines = []
        for step, stats in self.steps.items():
            lines.append(f"step {step}: {self.questions[step]:,} questions")
            lines.append(f"  {'decision':<24} {'count':>8} {'questions':>9} {'is gold':>16} {'has answer':>16}")
            for s in stats:
                gold = f"{100 * s.gold_fraction:5.1f}% of {s.gold_checked:,}" if s.gold_fraction is not None else "-"
                ans = (
                    f"{100 * s.answer_fraction:5.1f}% of {s.answer_checked:,}" if s.answer_fraction is not None else "-"
                )
                lines.append(f"  {s.decision:<24} {s.count:>8,} {s.questions:>9,} {gold:>16} {ans:>16}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def summarize(
    records: Sequence[DecisionRecord],
    corpus: Corpus | None = None,
    gold: Mapping[str, Iterable[str]] | None = None,
    answers: Mapping[str, Sequence[str]] | None = None,
) -> DecisionSummary:
    """Counts per step and decision; correctness against `gold` (question id -> gold passage ids)
    and `answers` (question id -> answer strings, needs `corpus` for the passage texts).

    Pseudo-positive precision = `gold_fraction` (or `answer_fraction`) of `pseudo_positive`.
    """
    gold = {qid: set(pids) for qid, pids in (gold or {}).items()}
    answers = answers or {}
    notes = []
    if answers and corpus is None:
        notes.append("answers given without a corpus: answer checks skipped")
    counts: dict[str, Counter] = {}
    qsets: dict[str, dict[str, set]] = {}
    gchk: dict[str, Counter] = {}
    ghit: dict[str, Counter] = {}
    achk: dict[str, Counter] = {}
    ahit: dict[str, Counter] = {}
    missing_passages = 0
    for r in records:
        for d in (counts, gchk, ghit, achk, ahit):
            d.setdefault(r.step, Counter())
        qsets.setdefault(r.step, {}).setdefault(r.decision, set()).add(r.question_id)
        counts[r.step][r.decision] += 1
        if r.question_id in gold and gold[r.question_id]:
            gchk[r.step][r.decision] += 1
            ghit[r.step][r.decision] += r.passage_id in gold[r.question_id]
        ans = [a for a in answers.get(r.question_id, ()) if a.strip()]
        if ans and corpus is not None:
            if r.passage_id not in corpus:
                missing_passages += 1
                continue
            achk[r.step][r.decision] += 1
            ahit[r.step][r.decision] += has_answer(corpus[r.passage_id].text, ans)
    if missing_passages:
        notes.append(f"{missing_passages} records name passages missing from the corpus: not answer-checked")
    steps = {}
    questions = {}
    for step in counts:
        steps[step] = [
            DecisionStats(
                d, counts[step][d], len(qsets[step][d]), gchk[step][d], ghit[step][d], achk[step][d], ahit[step][d]
            )
            for d in DECISIONS
            if counts[step][d]
        ]
        questions[step] = len(set().union(*qsets[step].values()))
    return DecisionSummary(steps, questions, notes)
