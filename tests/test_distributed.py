"""The oracle test of cross-batch negatives: N gloo processes == one process holding the whole batch.

Two CPU processes (torch.multiprocessing.spawn, gloo, a FileStore in tmp_path) run
1. the core maths on a linear "encoder" (even and uneven shards, with and without cross-batch),
2. `backward_batch` on a real 1-layer MiniLM (plain and GradCache),
3. two steps of `train_dual_encoder`,
and save losses and gradients; the test compares them with the same computation in this process.
Dropout is disabled (a copy of the tiny model with dropout 0) so the comparison is deterministic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine.batching import make_batch
from engine.data import Corpus, Passage
from engine.distributed import (
    World,
    all_reduce_gradients,
    all_reduce_mean,
    gather_with_grad,
    init_from_env,
    world,
)
from engine.examples import TrainExample
from engine.loss import contrastive_loss, cross_batch_contrastive_loss, global_contrastive_loss

WORLD = 2
TOPICS = ["bees", "lighthouses", "volcanoes", "coffee", "glaciers", "violins", "comets", "tides"]


def toy_corpus() -> Corpus:
    passages = []
    for i, t in enumerate(TOPICS):
        passages.append(Passage(f"{t}_0", f"{t.capitalize()} are described here with fact number {i}.", t))
        passages.append(Passage(f"{t}_1", f"A second, longer paragraph about {t} and their history " * (1 + i % 3), t))
    return Corpus(passages)


def toy_examples() -> list[TrainExample]:
    out = []
    for i, t in enumerate(TOPICS):
        other = TOPICS[(i + 3) % len(TOPICS)]
        out.append(TrainExample(f"q{i}", f"What is fact {i} about {t}?", (f"{t}_0", f"{t}_1"), (f"{other}_1",)))
    return out


def toy_batch():
    examples = toy_examples()
    # question 1 shares a positive with question 0 (masked column) and topics repeat as negatives
    positives = [ex.positives[0] for ex in examples]
    positives[1] = examples[0].positives[1]
    known = [ex.positives for ex in examples]
    known[1] = known[1] + (examples[0].positives[1],)
    return make_batch(
        [e.question_id for e in examples],
        [e.question for e in examples],
        positives,
        [e.negatives for e in examples],
        known,
    )


# --- computations run identically in the workers and in the reference process ----------------


def linear_case(rank: int, size: int, uneven: bool, cross: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=g), torch.randn(12, 6, generator=g)  # 8 questions, 12 passages
    wq = torch.randn(6, 4, generator=g).requires_grad_()
    wp = torch.randn(6, 4, generator=g).requires_grad_()
    qcuts = [0, 3, 8] if uneven else [0, 4, 8]
    pcuts = [0, 4, 12] if uneven else [0, 6, 12]
    qr = range(qcuts[rank], qcuts[rank + 1]) if size > 1 else range(8)
    pr = range(pcuts[rank], pcuts[rank + 1]) if size > 1 else range(12)
    target = torch.tensor([0, 1, 2, 4, 6, 7, 8, 10])  # global passage column of each question
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[0, 3] = mask[5, 11] = True
    q, p = x[list(qr)] @ wq, y[list(pr)] @ wp
    if cross:
        loss = global_contrastive_loss(q, p, target, 0.5, mask)
        loss.backward()
        all_reduce_gradients([wq, wp], op="sum")
        value = float(loss.detach())
    else:  # shard-local in-batch loss, DDP-style mean of gradients
        local_target = torch.tensor([pr.index(int(t)) for t in target[list(qr)]])
        loss = contrastive_loss(q, p, local_target, 0.5)
        loss.backward()
        all_reduce_gradients([wq, wp], op="mean")
        value = all_reduce_mean(loss)
    return {"loss": value, "grads": [wq.grad.clone(), wp.grad.clone()]}


def local_index_case(rank: int, size: int) -> dict:
    """cross_batch_contrastive_loss: local positive indices shifted by the rank offset."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    w = torch.randn(3, 3, generator=g).requires_grad_()
    if size == 1:
        loss = cross_batch_contrastive_loss(x @ w, y @ w, torch.arange(6), 1.0)
    else:
        sl = slice(3 * rank, 3 * rank + 3)
        loss = cross_batch_contrastive_loss(x[sl] @ w, y[sl] @ w, torch.arange(3), 1.0)
    loss.backward()
    all_reduce_gradients([w], op="sum")
    return {"loss": float(loss.detach()), "grads": [w.grad.clone()]}


def transformer_case(model_dir: str, grad_cache: int) -> dict:
    from engine.dual_encoder import DualEncoder, DualEncoderConfig
    from engine.train_dual import DualTrainConfig, backward_batch

    model = DualEncoder.build(DualEncoderConfig(model=model_dir))
    model.train()
    cfg = DualTrainConfig(temperature=0.05, grad_cache_chunk=grad_cache)
    loss = backward_batch(model, toy_batch(), toy_corpus(), cfg)
    return {"loss": loss, "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


def training_case(model_dir: str) -> dict:
    from engine.dual_encoder import DualEncoder, DualEncoderConfig
    from engine.train_dual import DualTrainConfig, train_dual_encoder

    model = DualEncoder.build(DualEncoderConfig(model=model_dir))
    cfg = DualTrainConfig(batch_size=8, temperature=0.05, max_steps=2, epochs=2, learning_rate=1e-4, warmup_ratio=0.0)
    result = train_dual_encoder(model, toy_examples(), toy_corpus(), cfg)
    return {"losses": result.losses, "weights": {n: p.detach().clone() for n, p in model.named_parameters()}}


def all_cases(rank: int, size: int, model_dir: str) -> dict:
    return {
        "linear_even": linear_case(rank, size, uneven=False, cross=True),
        "linear_uneven": linear_case(rank, size, uneven=True, cross=True),
        "linear_local": linear_case(rank, size, uneven=False, cross=False),
        "local_index": local_index_case(rank, size),
        "transformer": transformer_case(model_dir, 0),
        "transformer_gc": transformer_case(model_dir, 3),
        "training": training_case(model_dir),
    }


def _worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert world() == World(rank, WORLD)
        torch.save(all_cases(rank, WORLD, model_dir), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# --- fixtures and tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nodrop_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The 1-layer MiniLM with dropout off: forward passes are deterministic."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    d = tmp_path_factory.mktemp("minilm-1layer-nodrop")
    cfg = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model_dir, config=cfg).save_pretrained(d)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def spawned(nodrop_model_dir, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    torch.multiprocessing.spawn(_worker, args=(str(out / "store"), nodrop_model_dir, str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single(nodrop_model_dir) -> dict:
    return all_cases(0, 1, nodrop_model_dir)


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5, what: str = "", scale: float = 0.0) -> None:
    """max |a - b| <= rel * scale; scale defaults to the larger max |.| of the two tensors."""
    scale = scale or max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= rel * scale, f"{what}: max abs diff {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("case", ["linear_even", "linear_uneven", "local_index"])
def test_cross_batch_maths_equals_one_process(spawned, single, case):
    for r in range(WORLD):
        assert spawned[r][case]["loss"] == pytest.approx(single[case]["loss"], rel=1e-6)
        for got, want in zip(spawned[r][case]["grads"], single[case]["grads"]):
            assert_close(got, want, 1e-6, case)


def test_local_losses_average_like_ddp(spawned):
    # without cross-batch each rank scores its 4 questions against its own 6 passages and the
    # gradients are averaged: the reference is the mean of the two shard losses, computed here
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, generator=g), torch.randn(12, 6, generator=g)
    wq = torch.randn(6, 4, generator=g).requires_grad_()
    wp = torch.randn(6, 4, generator=g).requires_grad_()
    l0 = contrastive_loss(x[:4] @ wq, y[:6] @ wp, torch.tensor([0, 1, 2, 4]), 0.5)
    l1 = contrastive_loss(x[4:] @ wq, y[6:] @ wp, torch.tensor([0, 1, 2, 4]), 0.5)
    mean = (l0 + l1) / 2
    mean.backward()
    for r in range(WORLD):
        got = spawned[r]["linear_local"]
        assert got["loss"] == pytest.approx(mean.item(), rel=1e-6)
        assert_close(got["grads"][0], wq.grad, 1e-6, "wq")
        assert_close(got["grads"][1], wp.grad, 1e-6, "wp")


def test_transformer_gradients_equal_one_process(spawned, single):
    for case in ("transformer", "transformer_gc"):
        want = single["transformer"]
        for r in range(WORLD):
            got = spawned[r][case]
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
            assert set(got["grads"]) == set(want["grads"]) and len(want["grads"]) > 10
            # relative to the largest gradient entry: some gradients are exactly 0 in theory
            # (attention key biases) and only float noise in practice
            scale = max(float(g.abs().max()) for g in want["grads"].values())
            for name, g in want["grads"].items():
                assert_close(got["grads"][name], g, 1e-5, f"{case} {name}", scale)


def test_two_training_steps_match_one_process(spawned, single):
    want = single["training"]
    for r in range(WORLD):
        got = spawned[r]["training"]
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-5)
        # Adam turns float noise in a (theoretically zero) gradient into a full lr-sized step, so
        # weights are compared against the largest weight, not tensor by tensor
        scale = max(float(w.abs().max()) for w in want["weights"].values())
        for name, w in want["weights"].items():
            assert_close(got["weights"][name], w, 1e-5, name, scale)
    # the ranks hold identical weights after training
    for name, w in spawned[0]["training"]["weights"].items():
        assert torch.equal(w, spawned[1]["training"]["weights"][name]), name


def test_helpers_are_the_identity_in_one_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    assert world() == World(0, 1) and world().is_main
    assert init_from_env() == World(0, 1)
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t) is t
    assert all_reduce_mean(torch.tensor(2.5)) == 2.5
    with pytest.raises(ValueError, match="op"):
        all_reduce_gradients([t], op="max")
    assert os.environ.get("RANK") is None
