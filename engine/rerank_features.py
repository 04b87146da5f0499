"""Re-ranking features on disk, and re-ordering heads from them without scoring again.

`evaluate --rerank-features FILE` writes, per question, the head it re-ranked in first-stage order
with each passage's dual-encoder inner product, BM25 score and cross-encoder logit, plus the ids
below the head. Scoring a head is what an evaluation spends its time on (about 1 s a question on
a 2-core CPU); with the features saved, `python -m engine rerank-mix` tries other weights, or
averages several cross-encoders' logits, in seconds; `evaluate --rerank-logits-from FILE` re-ranks
another first stage with the same cross-encoder, scoring only the pairs the file lacks (`ReusedLogits`).

File format (JSON Lines, `FORMAT`): a first line `{"format", "corpus_fingerprint", "config"}`,
then one line per question: `{"split", "id", "ids", "dense", "bm25", "ce_logits", "tail"}` where
`ids`, `dense`, `bm25` and `ce_logits` are parallel lists over the head in first-stage order
(`dense` or `bm25` is empty when that model was not loaded) and `tail` the ids ranked below the head.

Not here: the first stage itself. Every file mixed together must come from the same first stage
(the same head ids per question); a mismatch is an error, never a silent merge.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.fusion import RerankCandidates, rerank_order

FORMAT = "rocketqa-workbench/rerank-features/1"


@dataclass(frozen=True)
class SavedHead:
    candidates: RerankCandidates  # the re-ranked head, first-stage order
    tail: tuple[str, ...]  # ids ranked below the head, in order


@dataclass(frozen=True)
class RerankFeatures:
    path: str
    corpus_fingerprint: str
    config: dict
    heads: dict[str, dict[str, SavedHead]]  # split -> question id -> head


def write_features(
    path: str | os.PathLike,
    corpus_fingerprint: str,
    config: Mapping,
    rows: Iterable[tuple[str, str, SavedHead]],
) -> int:
    """Write (split, question id, head) rows; returns how many. Written to a temporary file first,
    so a crash never leaves a half file under `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    n = 0
    with tmp.open("w") as f:
        f.write(json.dumps({"format": FORMAT, "corpus_fingerprint": corpus_fingerprint, "config": dict(config)}) + "\n")
        for split, qid, head in rows:
            c = head.candidates
            line = {
                "split": split,
                "id": qid,
                "ids": list(c.ids),
                "dense": list(c.dense),
                "bm25": list(c.bm25),
                "ce_logits": list(c.ce_logits),
                "tail": list(head.tail),
            }
            f.write(json.dumps(line) + "\n")
            n += 1
    tmp.replace(target)
    return n


def _floats(row: dict, key: str, n: int, allow_empty: bool = False) -> tuple[float, ...]:
    values = row.get(key)
    if not isinstance(values, list) or not (len(values) == n or (allow_empty and not values)):
        raise ValueError(f"{key!r} must be a list of {n} numbers")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{key!r} holds a value that is not a finite number")
    return out


def read_features(path: str | os.PathLike) -> RerankFeatures:
    """The features in `path`; a ValueError naming the file and line when it is not such a file."""
    heads: dict[str, dict[str, SavedHead]] = {}
    try:
        f = open(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from e
    with f:
        lineno = 0
        try:
            header = json.loads(f.readline() or "null")
            lineno = 1
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                got = header.get("format") if isinstance(header, dict) else header
                raise ValueError(f"format {got!r}, expected {FORMAT!r}")
            for n, line in enumerate(f, 2):
                lineno = n  # named in the error
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                split, qid, ids = row.get("split"), row.get("id"), row.get("ids")
                if not isinstance(split, str) or not isinstance(qid, str):
                    raise ValueError("'split' and 'id' must be strings")
                if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                    raise ValueError("'ids' must be a non-empty list of passage ids")
                if len(set(ids)) != len(ids):
                    raise ValueError("'ids' repeats a passage")
                tail = row.get("tail", [])
                if not isinstance(tail, list) or not all(isinstance(i, str) for i in tail):
                    raise ValueError("'tail' must be a list of passage ids")
                if qid in heads.setdefault(split, {}):
                    raise ValueError(f"question {qid!r} of split {split!r} appears twice")
                n = len(ids)
                candidates = RerankCandidates(
                    tuple(ids),
                    _floats(row, "dense", n, allow_empty=True),
                    _floats(row, "ce_logits", n),
                    _floats(row, "bm25", n, allow_empty=True),
                )
                heads[split][qid] = SavedHead(candidates, tuple(tail))
        except (json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"{path}, line {lineno}: not a re-ranking features file ({e})") from e
    return RerankFeatures(str(path), str(header.get("corpus_fingerprint")), header.get("config") or {}, heads)


def average_logits(sets: Sequence[RerankFeatures], split: str) -> dict[str, SavedHead]:
    """One head per question of `split` whose logits are the mean of every file's logits (one
    file: its own heads). Every file must hold the split's same questions with the same head ids,
    dense and BM25 scores: otherwise they came from different first stages."""
    if not sets:
        raise ValueError("no features file given")
    for fs in sets:
        if split not in fs.heads:
            have = ", ".join(sorted(fs.heads)) or "none"
            raise ValueError(f"{fs.path} holds no question of split {split!r} (it holds: {have})")
    first = sets[0]
    for other in sets[1:]:
        if other.corpus_fingerprint != first.corpus_fingerprint:
            raise ValueError(f"{other.path} and {first.path} were made on different corpora")
        if set(other.heads[split]) != set(first.heads[split]):
            raise ValueError(f"{other.path} and {first.path} hold different questions of split {split!r}")
    out = {}
    for qid, head in first.heads[split].items():
        c = head.candidates
        logits = [list(c.ce_logits)]
        for other in sets[1:]:
            o = other.heads[split][qid]
            if o.candidates.ids != c.ids or o.tail != head.tail:
                raise ValueError(
                    f"question {qid!r}: {other.path} and {first.path} re-ranked different heads "
                    "(another first stage): only logits over the same passages can be averaged"
                )
            if not _close(o.candidates.dense, c.dense) or not _close(o.candidates.bm25, c.bm25):
                raise ValueError(
                    f"question {qid!r}: {other.path} and {first.path} hold different dense or BM25 scores "
                    "(another dual-encoder or BM25 setting)"
                )
            logits.append(list(o.candidates.ce_logits))
        mean = tuple(sum(col) / len(col) for col in zip(*logits))
        out[qid] = SavedHead(RerankCandidates(c.ids, c.dense, mean, c.bm25), head.tail)
    return out


def heads_for(
    features: Sequence[RerankFeatures], corpus_fingerprint: str, splits: Sequence[str]
) -> dict[str, dict[str, SavedHead]]:
    """Per split, the heads with their logits averaged over the files (`average_logits`), once
    every file is checked against the corpus it is used with (`Corpus.fingerprint()`)."""
    for f in features:
        if f.corpus_fingerprint != corpus_fingerprint:
            raise ValueError(f"{f.path} was made on another corpus than the data given (its fingerprint differs)")
    return {split: average_logits(features, split) for split in splits}


def _close(a: Sequence[float], b: Sequence[float], tol: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(x)) for x, y in zip(a, b))


def ranking(head: SavedHead, weight: float, bm25_weight: float) -> list[str]:
    """The re-ranked head (logit + weight x dense + bm25_weight x BM25, ties in first-stage order)
    followed by the tail: what `evaluate` ranks with the same weights."""
    c = head.candidates
    order = rerank_order(c.ce_logits, c.dense, weight, c.bm25, bm25_weight)
    return [c.ids[i] for i in order] + list(head.tail)


class ReusedLogits:
    """A cross-encoder that takes the logits of pairs already scored from saved features and scores
    only the others: re-ranking another first stage's heads with the same cross-encoder costs only
    the pairs it has not seen (`evaluate --rerank-logits-from FILE`). `table` maps (question text as
    the retriever passes it, passage id) to a logit; everything but `logits` is the wrapped model's."""

    def __init__(self, inner, table: Mapping[tuple[str, str], float]):
        self.inner = inner
        self.table = table
        self.reused = 0
        self.scored = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def logits(self, questions: Sequence[str], passages: Sequence, batch_size: int = 32):
        import numpy as np

        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions for {len(passages)} passages")
        out = np.empty(len(questions), dtype=np.float32)
        missing = []
        for i, (q, p) in enumerate(zip(questions, passages)):
            logit = self.table.get((q, p.id))
            if logit is None:
                missing.append(i)
            else:
                out[i] = logit
        if missing:
            out[missing] = self.inner.logits(
                [questions[i] for i in missing], [passages[i] for i in missing], batch_size
            )
        self.reused += len(questions) - len(missing)
        self.scored += len(missing)
        return out


def logit_table(features: RerankFeatures, texts: Mapping[str, Mapping[str, str]]) -> dict:
    """(question text, passage id) -> logit over every saved head of one file whose question `texts`
    knows (split -> question id -> the text the retriever scores, i.e. cleaned)."""
    table: dict[tuple[str, str], float] = {}
    for split, heads in features.heads.items():
        known = texts.get(split, {})
        for qid, head in heads.items():
            text = known.get(qid)
            if text is not None:
                table.update(zip(((text, pid) for pid in head.candidates.ids), head.candidates.ce_logits))
    return table
