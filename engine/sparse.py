"""BM25 over a corpus, through the maintained `bm25s` library (we do not implement BM25 here).

Defaults follow common practice and match `bm25s` run by hand on the same data: English
stopwords, the Snowball English stemmer (PyStemmer), passages as "title. text", Lucene's BM25
variant with k1 = 1.5, b = 0.75. The index can be saved and loaded (bm25s' own format) next to
a JSON config.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s
import numpy as np

from engine.data import Corpus

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG on import


@dataclass(frozen=True)
class BM25Config:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str | None = "en"
    stemmer: str | None = "english"  # Snowball language for PyStemmer; None = no stemming
    with_title: bool = True


@dataclass(frozen=True)
class SparseResult:
    scores: np.ndarray  # (n_queries, k) float32, best first
    ids: list[list[str]]


def _stemmer(language: str | None):
    if language is None:
        return None
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer(language)


class BM25Index:
    def __init__(self, corpus_ids: list[str], retriever: bm25s.BM25, config: BM25Config):
        self.ids = corpus_ids
        self.retriever = retriever
        self.config = config
        self._stem = _stemmer(config.stemmer)
        self._row = {pid: i for i, pid in enumerate(corpus_ids)}

    @classmethod
    def build(cls, corpus: Corpus, config: BM25Config | None = None) -> BM25Index:
        config = config or BM25Config()
        texts = [p.full_text if config.with_title else p.text for p in corpus]
        tokens = bm25s.tokenize(
            texts, stopwords=config.stopwords, stemmer=_stemmer(config.stemmer), show_progress=False
        )
        retriever = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        retriever.index(tokens, show_progress=False)
        return cls(corpus.ids, retriever, config)

    def search(self, questions: Sequence[str], k: int) -> SparseResult:
        k = min(k, len(self.ids))
        tokens = bm25s.tokenize(
            list(questions), stopwords=self.config.stopwords, stemmer=self._stem, show_progress=False
        )
        rows, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return SparseResult(scores=scores.astype(np.float32), ids=[[self.ids[i] for i in row] for row in rows])

    def score_passages(self, questions: Sequence[str], ids: Sequence[Sequence[str]]) -> list[list[float]]:
        """The BM25 score of given passages for each question (0 where no question term occurs), the
        same numbers `search` gives them; for re-ranking features of passages another retriever found."""
        if len(questions) != len(ids):
            raise ValueError(f"{len(questions)} questions for {len(ids)} lists of passage ids")
        unknown = sorted({pid for row in ids for pid in row if pid not in self._row})
        if unknown:
            raise KeyError(f"{len(unknown)} passage id(s) not in the BM25 index, e.g. {unknown[0]!r}")
        tokens = bm25s.tokenize(
            list(questions), stopwords=self.config.stopwords, stemmer=self._stem, return_ids=False, show_progress=False
        )
        out = []
        for toks, row in zip(tokens, ids):
            known = self.retriever.get_tokens_ids(toks)
            if not known:
                out.append([0.0] * len(row))
                continue
            scores = self.retriever.get_scores_from_ids(known)
            out.append([float(scores[self._row[pid]]) for pid in row])
        return out

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        self.retriever.save(str(d / "bm25s"))
        (d / "bm25.json").write_text(json.dumps({"config": asdict(self.config), "ids": self.ids}))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        d = Path(directory)
        meta = json.loads((d / "bm25.json").read_text())
        retriever = bm25s.BM25.load(str(d / "bm25s"))
        return cls(meta["ids"], retriever, BM25Config(**meta["config"]))
