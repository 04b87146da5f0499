"""Global batches for the dual-encoder: which questions, which passages, which passage is whose.

Every rank plans the same global batches from the same seed, so the layout of a batch (question
order, passage order, the positive column of each question, the masked columns) is known
everywhere without communication; each rank then encodes only its shard (`question_range`,
`passage_range`) and the gathered representations line up with the plan.

Per epoch (seeded by (seed, epoch)): one positive sampled from each example's `positives`, up to
`hard_negatives` sampled without replacement from its `negatives` (fewer when it has fewer; then
in-batch and cross-batch negatives still work). Passages are de-duplicated within a global batch
(several SQuAD questions share a gold paragraph); a column that is a known positive of a question
other than its target is masked out of that question's softmax.

Length bucketing: the shuffled examples are cut into pools of `POOL_BATCHES` batches, each pool
is sorted by (clipped passage length, question length) and cut into batches, and the batch order
is shuffled again. Batches stay random samples of the data, but padding inside a batch shrinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.data import Corpus
from engine.examples import TrainExample

POOL_BATCHES = 50  # batches per length-sorting pool (the "keep batches randomised" trade-off)


@dataclass(frozen=True)
class DualBatch:
    """One global batch. Shapes: B questions, N unique passages."""

    question_ids: tuple[str, ...]  # (B,)
    questions: tuple[str, ...]  # (B,) question texts
    positive_ids: tuple[str, ...]  # (B,) the positive sampled for each question this epoch
    negative_ids: tuple[tuple[str, ...], ...]  # (B, <= hard_negatives) sampled hard negatives
    known_positives: tuple[tuple[str, ...], ...]  # (B, ...) all labelled positives (for the mask)
    passage_ids: tuple[str, ...]  # (N,) unique within the batch, in first-seen order
    target: tuple[int, ...]  # (B,) column of each question's positive
    ignore: tuple[tuple[int, int], ...] = ()  # (question row, passage column) removed from the softmax

    def __len__(self) -> int:
        return len(self.questions)

    def target_tensor(self) -> torch.Tensor:
        return torch.tensor(self.target, dtype=torch.long)  # (B,)

    def ignore_mask(self) -> torch.Tensor | None:
        if not self.ignore:
            return None
        mask = torch.zeros(len(self.questions), len(self.passage_ids), dtype=torch.bool)  # (B, N)
        rows, cols = zip(*self.ignore)
        mask[list(rows), list(cols)] = True
        return mask

    def question_range(self, rank: int, size: int) -> range:
        return _split(len(self.questions), rank, size)

    def passage_range(self, rank: int, size: int) -> range:
        return _split(len(self.passage_ids), rank, size)

    def subset(self, rows: range) -> DualBatch:
        """The batch restricted to some question rows and their own passages (in-batch negatives only)."""
        return make_batch(
            [self.question_ids[i] for i in rows],
            [self.questions[i] for i in rows],
            [self.positive_ids[i] for i in rows],
            [self.negative_ids[i] for i in rows],
            [self.known_positives[i] for i in rows],
        )


def _split(n: int, rank: int, size: int) -> range:
    """Contiguous, balanced shard `rank` of `size` over n items (sizes differ by at most 1)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def make_batch(
    question_ids: Sequence[str],
    questions: Sequence[str],
    positives: Sequence[str],
    negatives: Sequence[Sequence[str]],
    known_positives: Sequence[Sequence[str]] | None = None,
) -> DualBatch:
    """A batch from each question's chosen positive and hard negatives (passage ids)."""
    known = [tuple(k) for k in known_positives] if known_positives is not None else [(p,) for p in positives]
    columns: dict[str, int] = {}
    target = []
    for pos, negs in zip(positives, negatives):
        target.append(columns.setdefault(pos, len(columns)))
        for pid in negs:
            columns.setdefault(pid, len(columns))
    ignore = []
    for row, pids in enumerate(known):
        for pid in pids:
            col = columns.get(pid)
            if col is not None and col != target[row]:
                ignore.append((row, col))
    return DualBatch(
        question_ids=tuple(question_ids),
        questions=tuple(questions),
        positive_ids=tuple(positives),
        negative_ids=tuple(tuple(n) for n in negatives),
        known_positives=tuple(known),
        passage_ids=tuple(columns),
        target=tuple(target),
        ignore=tuple(ignore),
    )


def sample_epoch(
    examples: Sequence[TrainExample],
    corpus: Corpus,
    batch_size: int,
    hard_negatives: int,
    seed: int,
    epoch: int,
    length_bucketing: bool = True,
    min_batch: int = 1,
    passage_chars_cap: int = 640,
) -> list[DualBatch]:
    """The epoch's global batches, identical on every rank.

    A trailing batch with fewer than `min_batch` questions (e.g. fewer than the number of ranks)
    is dropped. passage_chars_cap: lengths above it count as equal (they are truncated anyway;
    about 5 characters a token for a 128-token passage limit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    n = len(examples)
    chosen_pos: list[str] = []
    chosen_neg: list[list[str]] = []
    for ex in examples:
        chosen_pos.append(
            ex.positives[int(rng.integers(len(ex.positives)))] if len(ex.positives) > 1 else ex.positives[0]
        )
        pool = [pid for pid in dict.fromkeys(ex.negatives) if pid not in ex.positives]
        k = min(hard_negatives, len(pool))
        chosen_neg.append([pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else [])
    order = rng.permutation(n)
    if length_bucketing:
        pool_size = batch_size * POOL_BATCHES
        sorted_order = []
        for start in range(0, n, pool_size):
            part = order[start : start + pool_size]
            keys = [
                (min(len(corpus[chosen_pos[i]].full_text), passage_chars_cap), len(examples[i].question)) for i in part
            ]
            sorted_order.extend(part[j] for j in sorted(range(len(part)), key=keys.__getitem__))
        order = np.asarray(sorted_order, dtype=np.int64)
    groups = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if length_bucketing:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    out = []
    for g in groups:
        if len(g) < min_batch:
            continue
        out.append(
            make_batch(
                [examples[i].question_id for i in g],
                [examples[i].question for i in g],
                [chosen_pos[i] for i in g],
                [chosen_neg[i] for i in g],
                [examples[i].positives for i in g],
            )
        )
    return out


def batches_per_epoch(n_examples: int, batch_size: int, min_batch: int = 1) -> int:
    full, rest = divmod(n_examples, batch_size)
    return full + (1 if rest >= min_batch and rest > 0 else 0)
