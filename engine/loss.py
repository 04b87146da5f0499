"""The dual-encoder's contrastive loss, split from the models so it is testable on plain tensors.

Each question is a softmax classification over every passage it is shown: its positive, the
other questions' positives and hard negatives (in-batch), and with cross-batch negatives
(RocketQA, section 4.2) the passages of all other processes too:

    loss = mean_i  -log softmax_j(q_i . p_j / temperature)[positive_i]

`ignore_mask[i, j] = True` removes passage j from question i's softmax. The trainer uses it for
passages that are known positives of question i other than the target (in SQuAD several questions
share a gold paragraph; without the mask a question's second positive would be pushed away as an
in-batch negative).

Temperature: RocketQA (ERNIE, un-normalised CLS vectors) uses the raw inner product, i.e.
temperature 1. For L2-normalised vectors (all-MiniLM-L6-v2) the logits lie in [-1, 1] and a
softmax over them is nearly flat, so sentence-transformers' MultipleNegativesRankingLoss
multiplies cosine similarities by 20, i.e. temperature 0.05.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distributed import gather_sizes, gather_with_grad, is_distributed, world


def contrastive_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float = 1.0,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """q: (B, d) questions, p: (N, d) passages, positive_index: (B,) long in [0, N) -> scalar mean loss."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = (q.float() @ p.float().T) / temperature  # (B, N)
    if ignore_mask is not None:
        logits = logits.masked_fill(ignore_mask.to(logits.device), float("-inf"))
    return F.cross_entropy(logits, positive_index.to(logits.device))


def cross_batch_contrastive_loss(
    q_local: torch.Tensor,
    p_local: torch.Tensor,
    positive_index_local: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The loss of the GLOBAL batch (identical on every rank), computed from this rank's slices.

    q_local: (b, d), p_local: (n, d), positive_index_local: (b,) indices into p_local. Questions
    and passages of all ranks are gathered (own slices keep their gradient) and each positive
    index is shifted by the number of passages on lower ranks. Backward on rank r gives the exact
    gradient of the global loss through rank r's slices, so summing parameter gradients over
    ranks (`all_reduce_gradients(op="sum")`) equals one process holding the whole batch.
    In one process this is `contrastive_loss` itself.
    """
    if not is_distributed():
        return contrastive_loss(q_local, p_local, positive_index_local, temperature)
    rank, _ = world()
    offset = sum(gather_sizes(p_local.shape[0])[:rank])
    q = gather_with_grad(q_local)  # (B, d)
    p = gather_with_grad(p_local)  # (N, d)
    positives = gather_with_grad((positive_index_local + offset).to(q_local.device).unsqueeze(1)).squeeze(1)
    return contrastive_loss(q, p, positives, temperature)


def global_contrastive_loss(
    q_local: torch.Tensor,
    p_local: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: float = 1.0,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Like `cross_batch_contrastive_loss`, for a batch whose layout every rank already knows.

    positive_index: (B,) and ignore_mask: (B, N) refer to the gathered order (rank 0's rows
    first). The trainer plans each global batch identically on every rank, so it uses this form.
    """
    return contrastive_loss(
        gather_with_grad(q_local), gather_with_grad(p_local), positive_index, temperature, ignore_mask
    )
