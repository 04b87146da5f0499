"""Inverse-cloze pseudo-queries: extra dual-encoder training examples made from passage text alone.

The inverse cloze task (Lee et al., ACL 2019, ORQA) treats a sentence of a passage as a query whose
positive is that passage. Here a pseudo-query is a random span of 6-14 words of one sentence with a
quarter of its words dropped, so that it overlaps its passage about as much as a SQuAD question
overlaps the sentence it was written from; the passage keeps its full text (the corpus is not
changed). Nothing labelled is used: the passages come from the training articles (passages that
share a title with a training positive, the default) or from the whole corpus (`scope="corpus"`,
transductive: the test articles' text too, never their questions).

Not in RocketQA. Step 1 adds these examples to the labelled questions when
`InverseClozeConfig.per_passage` > 0 (off in every preset); docs/PIPELINE.md has the measurement.
Left out: the sentence is not removed from the positive (ORQA removes it 90% of the time, which
needs a corpus of edited passages).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.data import Corpus
from engine.examples import TrainExample

SCOPES = ("train-titles", "positives", "corpus")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class InverseClozeConfig:
    per_passage: int = 0  # pseudo-queries per passage, each from a different sentence (0 = off)
    min_words: int = 6  # a span's length is drawn uniformly from [min_words, max_words]
    max_words: int = 14
    word_drop: float = 0.25  # each word of the span is dropped with this probability
    # which passages get pseudo-queries: "train-titles" = passages sharing a title with a training
    # positive (the training articles), "positives" = the training positives only, "corpus" = all
    scope: str = "train-titles"
    seed: int = 13

    def __post_init__(self) -> None:
        if self.per_passage < 0:
            raise ValueError(f"per_passage must be >= 0, got {self.per_passage}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words} and {self.max_words}")
        if not 0.0 <= self.word_drop < 1.0:
            raise ValueError(f"word_drop must be in [0, 1), got {self.word_drop}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r} (use one of {', '.join(SCOPES)})")


def sentences(text: str, min_words: int) -> list[str]:
    """The sentences of `text` (split after . ! ?) with at least `min_words` words."""
    return [s for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def pseudo_query(sentence: str, rng: random.Random, config: InverseClozeConfig) -> str:
    """A random span of the sentence with some words dropped (at least one word is kept; the
    result is empty only when the kept words are all punctuation, which callers skip)."""
    words = sentence.split()
    length = rng.randint(config.min_words, config.max_words)
    start = rng.randint(0, max(0, len(words) - length))
    span = words[start : start + length]
    kept = [w for w in span if rng.random() > config.word_drop] or span
    return " ".join(kept).strip(" ,.;:")


def scope_passages(corpus: Corpus, examples: Sequence[TrainExample], scope: str) -> list[str]:
    """Passage ids that get pseudo-queries, in corpus order."""
    if scope == "corpus":
        return corpus.ids
    positives = {pid for ex in examples for pid in ex.positives}
    if scope == "positives":
        return [p.id for p in corpus if p.id in positives]
    if scope == "train-titles":
        titles = {corpus[pid].title for pid in positives if pid in corpus and corpus[pid].title}
        return [p.id for p in corpus if p.id in positives or (p.title and p.title in titles)]
    raise ValueError(f"unknown scope {scope!r} (use one of {', '.join(SCOPES)})")


def inverse_cloze_examples(
    corpus: Corpus, examples: Sequence[TrainExample], config: InverseClozeConfig
) -> list[TrainExample]:
    """Up to `per_passage` pseudo-query examples for each passage in scope (fewer when a passage has
    fewer sentences of `min_words` words), ids "ict:<passage id>:<k>", seeded."""
    if config.per_passage == 0:
        return []
    rng = random.Random(config.seed)
    out = []
    for pid in scope_passages(corpus, examples, config.scope):
        pool = sentences(corpus[pid].text, config.min_words)
        for k in range(min(config.per_passage, len(pool))):
            sentence = rng.choice(pool)
            pool.remove(sentence)  # each pseudo-query of a passage from a different sentence
            query = pseudo_query(sentence, rng, config)
            if query:
                out.append(TrainExample(f"ict:{pid}:{k}", query, (pid,)))
    return out
