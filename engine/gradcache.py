"""GradCache (Gao et al., 2021): a large contrastive batch on a small device, exact gradients.

The contrastive loss couples every question with every passage of the batch, so the batch cannot
simply be split into accumulation steps. GradCache splits the ENCODER work instead:

1. encode every chunk of inputs without a graph -> representations r (cheap in memory);
2. make r a leaf, compute the loss on the whole batch, backward -> d loss / d r (the "cache");
3. re-encode each chunk WITH a graph and backprop the cached d loss / d r into the parameters.

The parameter gradients equal those of the plain full-batch step (checked in
tests/test_train_dual.py to 1e-5 of the largest gradient). With dropout active the re-encoding in step 3
must see the same dropout masks as step 1: the CPU and CUDA RNG states are saved before each
chunk's first pass and replayed (inside `torch.random.fork_rng`) for its second pass, as the
original implementation does. Works under torch.distributed unchanged: the loss function may
gather the leaves with `gather_with_grad`, and d loss / d r is then the gradient through this
rank's slices.

Cost: one extra forward pass (about +33% compute) in exchange for memory independent of batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Encode = Callable[[Sequence], torch.Tensor]  # inputs -> (len(inputs), dim) with grad


@dataclass(frozen=True)
class RngState:
    """CPU (and CUDA, when used) random state captured before a chunk's first forward pass."""

    cpu: torch.Tensor
    cuda_devices: tuple[int, ...]
    cuda: tuple[torch.Tensor, ...]

    @classmethod
    def capture(cls) -> RngState:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            devices = tuple(range(torch.cuda.device_count()))
            return cls(torch.get_rng_state(), devices, tuple(torch.cuda.get_rng_state(d) for d in devices))
        return cls(torch.get_rng_state(), (), ())

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in zip(self.cuda_devices, self.cuda):
            torch.cuda.set_rng_state(s, d)


@dataclass(frozen=True)
class Tower:
    """One encoder call and the inputs it encodes (e.g. the question tower and its questions)."""

    encode: Encode
    inputs: Sequence


def _chunks(inputs: Sequence, size: int) -> list[Sequence]:
    return [inputs[i : i + size] for i in range(0, len(inputs), size)]


def _encode_without_graph(tower: Tower, chunk_size: int) -> tuple[torch.Tensor, list[RngState]]:
    reps, states = [], []
    if len(tower.inputs) == 0:  # e.g. a rank without passages in this batch
        with torch.no_grad():
            return tower.encode(tower.inputs), states
    with torch.no_grad():
        for chunk in _chunks(tower.inputs, chunk_size):
            states.append(RngState.capture())
            reps.append(tower.encode(chunk))
    return torch.cat(reps), states


def _backprop_cached(tower: Tower, chunk_size: int, grad: torch.Tensor, states: list[RngState]) -> None:
    start = 0
    for chunk, state in zip(_chunks(tower.inputs, chunk_size), states):
        with torch.random.fork_rng(devices=list(state.cuda_devices)):
            state.restore()
            rep = tower.encode(chunk)  # (chunk, dim), same dropout masks as the first pass
        rep.backward(grad[start : start + len(chunk)].to(rep.dtype))
        start += len(chunk)


def grad_cache_backward(towers: Sequence[Tower], loss_fn: Callable[..., torch.Tensor], chunk_size: int) -> torch.Tensor:
    """loss_fn(*representations) over the whole batch; accumulates parameter gradients chunk by chunk.

    Returns the loss (detached). Equivalent to
    `loss_fn(*[t.encode(t.inputs) for t in towers]).backward()` with memory bounded by chunk_size.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    encoded = [_encode_without_graph(t, chunk_size) for t in towers]
    leaves = [reps.detach().requires_grad_() for reps, _ in encoded]
    loss = loss_fn(*leaves)
    if not loss.requires_grad:  # nothing of this rank's batch reaches the loss
        return loss.detach()
    loss.backward()
    for tower, leaf, (_, states) in zip(towers, leaves, encoded):
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        _backprop_cached(tower, chunk_size, grad, states)
    return loss.detach()


def plain_backward(towers: Sequence[Tower], loss_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """The reference step: encode everything with a graph, one backward. Returns the loss (detached)."""
    loss = loss_fn(*[t.encode(t.inputs) for t in towers])
    if loss.requires_grad:
        loss.backward()
    return loss.detach()
