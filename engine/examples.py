"""Training examples: a question with its positive and negative passage ids.

The pipeline's input format (`train.jsonl`, see docs/FORMATS.md "Training examples"): one JSON
object a line, `{"question_id", "question", "positives": [pid, ...], "negatives": [pid, ...]}`.
Both the dual-encoder and the cross-encoder trainers consume lists of `TrainExample`; the
annotation export writes the same format, so human-corrected data retrains without conversion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.data import Corpus, DataError, Dataset, iter_jsonl


@dataclass(frozen=True)
class TrainExample:
    question_id: str
    question: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = field(default_factory=tuple)


def examples_from_split(ds: Dataset, split: str) -> list[TrainExample]:
    """One example per question of a split: its relevant passages, no negatives."""
    questions, qrels = ds.split(split)
    out = []
    for q in questions:
        positives = tuple(pid for pid, grade in qrels[q.id].items() if grade > 0)
        if positives:
            out.append(TrainExample(q.id, q.text, positives))
    return out


def check_examples(examples: Iterable[TrainExample], corpus: Corpus) -> None:
    """Every passage id must be in the corpus and every example must have a positive."""
    for ex in examples:
        if not ex.positives:
            raise DataError(f"question {ex.question_id!r} has no positive passage")
        for pid in (*ex.positives, *ex.negatives):
            if pid not in corpus:
                raise DataError(f"question {ex.question_id!r} names passage {pid!r}, which is not in the corpus")


def write_examples(examples: Iterable[TrainExample], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_examples(path: str | Path) -> list[TrainExample]:
    out = []
    for lineno, obj in iter_jsonl(Path(path)):
        try:
            out.append(
                TrainExample(
                    str(obj["question_id"]),
                    str(obj["question"]),
                    tuple(obj["positives"]),
                    tuple(obj.get("negatives") or ()),
                )
            )
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}:{lineno}: not a training example ({e})") from None
    return out
