"""The RocketQA ablation reproduced on a data directory: one table (Markdown + JSON) and one plot (PNG).

Rows (evaluated on the test split; thresholds fixed to the paper's values or chosen on dev, never on test):
- reference: BM25; the untrained MiniLM;
- in-batch negatives (M_D0 of the pipeline run, one process);
- cross-batch negatives (`torchrun --nproc_per_node N -m engine train-dual`, each process holding
  the in-batch row's batch, so every question sees N times as many passages);
- optionally (`large_batch`), in-batch negatives with a larger batch on one process by GradCache
  (the same gradients as one step over the whole batch, in bounded memory);
- optionally (`inverse_cloze`), M_D0 trained on the labelled questions plus inverse-cloze
  pseudo-queries from the training articles' passages (engine.inverse_cloze; not in the paper);
- hard negatives without denoising (step 3 with `denoise=False`, from the same M_D0);
- with denoising (M_D1), with augmentation (M_D2);
- reference: M_D2 + cross-encoder re-ranking of the top-`rerank_depth` (optionally on a seeded
  subset of the test questions, with M_D2 on the same subset beside it, to bound CPU time), and
  the same head ordered by `logit + w * M_D2 inner product` and by `logit + w * inner product +
  v * BM25 score`, w and v chosen on the dev split (`engine.fusion.choose_rerank_weight`, or with
  `rerank_fit="listwise"` fitted by `engine.fusion.fit_rerank_weights`; every dev question is scored
  once for it); then the hybrid first stage (RRF of M_D2 and BM25) and its
  head re-ranked with both shares. Each (question, passage) pair goes through the cross-encoder once.

Trained rows are compared as the paper compares them by a paired per-question difference of MRR@10
with a 95% interval; an interval that contains 0 is reported as "within noise". With several seeds
the table shows the mean and ± half the range, the differences average each question over the seeds
and list each seed's, and seeds that differ in sign are reported as such.

Layout of `OUTPUT/`: `runs/rocketqa-seedS/` (a pipeline run), `runs/undenoised-seedS/`,
`runs/cross-batch-seedS/`, `runs/large-batch-seedS/`, `runs/inverse-cloze-seedS/`, `ablation.json`, `ablation.md`, `ablation.png`, `threshold_sweep.json`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.config import PipelineConfig, preset, with_base_model, with_step_overrides
from engine.cross_encoder import CrossEncoder
from engine.data import Dataset, Question
from engine.denoise import Ranking, retrieve, score
from engine.dual_encoder import DualEncoder
from engine.fusion import (
    RerankCandidates,
    WeightChoice,
    choose_or_fit,
    rerank_order,
    weight_table,
)
from engine.metrics import EvalResult, evaluate_rankings, has_answer, paired_interval, rr10
from engine.pipeline import STEP_DIRS, dense_index, open_run, run_pipeline
from engine.sparse import BM25Index

log = logging.getLogger(__name__)

# names of the re-ranking rows (the depth goes after ROW_RERANK)
ROW_RERANK = "M_D2 + cross-encoder"
ROW_DENSE_SHARE = "+ w x dense score (w from dev)"
ROW_BM25_SHARE = "+ w x dense + v x BM25 (w, v from dev)"
ROW_HYBRID = "hybrid M_D2 + BM25 (RRF)"

METRICS = ("MRR@10", "R@1", "R@5", "R@20", "R@100", "Acc@5", "Acc@20")


@dataclass(frozen=True)
class AblationConfig:
    preset: str = "cpu"
    seeds: tuple[int, ...] = (13,)
    rerank_depth: int = 20  # M_D2 + cross-encoder re-ranks the top-20
    rerank_max_questions: int = 0  # >0: the re-ranking row uses a seeded subset of test questions (CPU time)
    # a second re-ranking row: logit + w * M_D2's score, w chosen on the dev split (engine.fusion)
    rerank_weight_from_dev: bool = True
    rerank_onnx: bool = False  # score the re-ranking rows with the fp32 ONNX Runtime copy (same logits, faster on CPUs)
    # two more rows with a BM25 share (logit + w * dense + v * BM25, w and v chosen on dev): on M_D2's
    # top-k, and on the reciprocal-rank fusion of M_D2 and BM25 (a hybrid first stage)
    rerank_bm25: bool = True
    # how dev chooses the shares: "grid" (best MRR@10) or "listwise" (engine.fusion.fit_rerank_weights)
    rerank_fit: str = "grid"
    cross_batch_processes: int = 2
    # >0: a row for M_D0 trained with this many questions per batch on one device by GradCache
    # (sub-batches of large_batch_chunk): RocketQA's larger batch without its 8 GPUs
    large_batch: int = 0
    large_batch_chunk: int = 32
    # >0: a row for M_D0 trained also on this many inverse-cloze pseudo-queries per passage of the
    # training articles (one pass over questions and pseudo-queries together)
    inverse_cloze: int = 0
    base_model: str = ""
    threshold_sweep: bool = True  # dev-only check of the thresholds (no retraining)
    neg_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    pos_thresholds: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
    eval_split: str = "test"
    eval_k: int = 100
    cross_max_length: int = 0  # >0: the cross-encoder's input length instead of the preset's
    pos_precision_target: float = 0.0  # >0: step 4's positive threshold chosen on dev (AugmentConfig)
    pos_threshold_grid: tuple[float, ...] = ()  # the thresholds that choice picks from (() = AugmentConfig's)
    cross_loss: str = ""  # "pointwise" | "listwise": step 2's loss instead of the preset's
    passage_max_length: int = 0  # >0: the dual-encoders' passage tokens instead of the preset's (every dense row)


@dataclass(frozen=True)
class AblationRow:
    name: str
    kind: str  # "reference" | "trained"
    metrics: dict[str, float]  # mean over seeds
    spread: dict[str, float] = field(default_factory=dict)  # max - min over seeds (trained rows, >1 seed)
    seconds: float | None = None  # training time (mean over seeds)
    questions: int = 0
    note: str = ""


@dataclass(frozen=True)
class AblationTable:
    rows: list[AblationRow]
    data: str
    split: str
    seeds: tuple[int, ...]
    notes: list[str]

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "split": self.split,
            "seeds": list(self.seeds),
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
        }

    def markdown(self) -> str:
        head = "| row | " + " | ".join(METRICS) + " | train s | note |"
        lines = [
            f"Ablation on `{self.data}`, split `{self.split}`, seeds {list(self.seeds)}",
            "",
            head,
            "|" + "---|" * (len(METRICS) + 3),
        ]
        for r in self.rows:
            cells = []
            for m in METRICS:
                v = r.metrics.get(m)
                cell = "-" if v is None else f"{v:.1f}"
                if r.spread.get(m):
                    cell += f" ±{r.spread[m] / 2:.1f}"
                cells.append(cell)
            secs = "-" if r.seconds is None else f"{r.seconds:.0f}"
            lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {secs} | {r.note} |")
        lines.append("")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


# --- evaluation ---------------------------------------------------------------------------


def _eval(rankings: dict[str, list[str]], ds: Dataset, questions: list[Question], qrels) -> EvalResult:
    answers = {q.id: q.answers for q in questions if q.answers}
    return evaluate_rankings(rankings, {q.id: qrels[q.id] for q in questions}, ds.corpus, answers or None)


def dense_candidates(
    run_dir: Path, model: DualEncoder, ds: Dataset, questions: list[Question], k: int
) -> dict[str, Ranking]:
    """Top-k ids and inner-product scores per question, from the run's cached index."""
    from engine.cache import cached_index

    index = cached_index(model, ds.corpus, root=run_dir / "cache", show_progress=False)
    return dict(zip((q.id for q in questions), retrieve(model, index, questions, k)))


def dense_rankings(
    run_dir: Path, model: DualEncoder, ds: Dataset, questions: list[Question], k: int
) -> dict[str, list[str]]:
    return {qid: r.ids for qid, r in dense_candidates(run_dir, model, ds, questions, k).items()}


def bm25_rankings(
    ds: Dataset, questions: list[Question], k: int, index: BM25Index | None = None
) -> dict[str, list[str]]:
    res = (index or BM25Index.build(ds.corpus)).search([q.text for q in questions], k)
    return {q.id: ids for q, ids in zip(questions, res.ids)}


def rerank_candidates(
    ce: CrossEncoder,
    ds: Dataset,
    questions: list[Question],
    rankings: dict[str, Ranking],
    depth: int,
    bm25: BM25Index | None = None,
    memo: dict[tuple[str, str], float] | None = None,
) -> dict[str, RerankCandidates]:
    """Cross-encoder logits of each question's first-stage top-`depth` (one length-sorted pass),
    with `rankings`' scores as the dense feature and, given an index, BM25 scores. `memo` holds
    logits per (question id, passage id) already computed; new ones are added to it."""
    memo = {} if memo is None else memo
    heads = {q.id: (rankings[q.id].ids[:depth], rankings[q.id].scores[:depth]) for q in questions}
    todo = list(dict.fromkeys((q.id, pid) for q in questions for pid in heads[q.id][0] if (q.id, pid) not in memo))
    if todo:
        text = {q.id: q.text for q in questions}
        logits = ce.logits([text[qid] for qid, _ in todo], [ds.corpus[pid] for _, pid in todo]).tolist()
        memo.update(zip(todo, logits))
    lexical = (
        dict(
            zip(
                (q.id for q in questions),
                bm25.score_passages([q.text for q in questions], [heads[q.id][0] for q in questions]),
            )
        )
        if bm25 is not None
        else {}
    )
    return {
        q.id: RerankCandidates(
            tuple(ids), tuple(scores), tuple(memo[(q.id, pid)] for pid in ids), tuple(lexical.get(q.id, ()))
        )
        for q, (ids, scores) in ((q, heads[q.id]) for q in questions)
    }


def hybrid_candidates(
    run_dir: Path, model: DualEncoder, ds: Dataset, questions: list[Question], k: int, bm25: BM25Index
) -> dict[str, Ranking]:
    """Reciprocal-rank fusion of the dual-encoder's and BM25's top-k (engine.fusion, c = 60, equal
    weights), in fused order, each passage with its dual-encoder inner product as the score (also
    for passages only BM25 found), so that re-ranking sees the same dense feature as on M_D2's list."""
    from engine.cache import cached_embeddings
    from engine.fusion import reciprocal_rank_fusion

    dense = dense_candidates(run_dir, model, ds, questions, k)
    lexical = bm25.search([q.text for q in questions], k)
    vectors = cached_embeddings(model, ds.corpus, root=run_dir / "cache", show_progress=False)
    row = {pid: i for i, pid in enumerate(ds.corpus.ids)}
    qvecs = model.encode_queries([q.text for q in questions])
    out = {}
    for q, qv, b_ids in zip(questions, qvecs, lexical.ids):
        ids = [pid for pid, _ in reciprocal_rank_fusion([dense[q.id].ids, b_ids], [1.0, 1.0])][:k]
        out[q.id] = Ranking(ids, (vectors[[row[pid] for pid in ids]] @ qv).tolist())
    return out


def reranked(
    rankings: dict[str, Ranking],
    candidates: dict[str, RerankCandidates],
    weight: float = 0.0,
    bm25_weight: float = 0.0,
) -> dict[str, list[str]]:
    """Each question's head re-ordered by logit + weight * dense score + bm25_weight * BM25 score;
    the tail keeps its order."""
    out = {}
    for qid, c in candidates.items():
        order = rerank_order(c.ce_logits, c.dense, weight, c.bm25, bm25_weight)
        out[qid] = [c.ids[i] for i in order] + rankings[qid].ids[len(c.ids) :]
    return out


def rerank(
    ce: CrossEncoder,
    ds: Dataset,
    questions: list[Question],
    rankings: dict[str, list[str]],
    depth: int,
    memo: dict[tuple[str, str], float] | None = None,
) -> dict[str, list[str]]:
    """Each question's top-`depth` ids re-ordered by the cross-encoder alone (`memo` as in
    `rerank_candidates`)."""
    as_rankings = {q.id: Ranking(list(rankings[q.id]), [0.0] * len(rankings[q.id])) for q in questions}
    return reranked(as_rankings, rerank_candidates(ce, ds, questions, as_rankings, depth, memo=memo))


def dev_candidates(
    run_dir: Path,
    m2: DualEncoder,
    ce: CrossEncoder,
    ds: Dataset,
    dev_split: str,
    ab: AblationConfig,
    bm25: BM25Index | None = None,
    hybrid: bool = False,
    memo: dict[tuple[str, str], float] | None = None,
) -> tuple[dict[str, RerankCandidates], dict]:
    """Every dev question's top-`rerank_depth` (M_D2's, or with `hybrid` the RRF of M_D2 and BM25)
    with its re-ranking features, and the dev qrels."""
    questions, qrels = ds.split(dev_split)
    if hybrid:
        if bm25 is None:
            raise ValueError("a hybrid first stage needs a BM25 index")
        first = hybrid_candidates(run_dir, m2, ds, questions, ab.eval_k, bm25)
    else:
        first = dense_candidates(run_dir, m2, ds, questions, ab.rerank_depth)
    return rerank_candidates(ce, ds, questions, first, ab.rerank_depth, bm25, memo), qrels


def rerank_weight_on_dev(
    run_dir: Path,
    m2: DualEncoder,
    ce: CrossEncoder,
    ds: Dataset,
    dev_split: str,
    ab: AblationConfig,
    bm25: BM25Index | None = None,
    hybrid: bool = False,
    memo: dict[tuple[str, str], float] | None = None,
) -> WeightChoice:
    """The re-ranking weights chosen on `dev_candidates` (by `ab.rerank_fit`): the dense share
    alone, or with a BM25 index the dense and BM25 shares together."""
    cand, qrels = dev_candidates(run_dir, m2, ce, ds, dev_split, ab, bm25, hybrid, memo)
    return choose_or_fit(cand, qrels, ab.rerank_fit, dense=True, bm25=bm25 is not None)


# --- the runs -----------------------------------------------------------------------------


def with_seed(config: PipelineConfig, seed: int) -> PipelineConfig:
    return replace(
        config,
        step1=replace(config.step1, seed=seed),
        ce_sampling=replace(config.ce_sampling, seed=seed),
        step2=replace(config.step2, seed=seed),
        denoise=replace(config.denoise, seed=seed),
        step3=replace(config.step3, seed=seed),
        augment=replace(config.augment, seed=seed),
        step4=replace(config.step4, seed=seed),
    )


def _train_seconds(run_dir: Path, step: int) -> float | None:
    m = run_dir / STEP_DIRS[step] / "metrics.json"
    return json.loads(m.read_text()).get("train", {}).get("seconds") if m.is_file() else None


def undenoised_run(data: str, ds: Dataset, main: Path, target: Path, config: PipelineConfig) -> Path:
    """Step 3 without denoising, from the main run's M_D0 (its step 1 directory is copied, not retrained)."""
    cfg = replace(config, denoise=replace(config.denoise, denoise=False))
    run = open_run(data, target, cfg, dataset=ds)
    if not run.done(1):
        shutil.copytree(main / STEP_DIRS[1], target / STEP_DIRS[1], dirs_exist_ok=True)
        if (main / "cache").is_dir():
            shutil.copytree(main / "cache", target / "cache", dirs_exist_ok=True)
    run_pipeline(run, [3])
    return target


def cross_batch_run(data: str, target: Path, config: PipelineConfig, processes: int) -> Path:
    """M_D0 trained with `processes` torchrun processes (gloo on CPU), each holding the in-batch row's batch."""
    return train_dual_run(data, target, config, processes=processes, what="cross-batch")


def large_batch_run(data: str, target: Path, config: PipelineConfig, batch_size: int, chunk: int) -> Path:
    """M_D0 trained in one process with a global batch of `batch_size` questions, by GradCache in
    sub-batches of `chunk` (the same gradients as one step over the whole batch, in bounded memory)."""
    return train_dual_run(data, target, config, batch_size=batch_size, grad_cache_chunk=chunk, what="large-batch")


def inverse_cloze_run(data: str, target: Path, config: PipelineConfig, per_passage: int) -> Path:
    """M_D0 with step 1's settings trained on the labelled questions plus `per_passage` inverse-cloze
    pseudo-queries per passage in `config.inverse_cloze.scope` (generated with its seed)."""
    return train_dual_run(data, target, config, inverse_cloze=per_passage, what="inverse-cloze")


def train_dual_run(
    data: str,
    target: Path,
    config: PipelineConfig,
    processes: int = 1,
    batch_size: int = 0,
    grad_cache_chunk: int = 0,
    inverse_cloze: int = 0,
    what: str = "dual-encoder",
) -> Path:
    """M_D0 with step 1's settings, trained by `python -m engine train-dual` in a subprocess (under
    torchrun when processes > 1); `batch_size` 0 = step 1's batch per process; `inverse_cloze` > 0
    adds that many pseudo-queries per passage. A finished model is reused."""
    c = config.step1
    batch = batch_size or c.batch_size * processes
    if (target / "model" / "dual_encoder.json").is_file() and (target / "metrics.json").is_file():
        done = json.loads((target / "metrics.json").read_text())
        wanted = {"batch_size": batch, "grad_cache_chunk": grad_cache_chunk, "seed": c.seed, "epochs": c.epochs}
        differ = [f"{k} {done['config'].get(k)} != {v}" for k, v in wanted.items() if done["config"].get(k) != v]
        if done.get("inverse_cloze", 0) != inverse_cloze:
            differ.append(f"inverse_cloze {done.get('inverse_cloze', 0)} != {inverse_cloze}")
        if done.get("world_size", 1) != processes:
            differ.append(f"processes {done.get('world_size', 1)} != {processes}")
        saved = json.loads((target / "model" / "dual_encoder.json").read_text())
        for key in ("query_max_length", "passage_max_length"):
            if saved.get(key) != getattr(config.dual, key):
                differ.append(f"{key} {saved.get(key)} != {getattr(config.dual, key)}")
        if differ:
            raise RuntimeError(
                f"{target} holds a {what} model trained with other settings ({', '.join(differ)}): "
                "remove it or use another --output"
            )
        log.info("%s model exists in %s: reused", what, target)
        return target
    threads = max(1, (config.num_threads or os.cpu_count() or 2) // processes)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [
        *(launcher if processes > 1 else [sys.executable]),
        "-m", "engine", "train-dual", "--data", str(data), "--split", config.train_split, "--output", str(target),
        "--model", config.dual.model, "--epochs", str(c.epochs), "--batch-size", str(batch),
        "--lr", str(c.learning_rate), "--hard-negatives", "0", "--temperature", str(c.temperature),
        "--seed", str(c.seed), "--threads", str(threads),
        "--query-max-length", str(config.dual.query_max_length), "--passage-max-length", str(config.dual.passage_max_length),
    ]  # fmt: skip
    if grad_cache_chunk:
        cmd += ["--grad-cache-chunk", str(grad_cache_chunk)]
    if inverse_cloze:
        cmd += ["--inverse-cloze", str(inverse_cloze), "--inverse-cloze-scope", config.inverse_cloze.scope]
    if config.freeze_word_embeddings:
        cmd.append("--freeze-word-embeddings")
    if c.max_steps:
        cmd += ["--max-steps", str(c.max_steps)]
    log.info("%s run: %s", what, " ".join(cmd))
    target.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with (target / "train.log").open("w") as logf:
        proc = subprocess.run(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[1]
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} training failed (exit {proc.returncode}); see {target / 'train.log'}")
    return target


# --- threshold check on dev ---------------------------------------------------------------


def threshold_sweep(run_dir: Path, ds: Dataset, config: PipelineConfig, ab: AblationConfig) -> dict:
    """Dev only: how the negative / positive thresholds split M_D0's top-k as judged by M_C.

    For each negative threshold: non-gold passages kept as hard negatives, and the share of kept /
    dropped ones that contain an answer (kept with an answer = false negatives trained on). For each
    positive threshold: questions whose best-scored passage passes, and its precision (gold / answer).
    """
    from engine.pipeline import Run

    questions, qrels = ds.split(config.dev_split)
    m0 = DualEncoder.load(run_dir / STEP_DIRS[1] / "model")
    ce = CrossEncoder.load(run_dir / STEP_DIRS[2] / "model")
    run = Run(run_dir, config, ds, "")
    k = config.denoise.top_k
    rankings = retrieve(m0, dense_index(run, m0), questions, k)
    pairs = [(q.text, pid) for q, r in zip(questions, rankings) for pid in r.ids]
    probs = iter(score(ce, pairs, ds.corpus).tolist())
    rows = []  # (qid, pid, prob, gold, answer)
    for q, r in zip(questions, rankings):
        gold = {p for p, g in qrels[q.id].items() if g > 0}
        for pid in r.ids:
            rows.append(
                (q.id, pid, next(probs), pid in gold, bool(q.answers) and has_answer(ds.corpus[pid].text, q.answers))
            )
    neg = []
    non_gold = [x for x in rows if not x[3]]
    for t in ab.neg_thresholds:
        kept = [x for x in non_gold if x[2] < t]
        dropped = [x for x in non_gold if x[2] >= t]
        neg.append(
            {
                "neg_threshold": t,
                "non_gold": len(non_gold),
                "kept": len(kept),
                "kept_with_answer": round(sum(x[4] for x in kept) / max(1, len(kept)), 4),
                "dropped_with_answer": round(sum(x[4] for x in dropped) / max(1, len(dropped)), 4),
            }
        )
    best: dict[str, tuple] = {}
    for x in rows:
        if x[0] not in best or x[2] > best[x[0]][2]:
            best[x[0]] = x
    pos = []
    for t in ab.pos_thresholds:
        chosen = [x for x in best.values() if x[2] > t]
        pos.append(
            {
                "pos_threshold": t,
                "questions": len(best),
                "pseudo_positives": len(chosen),
                "precision_gold": round(sum(x[3] for x in chosen) / max(1, len(chosen)), 4),
                "precision_answer": round(sum(x[4] for x in chosen) / max(1, len(chosen)), 4),
            }
        )
    return {"split": config.dev_split, "retriever": "M_D0", "top_k": k, "negative": neg, "positive": pos}


# --- driver -------------------------------------------------------------------------------


def base_config(ab: AblationConfig) -> PipelineConfig:
    """The pipeline config every row shares (before its seed): the preset with the ablation's overrides."""
    base = preset(ab.preset)
    if ab.base_model:
        base = with_base_model(base, ab.base_model)
    return with_step_overrides(
        base,
        ab.cross_max_length,
        None,
        ab.pos_precision_target,
        ab.cross_loss,
        ab.pos_threshold_grid,
        passage_max_length=ab.passage_max_length,
    )


def run_ablation(
    data: str | Path, output: str | Path, ab: AblationConfig, reuse_run: str | Path | None = None
) -> AblationTable:
    """Run (or resume) every row's training, evaluate all rows on `ab.eval_split`, write table + plot."""
    from engine.readers import load_any

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_any(str(data))
    questions, qrels = ds.split(ab.eval_split)
    qids = [q.id for q in questions]
    base = base_config(ab)
    if ab.pos_precision_target:
        positive = (
            f"pseudo-positive threshold chosen on dev (the lowest of {list(base.augment.pos_threshold_grid)} whose dev "
            f"pseudo-positives reach gold precision {ab.pos_precision_target}; step 4's metrics.json holds the choice)"
        )
    else:
        positive = f"pseudo-positive > {base.augment.pos_threshold}"
    notes = [
        f"thresholds set before any test evaluation: negative < {base.denoise.neg_threshold}, {positive}; "
        "the dev-only check is in threshold_sweep.json",
        f"cross-encoder input: {base.cross.max_length} tokens; dual-encoder passages: "
        f"{base.dual.passage_max_length} tokens (every dense row, the untrained MiniLM's included)",
        f"preset {ab.preset}: {base.step1.epochs} epoch(s), batch {base.step1.batch_size}, lr {base.step1.learning_rate}, "
        f"denoise top-{base.denoise.top_k}, augment top-{base.augment.top_k}",
    ]
    results: dict[str, list[EvalResult]] = {}
    seconds: dict[str, list[float]] = {}
    timing: dict[str, float] = {}

    def add(name: str, result: EvalResult, secs: float | None = None) -> None:
        results.setdefault(name, []).append(result)
        if secs is not None:
            seconds.setdefault(name, []).append(secs)
        log.info("%s: %s", name, result.summary())

    t0 = time.perf_counter()
    bm25_index = BM25Index.build(ds.corpus)
    add("BM25", _eval(bm25_rankings(ds, questions, ab.eval_k, bm25_index), ds, questions, qrels))
    untrained = DualEncoder.build(base.dual)
    add("MiniLM, untrained", _eval(dense_rankings(out, untrained, ds, questions, ab.eval_k), ds, questions, qrels))
    timing["references"] = time.perf_counter() - t0

    rerank_note = ""
    subset_rows: set[str] = set()  # rows evaluated on the re-ranking subset
    for seed in ab.seeds:
        cfg = with_seed(base, seed)
        main = Path(reuse_run) if (reuse_run and seed == ab.seeds[0]) else out / "runs" / f"rocketqa-seed{seed}"
        t0 = time.perf_counter()
        run_pipeline(open_run(data, main, cfg, dataset=ds))
        timing[f"pipeline seed {seed}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cb = cross_batch_run(str(data), out / "runs" / f"cross-batch-seed{seed}", cfg, ab.cross_batch_processes)
        timing[f"cross-batch seed {seed}"] = time.perf_counter() - t0
        if ab.large_batch:
            t0 = time.perf_counter()
            lb = large_batch_run(
                str(data), out / "runs" / f"large-batch-seed{seed}", cfg, ab.large_batch, ab.large_batch_chunk
            )
            timing[f"large batch seed {seed}"] = time.perf_counter() - t0
        if ab.inverse_cloze:
            t0 = time.perf_counter()
            ic = inverse_cloze_run(str(data), out / "runs" / f"inverse-cloze-seed{seed}", cfg, ab.inverse_cloze)
            timing[f"inverse cloze seed {seed}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        und = undenoised_run(str(data), ds, main, out / "runs" / f"undenoised-seed{seed}", cfg)
        timing[f"undenoised seed {seed}"] = time.perf_counter() - t0

        def dense(run_dir: Path, model_dir: Path) -> EvalResult:
            return _eval(
                dense_rankings(run_dir, DualEncoder.load(model_dir), ds, questions, ab.eval_k), ds, questions, qrels
            )

        add("in-batch negatives (M_D0)", dense(main, main / STEP_DIRS[1] / "model"), _train_seconds(main, 1))
        cb_secs = json.loads((cb / "metrics.json").read_text()).get("train", {}).get("seconds")
        add(f"cross-batch negatives ({ab.cross_batch_processes} processes)", dense(cb, cb / "model"), cb_secs)
        if ab.large_batch:
            lb_secs = json.loads((lb / "metrics.json").read_text()).get("train", {}).get("seconds")
            add(_large_batch_row(ab), dense(lb, lb / "model"), lb_secs)
        if ab.inverse_cloze:
            ic_secs = json.loads((ic / "metrics.json").read_text()).get("train", {}).get("seconds")
            add(_inverse_cloze_row(ab), dense(ic, ic / "model"), ic_secs)
        add("hard negatives, undenoised", dense(und, und / STEP_DIRS[3] / "model"), _train_seconds(und, 3))
        add("hard negatives, denoised (M_D1)", dense(main, main / STEP_DIRS[3] / "model"), _train_seconds(main, 3))
        m2 = DualEncoder.load(main / STEP_DIRS[4] / "model")
        m2_cand = dense_candidates(main, m2, ds, questions, ab.eval_k)
        m2_rank = {qid: r.ids for qid, r in m2_cand.items()}
        add("+ data augmentation (M_D2)", _eval(m2_rank, ds, questions, qrels), _train_seconds(main, 4))
        if ab.rerank_depth > 0:
            t0 = time.perf_counter()
            before = set(results)
            sub = questions
            if 0 < ab.rerank_max_questions < len(questions):
                sub = sorted(random.Random(seed).sample(questions, ab.rerank_max_questions), key=lambda q: q.id)
                rerank_note = f"seeded subset: {len(sub)} of {len(questions)} questions"
                add(f"M_D2 on the re-ranking subset ({len(sub)} q)", _eval(m2_rank, ds, sub, qrels))
            ce = CrossEncoder.load(main / STEP_DIRS[2] / "model")
            if ab.rerank_onnx:
                from engine.quantize import onnx_cross_encoder

                ce = onnx_cross_encoder(ce)  # the same fp32 logits (to float rounding), about 2x faster on a CPU
            memo: dict[tuple[str, str], float] = {}  # each (question, passage) pair is scored once
            depth = ab.rerank_depth
            cand = rerank_candidates(ce, ds, sub, m2_cand, depth, bm25_index if ab.rerank_bm25 else None, memo)
            add(f"{ROW_RERANK} top-{depth}", _eval(reranked(m2_cand, cand), ds, sub, qrels))
            choices = {}
            if ab.rerank_weight_from_dev or ab.rerank_bm25:  # M_D2's dev heads, retrieved and scored once
                lexical = bm25_index if ab.rerank_bm25 else None
                dev_cand, dev_qrels = dev_candidates(main, m2, ce, ds, base.dev_split, ab, lexical, memo=memo)
            if ab.rerank_weight_from_dev:
                choices["dense"] = choose_or_fit(dev_cand, dev_qrels, ab.rerank_fit, dense=True, bm25=False)
                w = choices["dense"].weight
                add(f"{ROW_RERANK} top-{depth}, {ROW_DENSE_SHARE}", _eval(reranked(m2_cand, cand, w), ds, sub, qrels))
            if ab.rerank_bm25:
                choices["dense + BM25"] = c = choose_or_fit(dev_cand, dev_qrels, ab.rerank_fit, dense=True, bm25=True)
                add(
                    f"{ROW_RERANK} top-{depth}, {ROW_BM25_SHARE}",
                    _eval(reranked(m2_cand, cand, c.weight, c.bm25_weight), ds, sub, qrels),
                )
                hyb = hybrid_candidates(main, m2, ds, sub, ab.eval_k, bm25_index)
                on_sub = f" on the re-ranking subset ({len(sub)} q)" if sub is not questions else ""
                add(f"{ROW_HYBRID}{on_sub}", _eval({q: r.ids for q, r in hyb.items()}, ds, sub, qrels))
                hyb_cand = rerank_candidates(ce, ds, sub, hyb, depth, bm25_index, memo)
                choices["hybrid, dense + BM25"] = c = rerank_weight_on_dev(
                    main, m2, ce, ds, base.dev_split, ab, bm25_index, hybrid=True, memo=memo
                )
                add(
                    f"{ROW_HYBRID} + cross-encoder top-{depth}, {ROW_BM25_SHARE}",
                    _eval(reranked(hyb, hyb_cand, c.weight, c.bm25_weight), ds, sub, qrels),
                )
            for what, c in choices.items():
                notes.append(
                    f"seed {seed}: re-ranking weights ({what}): logit + {c.weight:g} x M_D2 inner product"
                    + (f" + {c.bm25_weight:g} x BM25" if what != "dense" else "")
                    + f", chosen on {base.dev_split} ({c.questions} q, {c.method})"
                    + (" at the grid's edge (a larger weight might do better)" if c.on_edge else "")
                    + f"; dev MRR@10 per weight: {weight_table(c)}"
                )
            timing[f"rerank seed {seed}"] = time.perf_counter() - t0
            subset_rows.update(set(results) - before if sub is not questions else ())
        if ab.threshold_sweep and seed == ab.seeds[0]:
            sweep = threshold_sweep(main, ds, cfg, ab)
            (out / "threshold_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")

    trained = {
        "in-batch negatives (M_D0)",
        "hard negatives, undenoised",
        "hard negatives, denoised (M_D1)",
        "+ data augmentation (M_D2)",
    }
    trained.add(f"cross-batch negatives ({ab.cross_batch_processes} processes)")
    if ab.large_batch:
        trained.add(_large_batch_row(ab))
    if ab.inverse_cloze:
        trained.add(_inverse_cloze_row(ab))
    rows = []
    for name, rs in results.items():
        mean = {m: float(np.mean([r.metrics[m] for r in rs])) for m in METRICS if all(m in r.metrics for r in rs)}
        spread = {m: float(np.ptp([r.metrics[m] for r in rs])) for m in mean} if len(rs) > 1 else {}
        secs = float(np.mean(seconds[name])) if seconds.get(name) and None not in seconds[name] else None
        note = rerank_note if name in subset_rows else ""
        rows.append(
            AblationRow(
                name, "trained" if name in trained else "reference", mean, spread, secs, rs[0].num_questions, note
            )
        )
    notes += _noise_notes(results, qids, len(ab.seeds))
    notes += [f"time {k}: {v:.0f} s" for k, v in timing.items()]
    table = AblationTable(rows, str(data), ab.eval_split, tuple(ab.seeds), notes)
    (out / "ablation.json").write_text(json.dumps(table.to_dict(), indent=2) + "\n")
    (out / "ablation.md").write_text(table.markdown())
    plot(table, out / "ablation.png")
    return table


def _large_batch_row(ab: AblationConfig) -> str:
    return f"GradCache, batch {ab.large_batch} on one process (in-batch negatives)"


def _inverse_cloze_row(ab: AblationConfig) -> str:
    return f"M_D0 + inverse-cloze pseudo-queries ({ab.inverse_cloze} per training-article passage)"


def _noise_notes(results: dict[str, list[EvalResult]], qids: list[str], n_seeds: int) -> list[str]:
    """Paired per-question MRR@10 differences for the comparisons the paper makes and for the
    re-ranking rows, 95% interval, over the questions both rows evaluated. With several seeds each
    question's reciprocal rank is averaged over a row's seeds, the difference of each seed is listed,
    and a difference whose seeds do not all agree in sign is "seeds disagree", not better or worse."""
    names = list(results)

    def find(key: str) -> str | None:
        """The first row whose name starts with `key`; "+dense", "+bm25" and "hybrid+" pick the
        re-ranking rows with those shares, and the plain prefix skips them."""
        if key == "hybrid+":
            return next((n for n in names if n.startswith(ROW_HYBRID) and n.endswith(ROW_BM25_SHARE)), None)
        for suffix, share in (("+dense", ROW_DENSE_SHARE), ("+bm25", ROW_BM25_SHARE)):
            if key.endswith(suffix):
                return next((n for n in names if n.startswith(key[: -len(suffix)]) and n.endswith(share)), None)
        return next((n for n in names if n.startswith(key) and ", + " not in n), None)

    pairs = [
        ("cross-batch", "in-batch"),
        ("GradCache", "in-batch"),
        ("M_D0 + inverse-cloze", "in-batch"),
        ("hard negatives, undenoised", "in-batch"),
        ("hard negatives, denoised", "hard negatives, undenoised"),
        ("hard negatives, denoised", "in-batch"),
        ("+ data augmentation", "hard negatives, denoised"),
        ("+ data augmentation", "MiniLM, untrained"),
        ("+ data augmentation", "BM25"),
        (ROW_RERANK, "M_D2 on the re-ranking subset"),
        (ROW_RERANK + "+dense", ROW_RERANK),
        (ROW_RERANK + "+bm25", ROW_RERANK + "+dense"),
        ("hybrid+", ROW_RERANK + "+bm25"),
        ("hybrid+", "BM25"),
    ]
    notes = []
    for b_prefix, a_prefix in pairs:
        a, b = find(a_prefix), find(b_prefix)
        if a is None or b is None:
            continue
        ra, rb = results[a], results[b]
        both = [q for q in qids if all(q in r.per_question for r in ra + rb)]
        # per question, the reciprocal rank averaged over the row's seeds (a reference row has one)
        x = np.mean([rr10(r, both) for r in ra], axis=0)
        y = np.mean([rr10(r, both) for r in rb], axis=0)
        mean, half = paired_interval(x, y)
        verdict = "within noise" if abs(mean) <= half else ("better" if mean > 0 else "worse")
        seeds = max(len(ra), len(rb))
        per_seed = ""
        if seeds > 1:  # seed i of each row (a row with fewer results repeats its last one)
            diffs = [
                100 * float((rr10(rb[min(i, len(rb) - 1)], both) - rr10(ra[min(i, len(ra) - 1)], both)).mean())
                for i in range(seeds)
            ]
            per_seed = f"; per seed {', '.join(f'{v:+.2f}' for v in diffs)}"
            if verdict != "within noise" and not (all(v > 0 for v in diffs) or all(v < 0 for v in diffs)):
                verdict = "seeds disagree"
            what = f"paired over {len(both)} questions, mean of {seeds} seeds, 95%"
        else:
            what = "paired, 95%"
        notes.append(f"'{b}' vs '{a}': MRR@10 {mean:+.2f} ± {half:.2f} ({what}{per_seed}): {verdict}")
    if n_seeds == 1:
        notes.append("one seed: seed-to-seed variation is not measured (run --seeds 3 when time allows)")
    return notes


def plot(table: AblationTable, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in table.rows]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))
    for offset, metric, color in ((-0.2, "MRR@10", "#3b6ea5"), (0.2, "R@1", "#e39b3b")):
        vals = [r.metrics.get(metric, 0.0) for r in table.rows]
        ax.barh(y + offset, vals, height=0.38, label=metric, color=color)
        for yi, v in zip(y + offset, vals):
            ax.text(v + 0.3, yi, f"{v:.1f}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"percent ({table.split} split)")
    ax.set_title(f"RocketQA ablation on {Path(table.data).name}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
