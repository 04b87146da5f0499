"""Train the cross-encoder as a pointwise relevance classifier, then calibrate it (RocketQA step 2).

Pairs: every labelled positive of a question is a 1, and `negatives_per_positive` passages drawn
(per epoch, seeded) from the example's `negatives` are 0s. The pipeline fills `negatives` from
the first dual-encoder's top-k, as RocketQA samples the cross-encoder's negatives from the
retriever's top results (paper: 1:1 from top-100 on NQ, 1:4 from top-1000 on MS MARCO). An
example with too few negatives is topped up with random corpus passages that are not its
positives (so an export without negatives still trains).

Loss (`CrossTrainConfig.loss`):
- "pointwise" (default): binary cross-entropy on each pair's logit, as the paper's cross-encoder
  is a binary classifier;
- "listwise": a softmax over each positive and its n negatives, cross-entropy on the positive
  (the localised contrastive estimation of Gao et al., ECIR 2021, and RocketQAv2's listwise
  training). It only asks the positive to outscore its own negatives, so the logit's offset is
  free; the Platt scaling below still turns logits into the probabilities the denoising
  thresholds (0.1 / 0.9) compare with.

Calibration: `calibration_fraction` of the questions (seeded) are held out of training; after
training their pairs' logits fit p = sigmoid(scale * logit + bias) (`CrossEncoder.calibrate`).
`TrainResult.extra["heldout"]` holds accuracy (p >= 0.5), ROC AUC and Brier score before and after
calibration, and the same numbers go into `model.config.provenance` with the data counts.

Paper numbers: ERNIE-large cross-encoder, learning rate 1e-5, batch 64 pairs x 8 GPUs, 2 epochs,
max length 384. For the 6-layer MiniLM here 2e-5 with batch 16 is the default.

Runs in one process, or data-parallel under torch.distributed (each rank a shard of every batch,
gradients averaged); calibration is computed identically on every rank.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from engine.batching import _split
from engine.cross_encoder import CrossEncoder
from engine.data import Corpus
from engine.distributed import all_reduce_gradients, all_reduce_mean, broadcast_parameters, world
from engine.examples import TrainExample, check_examples
from engine.metrics import has_answer
from engine.train_dual import TrainResult, _autocast, linear_schedule, make_optimizer

log = logging.getLogger(__name__)

POOL_BATCHES = 50  # batches per length-sorting pool


@dataclass(frozen=True)
class CrossTrainConfig:
    epochs: int = 1
    batch_size: int = 16  # pairs per step (paper: 64 per GPU x 8 GPUs for ERNIE-large)
    learning_rate: float = 2e-5  # paper: 1e-5 for the ERNIE-large cross-encoder
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # negatives per labelled positive, from TrainExample.negatives (paper: 1 on NQ from top-100,
    # 4 on MS MARCO from top-1000; the pipeline samples them from the first retriever's top-k)
    negatives_per_positive: int = 4
    calibration_fraction: float = 0.1  # held-out questions for Platt scaling (0 = no calibration)
    max_steps: int = 0  # >0 caps the number of optimiser steps
    seed: int = 13
    num_threads: int = 0
    mixed_precision: bool = False  # bf16 autocast, CUDA only
    max_grad_norm: float = 1.0  # 0 = off
    length_bucketing: bool = True
    # "pointwise" (binary cross-entropy per pair) | "listwise" (softmax over a positive and its
    # negatives_per_positive negatives; batch_size is then rounded down to whole groups)
    loss: str = "pointwise"


@dataclass(frozen=True)
class Pair:
    question: str
    passage_id: str
    label: float  # 1.0 relevant, 0.0 not


@dataclass(frozen=True)
class ClassifierMetrics:
    pairs: int
    positives: int
    accuracy: float  # p >= 0.5
    auc: float  # ROC AUC (probability that a random positive outscores a random negative)
    brier: float  # mean squared error of the probability
    log_loss: float


def split_heldout(examples: Sequence[TrainExample], fraction: float, seed: int) -> tuple[list, list]:
    """(training examples, held-out examples), held-out = round(fraction * n) questions, at least 1
    when fraction > 0 and there are >= 2 questions."""
    n = len(examples)
    k = int(round(fraction * n)) if fraction > 0 else 0
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    else:
        k = 0
    held = set(np.random.default_rng([seed, 7]).permutation(n)[:k].tolist())
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def sample_negatives(
    examples: Sequence[TrainExample],
    ranked_ids: Sequence[Sequence[str]],
    corpus: Corpus,
    rng: random.Random,
    top_negatives: int,
    random_negatives: int = 0,
    answers: dict[str, Sequence[str]] | None = None,
) -> tuple[list[TrainExample], int]:
    """Negatives for cross-encoder training, per example and per labelled positive: `top_negatives`
    drawn from the retriever's ranking (`ranked_ids`, positives skipped; with `answers`, passages
    containing one of the question's answer strings are skipped too: likely unlabeled positives),
    then `random_negatives` drawn from the whole corpus. Returns the examples and how many ranked
    passages were skipped for containing an answer."""
    answers = answers or {}
    ids = corpus.ids
    out, excluded = [], 0
    for ex, ranking in zip(examples, ranked_ids, strict=True):
        positives = set(ex.positives)
        pool, skipped = _ranked_pool(ranking, positives, corpus, answers.get(ex.question_id))
        excluded += skipped
        negatives = rng.sample(pool, min(len(pool), top_negatives * len(positives)))
        want = len(negatives) + random_negatives * len(positives)
        if want > len(negatives) and len(ids) <= len(positives) + want:
            raise ValueError(f"the corpus has too few passages ({len(ids)}) for {want} negatives per question")
        taken = set(negatives)
        while len(negatives) < want:
            pid = ids[rng.randrange(len(ids))]
            if pid not in positives and pid not in taken:
                negatives.append(pid)
                taken.add(pid)
        out.append(replace(ex, negatives=tuple(negatives)))
    return out, excluded


def _ranked_pool(
    ranking: Sequence[str], skip: set[str], corpus: Corpus, answers: Sequence[str] | None
) -> tuple[list[str], int]:
    """A ranking's passages that may be drawn as negatives: not in `skip` (the positives, and any
    negatives already drawn) and, with `answers`, not containing one of them. Returns the pool and
    how many passages were left out for containing an answer."""
    pool = [pid for pid in ranking if pid not in skip]
    if not answers:
        return pool, 0
    kept = [pid for pid in pool if not has_answer(corpus[pid].text, answers)]
    return kept, len(pool) - len(kept)


def add_ranked_negatives(
    examples: Sequence[TrainExample],
    ranked_ids: Sequence[Sequence[str]],
    corpus: Corpus,
    rng: random.Random,
    per_positive: int,
    answers: dict[str, Sequence[str]] | None = None,
) -> tuple[list[TrainExample], int]:
    """`per_positive` more negatives per labelled positive, drawn at random from a second ranking
    (step 2 uses BM25's top-k, the other half of the hybrid head the cross-encoder re-ranks),
    appended to each example's negatives. Positives and negatives the example already has are
    never drawn; with `answers`, neither are passages containing one of the question's answer
    strings. A ranking with too few candidates gives fewer (never random ones). Returns the examples
    and how many ranked passages were skipped for containing an answer."""
    if per_positive < 0:
        raise ValueError(f"negatives per positive must be >= 0, got {per_positive}")
    answers = answers or {}
    out, excluded = [], 0
    for ex, ranking in zip(examples, ranked_ids, strict=True):
        pool, skipped = _ranked_pool(ranking, {*ex.positives, *ex.negatives}, corpus, answers.get(ex.question_id))
        excluded += skipped
        extra = rng.sample(pool, min(len(pool), per_positive * len(ex.positives)))
        out.append(replace(ex, negatives=(*ex.negatives, *extra)))
    return out, excluded


def sample_pairs(
    examples: Sequence[TrainExample], corpus: Corpus, negatives_per_positive: int, rng: np.random.Generator
) -> list[Pair]:
    """Each positive as a 1 and negatives_per_positive sampled negatives as 0s, per example."""
    pairs: list[Pair] = []
    all_ids = corpus.ids
    for ex in examples:
        positives = set(ex.positives)
        want = negatives_per_positive * len(ex.positives)
        pool = [pid for pid in dict.fromkeys(ex.negatives) if pid not in positives]
        take = [pool[i] for i in rng.choice(len(pool), size=min(want, len(pool)), replace=False)] if pool else []
        chosen = set(take)
        tries = 0
        while len(take) < want and tries < 20 * want and len(all_ids) > len(positives) + len(chosen):
            pid = all_ids[int(rng.integers(len(all_ids)))]  # random fill
            tries += 1
            if pid not in positives and pid not in chosen:
                take.append(pid)
                chosen.add(pid)
        pairs.extend(Pair(ex.question, pid, 1.0) for pid in ex.positives)
        pairs.extend(Pair(ex.question, pid, 0.0) for pid in take)
    return pairs


def pair_groups(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """`sample_pairs`'s output cut into listwise groups: each positive followed by its share of the
    question's negatives (a question with p positives and p * n negatives gives p groups of 1 + n;
    when the negatives do not divide evenly, the remainder is left out)."""
    groups: list[list[Pair]] = []
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j].question == pairs[i].question:
            j += 1
        block = pairs[i:j]
        pos = [p for p in block if p.label > 0.5]
        neg = [p for p in block if p.label <= 0.5]
        if not pos:
            raise ValueError(f"listwise loss: question {block[0].question!r} has no positive pair")
        share = len(neg) // len(pos)
        for k, p in enumerate(pos):
            groups.append([p, *neg[k * share : (k + 1) * share]])
        i = j
    return groups


def listwise_loss(logits: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Mean over groups of -log softmax(group logits)[0]; `logits` (sum(sizes),) holds the groups one
    after another, each with its positive first."""
    out, start = [], 0
    for n in sizes:
        group = logits[start : start + n]
        out.append(torch.logsumexp(group, 0) - group[0])
        start += n
    return torch.stack(out).mean()


def _batches(pairs: list, corpus: Corpus, batch_size: int, rng: np.random.Generator, bucket: bool) -> list:
    """Shuffled batches of `batch_size` items (pairs, or listwise groups of pairs), length-bucketed
    within pools of POOL_BATCHES batches when `bucket`."""

    def length(item) -> int:
        group = item if isinstance(item, list) else [item]
        return sum(len(p.question) + min(len(corpus[p.passage_id].full_text), 1200) for p in group) // len(group)

    order = rng.permutation(len(pairs))
    if bucket:
        pool = batch_size * POOL_BATCHES
        out = []
        for s in range(0, len(order), pool):
            part = order[s : s + pool]
            keys = [length(pairs[i]) for i in part]
            out.extend(part[j] for j in sorted(range(len(part)), key=keys.__getitem__))
        order = np.asarray(out, dtype=np.int64)
    groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if bucket:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return [[pairs[i] for i in g] for g in groups]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC from average ranks (ties count as half); nan when a class is missing."""
    scores, pos = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(order):  # average 1-based rank over each run of tied scores
        end = start
        while end + 1 < len(order) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classifier_metrics(probs: np.ndarray, labels: np.ndarray) -> ClassifierMetrics:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return ClassifierMetrics(
        pairs=len(y),
        positives=int(y.sum()),
        accuracy=float(((p >= 0.5) == (y > 0.5)).mean()) if len(y) else float("nan"),
        auc=roc_auc(p, y),
        brier=float(((p - y) ** 2).mean()) if len(y) else float("nan"),
        log_loss=float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan"),
    )


def train_cross_encoder(
    model: CrossEncoder,
    examples: list[TrainExample],
    corpus: Corpus,
    config: CrossTrainConfig,
    progress: Callable[[float, str], None] | None = None,
    train_only: Sequence[TrainExample] = (),
) -> TrainResult:
    """Train, calibrate on held-out questions, mark trained. `model` is changed in place.
    `train_only` examples (e.g. inverse-cloze pseudo-queries) are trained on but never held out, so
    the held-out metrics and the calibration stay those of real questions."""
    if not examples:
        raise ValueError("no training examples: the cross-encoder needs questions with positives")
    check_examples(examples, corpus)
    check_examples(train_only, corpus)
    if config.loss not in ("pointwise", "listwise"):
        raise ValueError(f"unknown cross-encoder loss {config.loss!r} (use 'pointwise' or 'listwise')")
    listwise = config.loss == "listwise"
    threads_before = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    w = world()
    torch.manual_seed(config.seed + w.rank)
    broadcast_parameters(model)
    train_ex, held_ex = split_heldout(examples, config.calibration_fraction, config.seed)
    train_ex += list(train_only)
    rng = np.random.default_rng([config.seed, 1])
    epoch_pairs = [sample_pairs(train_ex, corpus, config.negatives_per_positive, rng) for _ in range(config.epochs)]
    if listwise:  # a batch is whole groups: batch_size pairs rounded down to groups of 1 + n
        per_batch = max(1, config.batch_size // (1 + config.negatives_per_positive))
        epoch_batches = [_batches(pair_groups(p), corpus, per_batch, rng, config.length_bucketing) for p in epoch_pairs]
    else:
        epoch_batches = [_batches(p, corpus, config.batch_size, rng, config.length_bucketing) for p in epoch_pairs]
    total = sum(len(b) for b in epoch_batches)
    if config.max_steps > 0:
        total = min(total, config.max_steps)
    if total == 0:
        raise ValueError("no training pairs after holding out calibration questions")
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    scheduler = linear_schedule(optimizer, total, config.warmup_ratio)
    params = [p for p in model.parameters() if p.requires_grad]
    if w.is_main:
        log.info(
            "training cross-encoder (%s): %d questions (%d held out) + %d train-only, %d pairs/epoch, %d steps of %d %s",
            config.loss, len(train_ex) - len(train_only), len(held_ex), len(train_only), len(epoch_pairs[0]), total,
            len(epoch_batches[0][0]), "groups" if listwise else "pairs",
        )  # fmt: skip

    was_training = model.training
    model.train()
    losses: list[float] = []
    seen = 0
    step = 0
    start = time.perf_counter()
    for batches in epoch_batches:
        for batch in batches:
            if step >= total:
                break
            optimizer.zero_grad(set_to_none=True)
            mine = [batch[i] for i in _split(len(batch), w.rank, w.size)]  # pairs, or groups when listwise
            loss = torch.zeros((), device=model.device)
            if mine:
                flat = [p for g in mine for p in g] if listwise else mine
                with _autocast(config.mixed_precision, model.device):
                    logits = model([p.question for p in flat], [corpus[p.passage_id] for p in flat]).float()
                if listwise:
                    local = listwise_loss(logits, [len(g) for g in mine])
                else:
                    labels = torch.tensor([p.label for p in flat], device=logits.device)
                    local = F.binary_cross_entropy_with_logits(logits, labels)
                # local mean weighted by the shard's share of the batch: summing over ranks = batch mean
                loss = local * (len(mine) / len(batch))
                loss.backward()
            all_reduce_gradients(params, op="sum")
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += sum(len(g) for g in batch) if listwise else len(batch)
            value = all_reduce_mean(loss) * w.size
            losses.append(value)
            if not math.isfinite(value):
                raise FloatingPointError(f"cross-encoder loss is {value} at step {step}")
            if w.is_main:
                if step % 10 == 0 or step == total:
                    log.info(
                        "step %d/%d  loss %.4f  %.1f pairs/s", step, total, value, seen / (time.perf_counter() - start)
                    )
                if progress is not None:
                    progress(step / total, f"cross-encoder step {step}/{total}, loss {value:.3f}")
    seconds = time.perf_counter() - start
    model.train(was_training)

    questions_trained = len(train_ex) - len(train_only)  # real questions; train_only counted apart
    extra: dict = {"train_questions": questions_trained, "heldout_questions": len(held_ex), "world_size": w.size}
    if train_only:
        extra["train_only_examples"] = len(train_only)
    held_pairs = sample_pairs(held_ex, corpus, config.negatives_per_positive, np.random.default_rng([config.seed, 2]))
    labels = np.array([p.label for p in held_pairs])
    if len(held_pairs) and 0 < labels.sum() < len(labels):
        logits = model.logits([p.question for p in held_pairs], [corpus[p.passage_id] for p in held_pairs])
        before = classifier_metrics(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), labels)
        model.calibrate(logits, labels)
        after = classifier_metrics(model.probability(logits), labels)
        extra["heldout"] = {"before_calibration": asdict(before), "after_calibration": asdict(after)}
        if w.is_main:
            log.info(
                "held-out (%d pairs): AUC %.3f, accuracy %.3f -> %.3f, Brier %.4f -> %.4f after calibration",
                len(labels), after.auc, before.accuracy, after.accuracy, before.brier, after.brier,
            )  # fmt: skip
    else:
        log.warning("no held-out pairs of both classes: the cross-encoder is NOT calibrated (scale 1, bias 0)")
        extra["heldout"] = None
    provenance = {
        "trainer": "engine.train_cross",
        "questions": len(examples),
        "train_questions": questions_trained,
        "heldout_questions": len(held_ex),
        "train_only_examples": len(train_only),
        "train_pairs_per_epoch": len(epoch_pairs[0]),
        "steps": step,
        "final_loss": losses[-1],
        "calibration": {"scale": model.config.scale, "bias": model.config.bias},
        "heldout": extra["heldout"],
        "config": asdict(config),
    }
    model.config = replace(model.config, trained=True, provenance=provenance)
    extra["config"] = asdict(config)
    torch.set_num_threads(threads_before)
    return TrainResult(
        steps=step,
        examples_seen=seen,
        seconds=seconds,
        losses=losses,
        examples_per_second=seen / seconds if seconds > 0 else 0.0,
        extra=extra,
    )
