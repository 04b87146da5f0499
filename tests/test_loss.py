"""The contrastive loss against hand computation, and the batch planner's invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.batching import _split, make_batch, sample_epoch
from engine.data import Corpus, Passage
from engine.examples import TrainExample
from engine.loss import contrastive_loss, cross_batch_contrastive_loss, global_contrastive_loss


def _reference(q: np.ndarray, p: np.ndarray, pos: np.ndarray, t: float, mask: np.ndarray | None = None) -> float:
    logits = q @ p.T / t
    if mask is not None:
        logits = np.where(mask, -np.inf, logits)
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(q)), pos]))


def test_loss_equals_hand_computed_softmax_cross_entropy():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(3, 5, generator=g), torch.randn(7, 5, generator=g)
    pos = torch.tensor([0, 4, 6])
    for t in (1.0, 0.05):
        got = contrastive_loss(q, p, pos, t).item()
        assert got == pytest.approx(_reference(q.numpy(), p.numpy(), pos.numpy(), t), rel=1e-5)


def test_ignore_mask_equals_deleting_the_column():
    g = torch.Generator().manual_seed(1)
    q, p = torch.randn(2, 4, generator=g), torch.randn(5, 4, generator=g)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3] = True  # passage 3 removed for question 0 only
    masked = contrastive_loss(q[:1], p, torch.tensor([1]), 0.5, mask[:1])
    deleted = contrastive_loss(q[:1], p[[0, 1, 2, 4]], torch.tensor([1]), 0.5)
    assert masked.item() == pytest.approx(deleted.item(), rel=1e-6)
    both = contrastive_loss(q, p, torch.tensor([1, 3]), 0.5, mask).item()
    assert both == pytest.approx(_reference(q.numpy(), p.numpy(), np.array([1, 3]), 0.5, mask.numpy()), rel=1e-5)
    assert both != pytest.approx(contrastive_loss(q, p, torch.tensor([1, 3]), 0.5).item(), rel=1e-3)


def test_masked_column_gets_no_gradient():
    q = torch.randn(2, 4, requires_grad=True)
    p = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[False, False, True], [False, False, True]])
    contrastive_loss(q, p, torch.tensor([0, 1]), 1.0, mask).backward()
    assert torch.all(p.grad[2] == 0) and torch.any(p.grad[0] != 0)


def test_in_one_process_cross_batch_is_in_batch():
    g = torch.Generator().manual_seed(2)
    q, p = torch.randn(4, 8, generator=g), torch.randn(8, 8, generator=g)
    pos = torch.tensor([0, 2, 4, 6])
    plain = contrastive_loss(q, p, pos, 0.1)
    assert cross_batch_contrastive_loss(q, p, pos, 0.1).item() == plain.item()
    assert global_contrastive_loss(q, p, pos, 0.1).item() == plain.item()


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([0]), 0.0)


def test_shards_are_contiguous_balanced_and_cover_everything():
    for n in (0, 1, 5, 8, 31):
        for size in (1, 2, 3):
            shards = [_split(n, r, size) for r in range(size)]
            assert [i for s in shards for i in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_batch_dedupes_shared_passages_and_masks_other_positives():
    # q1 and q2 share gold paragraph A; q2 also has a second positive B, which is q3's hard negative
    batch = make_batch(
        ["q1", "q2", "q3"],
        ["one", "two", "three"],
        positives=["A", "A", "C"],
        negatives=[["D"], [], ["B"]],
        known_positives=[("A",), ("A", "B"), ("C",)],
    )
    assert batch.passage_ids == ("A", "D", "C", "B")
    assert batch.target == (0, 0, 2)
    assert batch.ignore == ((1, 3),)  # B is a positive of q2 but not its target: masked for q2 only
    mask = batch.ignore_mask()
    assert mask.shape == (3, 4) and mask.sum().item() == 1 and mask[1, 3]
    local = batch.subset(range(2, 3))
    assert local.passage_ids == ("C", "B") and local.target == (0,) and local.ignore == ()


def _toy(n: int = 10) -> tuple[list[TrainExample], Corpus]:
    corpus = Corpus([Passage(f"p{i}", "word " * (i + 1), f"T{i}") for i in range(30)])
    examples = [
        TrainExample(
            f"q{i}", "question " * (1 + i % 4), (f"p{i}", f"p{i + 10}"), (f"p{(i + 1) % 10}", f"p{20 + i}", f"p{i}")
        )
        for i in range(n)
    ]
    return examples, corpus


def test_epoch_plan_is_seeded_covers_every_question_and_never_uses_a_positive_as_negative():
    examples, corpus = _toy()
    a = sample_epoch(examples, corpus, batch_size=4, hard_negatives=2, seed=3, epoch=0)
    b = sample_epoch(examples, corpus, batch_size=4, hard_negatives=2, seed=3, epoch=0)
    c = sample_epoch(examples, corpus, batch_size=4, hard_negatives=2, seed=3, epoch=1)
    assert a == b and a != c
    assert sorted(q for batch in a for q in batch.question_ids) == sorted(e.question_id for e in examples)
    assert [len(x) for x in a if len(x) != 4] == [2]
    by_id = {e.question_id: e for e in examples}
    for batch in a:
        for qid, pos, negs in zip(batch.question_ids, batch.positive_ids, batch.negative_ids):
            assert pos in by_id[qid].positives
            assert len(negs) == 2 and not set(negs) & set(by_id[qid].positives)
    # a trailing batch smaller than the number of ranks is dropped
    assert len(sample_epoch(examples, corpus, 4, 0, 3, 0, min_batch=3)) == 2
    # hard_negatives=0: in-batch only
    assert all(n == () for batch in sample_epoch(examples, corpus, 4, 0, 3, 0) for n in batch.negative_ids)


def test_length_bucketing_groups_similar_lengths():
    corpus = Corpus([Passage(f"p{i}", "x" * (10 * (i + 1))) for i in range(64)])
    examples = [TrainExample(f"q{i}", "q?", (f"p{i}",)) for i in range(64)]
    spread = {}
    for bucket in (True, False):
        batches = sample_epoch(examples, corpus, 8, 0, 0, 0, length_bucketing=bucket)
        spread[bucket] = np.mean([np.ptp([int(p[1:]) for p in b.positive_ids]) for b in batches])
    assert spread[True] < spread[False] / 3
