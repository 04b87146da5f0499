"""Process-group helpers that are the identity in one process.

Cross-batch negatives (RocketQA, section 4.2) share passage embeddings between processes: every
question is scored against the passages of ALL processes. The one primitive that needs is
`gather_with_grad`: an all-gather along dim 0 whose local slice keeps its autograd graph while
the slices received from other ranks are constants. In a single process (torch.distributed not
initialised) every helper here is the identity, so CPU tests run the same code path as 8 GPUs.

Gradient synchronisation is done by hand (`all_reduce_gradients`), not by DistributedDataParallel:
with cross-batch negatives each rank computes the SAME global loss, and the backward pass of rank r
yields the exact partial derivative of that loss through rank r's own slices. The full gradient
is therefore the SUM over ranks (op="sum"). With purely local losses (no cross-batch) it is the
mean (op="mean"), which is what DDP does. The oracle test in tests/test_distributed.py checks both
against one process holding the whole batch.

Launch: `torchrun --nproc_per_node N -m engine ...`; the command calls `init_from_env()`, which
picks gloo on CPU and nccl on CUDA. Not covered here: multi-node rendezvous beyond what torchrun's
environment variables provide.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import NamedTuple

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class World(NamedTuple):
    """This process's place in the process group: rank 0 of size 1 when not distributed."""

    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> World:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if not is_distributed():
        return World(0, 1)
    return World(dist.get_rank(), dist.get_world_size())


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(backend: str | None = None, timeout_minutes: float = 30.0) -> World:
    """Initialise the default process group from torchrun's environment variables.

    A no-op returning (0, 1) when not launched by torchrun (or already initialised: returns the
    current world). backend=None picks nccl when CUDA is available, gloo otherwise; with CUDA the
    current device is set to LOCAL_RANK.
    """
    if is_distributed():
        return world()
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World(0, 1)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    w = world()
    log.info("initialised torch.distributed (%s): rank %d of %d", backend, w.rank, w.size)
    return w


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    """Tensors must live on the GPU for nccl and may live anywhere for gloo."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def gather_sizes(n: int) -> list[int]:
    """Every rank's value of n (e.g. its number of rows), in rank order."""
    if not is_distributed():
        return [n]
    t = _comm_device(torch.tensor([n], dtype=torch.long))
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0, rank order; the local slice keeps its gradient, others are constants.

    Ranks may hold different numbers of rows (including 0): rows are padded to the largest count
    for the collective and trimmed afterwards. Identity when not distributed.
    """
    if not is_distributed():
        return t
    rank, size = world()
    sizes = gather_sizes(t.shape[0])
    longest = max(sizes)
    send = t.detach()
    if send.shape[0] < longest:
        pad = send.new_zeros((longest - send.shape[0], *send.shape[1:]))
        send = torch.cat([send, pad])
    send = _comm_device(send.contiguous())
    bufs = [torch.empty_like(send) for _ in range(size)]
    dist.all_gather(bufs, send)
    parts = [bufs[r][: sizes[r]].to(t.device) for r in range(size)]
    parts[rank] = t  # own slot: the tensor with its autograd graph
    return torch.cat(parts, dim=0)


def all_reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over ranks (for logging); the value itself in one process."""
    v = float(value.detach().item()) if isinstance(value, torch.Tensor) else float(value)
    if not is_distributed():
        return v
    t = _comm_device(torch.tensor([v], dtype=torch.float64))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def all_reduce_gradients(parameters, op: str = "sum") -> None:
    """Sum (cross-batch: every rank holds part of the same loss) or average (local losses) the
    gradients of `parameters` over ranks, in one flattened collective. No-op in one process."""
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    # parameters that no rank used (e.g. an unused pooler) keep grad None, as in one process, so
    # the optimiser skips them; one used elsewhere but not here takes part with zeros
    used = _comm_device(torch.tensor([p.grad is not None for p in params], dtype=torch.float32))
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    params = [p for p, u in zip(params, used.tolist()) if u > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not params:
        return
    grads = [p.grad for p in params]
    flat = _comm_device(torch.cat([g.reshape(-1) for g in grads]))
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if op == "mean":
        flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s weights to every rank (start training from identical weights)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            buf = _comm_device(t.data)
            dist.broadcast(buf, src)
            if buf is not t.data:
                t.data.copy_(buf)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
