"""Train the dual-encoder with in-batch, hard and cross-batch negatives (RocketQA, section 4.2).

One step = one GLOBAL batch of questions, planned identically on every rank (`engine.batching`):
each rank encodes its shard of the questions and of the batch's unique passages, the shards are
gathered with `gather_with_grad`, every rank computes the same global contrastive loss over all
passages, and parameter gradients are SUMMED over ranks (each rank holds the exact gradient
through its own slices; see `engine.distributed`). Without cross-batch negatives under
torch.distributed each rank trains on its shard with in-batch negatives and gradients are
averaged (DDP semantics). In one process both are the plain in-batch step.

Optimiser: AdamW (no decay on biases and LayerNorm weights), linear warm-up then linear decay to
zero, gradient clipping at `max_grad_norm`. Optional GradCache (`grad_cache_chunk`) for a large
effective batch on a small device, optional bf16 autocast on CUDA.

Paper numbers (RocketQA, Qu et al., 2021, ERNIE-base dual-encoder, 8 x V100 32GB): batch 512 per
GPU x 8 GPUs = 4,096 questions with cross-batch negatives on NQ/MS MARCO, learning rate 3e-5,
warm-up 10%, 1 hard negative per question on top of the in-batch ones (so a question sees ~8,191
negatives), 40 epochs on MS MARCO / 30 on NQ for the final model; max question / passage length
32 / 128 tokens.

Temperature: ERNIE's un-normalised CLS vectors use the raw inner product (temperature 1). The
packaged all-MiniLM-L6-v2 produces L2-normalised vectors whose inner products lie in [-1, 1];
temperature 1 leaves the softmax almost flat and barely trains. The pipeline therefore passes
temperature 0.05 (sentence-transformers' scale 20) for normalised models: see
`default_temperature(model)`. Measured (all-MiniLM-L6-v2, 640 SQuAD train questions, batch 32,
in-batch negatives, 1 epoch = 20 steps, lr 3e-5; MRR@10 on the 829 dev questions over all 2,067
paragraphs): untrained 0.742, temperature 0.05 -> 0.763, temperature 1.0 -> 0.700 (the flat softmax
hurts: loss stays at ~2.7 of log(32) = 3.47).

Not covered: gradient accumulation over several global batches (GradCache makes it unnecessary),
checkpointing mid-training (the pipeline saves after each trainer call).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from engine.batching import DualBatch, batches_per_epoch, sample_epoch
from engine.data import Corpus
from engine.distributed import (
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_parameters,
    world,
)
from engine.dual_encoder import DualEncoder
from engine.examples import TrainExample, check_examples
from engine.gradcache import Tower, grad_cache_backward, plain_backward
from engine.loss import contrastive_loss, global_contrastive_loss

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DualTrainConfig:
    epochs: int = 1
    # questions per GLOBAL batch, split over ranks. RocketQA: 512 per GPU x 8 GPUs = 4,096 (with
    # cross-batch negatives); sentence-transformers' reference for MiniLM on SQuAD: 32.
    batch_size: int = 32
    learning_rate: float = 3e-5  # RocketQA: 3e-5 for the dual-encoder
    warmup_ratio: float = 0.1  # RocketQA: 10% linear warm-up
    weight_decay: float = 0.01
    hard_negatives_per_question: int = 1  # RocketQA: 1 (sampled each epoch); 0 = in-batch only
    cross_batch: bool = True  # gather passage embeddings from all ranks (no-op in one process)
    grad_cache_chunk: int = 0  # >0: GradCache with this sub-batch size
    # logits = q . p / temperature. 1.0 = RocketQA's raw inner product (un-normalised ERNIE vectors);
    # normalised MiniLM vectors need ~0.05 (sentence-transformers' scale 20), see default_temperature().
    temperature: float = 1.0
    mixed_precision: bool = False  # bf16 autocast, CUDA only
    max_steps: int = 0  # >0 caps the number of optimiser steps (tests, smoke runs)
    seed: int = 13
    length_bucketing: bool = True  # similar lengths in a batch (less padding), batches still random
    num_threads: int = 0  # torch.set_num_threads; 0 = leave as is
    max_grad_norm: float = 1.0  # gradient clipping (sentence-transformers' default); 0 = off


@dataclass(frozen=True)
class TrainResult:
    steps: int
    examples_seen: int  # questions (dual) or pairs (cross) processed, over all ranks
    seconds: float
    losses: list[float]  # per step, global mean
    examples_per_second: float
    extra: dict = field(default_factory=dict)


def default_temperature(model: DualEncoder) -> float:
    """0.05 for L2-normalised towers (cosine logits in [-1, 1]), 1.0 (raw inner product) otherwise."""
    return 0.05 if model.query_encoder.normalize else 1.0


def _autocast(enabled: bool, device: torch.device):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it: the for-loop AdamW step over MiniLM's 23M parameters
    takes seconds on 2 CPU cores, the fused one a tenth of that (measured, see the report)."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=learning_rate)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _encoders(model: DualEncoder, corpus: Corpus, mixed_precision: bool):
    dev = model.query_encoder.device

    def encode_questions(texts: Sequence[str]) -> torch.Tensor:
        if len(texts) == 0:
            return torch.zeros((0, model.dim), device=dev)
        with _autocast(mixed_precision, dev):
            return model.forward_queries(list(texts)).float()  # (b, dim)

    def encode_passages(ids: Sequence[str]) -> torch.Tensor:
        if len(ids) == 0:
            return torch.zeros((0, model.dim), device=dev)
        with _autocast(mixed_precision, dev):
            return model.forward_passages([corpus[pid] for pid in ids]).float()  # (n, dim)

    return encode_questions, encode_passages


def backward_batch(model: DualEncoder, batch: DualBatch, corpus: Corpus, config: DualTrainConfig) -> float:
    """Forward + backward of one global batch on this rank, gradients synchronised over ranks.

    Returns the global mean loss. After it, every rank's `.grad` equals the gradient one process
    holding the whole batch would get (cross-batch), or the DDP average of shard gradients.
    """
    rank, size = world()
    encode_q, encode_p = _encoders(model, corpus, config.mixed_precision)
    if config.cross_batch or size == 1:
        qr, pr = batch.question_range(rank, size), batch.passage_range(rank, size)
        questions = [batch.questions[i] for i in qr]
        passages = [batch.passage_ids[i] for i in pr]
        target, mask = batch.target_tensor(), batch.ignore_mask()

        def loss_fn(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return global_contrastive_loss(q, p, target, config.temperature, mask)

        reduce_op = "sum"
    else:
        local = batch.subset(batch.question_range(rank, size))
        questions, passages = list(local.questions), list(local.passage_ids)
        target, mask = local.target_tensor(), local.ignore_mask()

        def loss_fn(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return contrastive_loss(q, p, target, config.temperature, mask)

        reduce_op = "mean"
    towers = [Tower(encode_q, questions), Tower(encode_p, passages)]
    if config.grad_cache_chunk > 0:
        loss = grad_cache_backward(towers, loss_fn, config.grad_cache_chunk)
    else:
        loss = plain_backward(towers, loss_fn)
    all_reduce_gradients(model.parameters(), op=reduce_op)
    return float(loss) if reduce_op == "sum" else all_reduce_mean(loss)


def train_dual_encoder(
    model: DualEncoder,
    examples: list[TrainExample],
    corpus: Corpus,
    config: DualTrainConfig,
    log_every: int = 10,
    progress: Progress | None = None,
) -> TrainResult:
    """Train `model` in place on `examples` (single process or under torchrun; rank 0 logs)."""
    if not examples:
        raise ValueError("no training examples: the dual-encoder needs at least one question with a positive")
    if config.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {config.temperature}")
    check_examples(examples, corpus)
    threads_before = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    w = world()
    torch.manual_seed(config.seed + w.rank)  # dropout differs per rank, as with independent GPUs
    broadcast_parameters(model)

    # a trailing batch needs one question per rank, and without hard negatives a lone question
    # has a single candidate passage: its softmax loss is 0 and the step is wasted
    min_batch = max(w.size, 1 if config.hard_negatives_per_question > 0 else 2)
    per_epoch = batches_per_epoch(len(examples), config.batch_size, min_batch=min_batch)
    total = per_epoch * config.epochs
    if config.max_steps > 0:
        total = min(total, config.max_steps)
    if total == 0:
        raise ValueError(f"{len(examples)} examples make no batch of >= {min_batch} questions (one per rank)")
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    scheduler = linear_schedule(optimizer, total, config.warmup_ratio)
    params = [p for p in model.parameters() if p.requires_grad]

    if w.is_main:
        log.info(
            "training dual-encoder: %d questions, %d epochs, %d steps of %d questions on %d rank(s), "
            "%d hard negative(s), cross-batch %s, temperature %g, GradCache chunk %d",
            len(examples), config.epochs, total, config.batch_size, w.size,
            config.hard_negatives_per_question, config.cross_batch, config.temperature, config.grad_cache_chunk,
        )  # fmt: skip
    was_training = model.training
    model.train()
    losses: list[float] = []
    seen = 0
    passages_seen = 0
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        if step >= total:
            break
        batches = sample_epoch(
            examples,
            corpus,
            config.batch_size,
            config.hard_negatives_per_question,
            config.seed,
            epoch,
            length_bucketing=config.length_bucketing,
            min_batch=min_batch,
            passage_chars_cap=5 * model.passage_encoder.max_length,
        )
        for batch in batches:
            if step >= total:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = backward_batch(model, batch, corpus, config)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(batch)
            passages_seen += len(batch.passage_ids)
            losses.append(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"dual-encoder loss is {loss} at step {step}")
            if w.is_main:
                if step % max(1, log_every) == 0 or step == total:
                    rate = seen / (time.perf_counter() - start)
                    log.info("step %d/%d  epoch %d  loss %.4f  %.1f questions/s", step, total, epoch + 1, loss, rate)
                if progress is not None:
                    progress(step / total, f"dual-encoder step {step}/{total}, loss {loss:.3f}")
    seconds = time.perf_counter() - start
    model.train(was_training)
    torch.set_num_threads(threads_before)
    return TrainResult(
        steps=step,
        examples_seen=seen,
        seconds=seconds,
        losses=losses,
        examples_per_second=seen / seconds if seconds > 0 else 0.0,
        extra={
            "world_size": w.size,
            "passages_per_batch": passages_seen / max(1, step),
            "config": asdict(config),
        },
    )
