"""The four RocketQA steps as functions over a run directory, resumable after the last finished step.

1. `step1_dual_encoder`  M_D0: dual-encoder with in-batch / cross-batch negatives (train split).
2. `step2_cross_encoder` M_C: cross-encoder on the training positives and negatives sampled at
   random from M_D0's top-k (`config.ce_sampling`).
3. `step3_denoise`       M_D1: M_D0 retrieves the top-k of each training question, M_C scores it,
   `engine.denoise` decides (hard negative iff prob < 0.1), random fill from deeper ranks.
4. `step4_augment`       M_D2: M_D1 retrieves for unlabeled questions, M_C scores, `engine.augment`
   decides (pseudo-positive iff prob > 0.9); trained on labelled (step 3's) + pseudo-labelled data.

Run directory layout (also in docs/PIPELINE.md, "Pipeline run directory"):
```
RUN/config.json          {"config": PipelineConfig, "data": path, "corpus_fingerprint", "corpus_size", "run_id", "created"}
RUN/corpus.jsonl         copy of the corpus (BEIR corpus format): decision records display without the source data
RUN/cache/               passage embeddings + FAISS index per dual-encoder (engine.cache layout)
RUN/step1_dual_encoder/  model/ (DualEncoder.save), config.json, metrics.json, DONE
RUN/step2_cross_encoder/ model/ (CrossEncoder.save), train.jsonl (the CE's training examples), config.json, metrics.json, DONE
RUN/step3_denoise/       decisions.jsonl, train.jsonl, model/, config.json, metrics.json, DONE
RUN/step4_augment/       decisions.jsonl, train.jsonl (labelled + pseudo-labelled), model/, config.json, metrics.json, DONE
```
`decisions.jsonl` and `train.jsonl` follow docs/FORMATS.md. A step whose directory holds `DONE`
is skipped on a rerun; a step without `DONE` is redone from scratch (its directory is emptied
first); `DONE` is written last, atomically. When a step is (re)done, the `DONE` of every later
step is removed, since their inputs changed. A rerun on another corpus (fingerprint differs) or
with another config is refused with `PipelineError`.

metrics.json per step: `dev` (and `test` with eval_test) retrieval metrics of the step's model,
`seconds` per phase, `train` (steps, examples/s, loss at start and end), and step-specific counts
(step 2: the CE's held-out accuracy / AUC / Brier from the trainer; steps 3-4: decisions).
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from engine.augment import PSEUDO_POSITIVE, choose_pos_threshold, pseudo_example
from engine.augment import decide as augment_decide
from engine.config import PipelineConfig
from engine.cross_encoder import CrossEncoder
from engine.data import Corpus, DataError, Dataset, Question
from engine.decisions import DecisionRecord, read_decisions, summarize, write_decisions
from engine.denoise import Candidate, Ranking, denoise_question, retrieve, score, split_ranking
from engine.dual_encoder import DualEncoder
from engine.examples import TrainExample, check_examples, read_examples, write_examples
from engine.index import DenseIndex
from engine.inverse_cloze import InverseClozeConfig, inverse_cloze_examples
from engine.metrics import evaluate_rankings, has_answer

log = logging.getLogger(__name__)

STEP_DIRS = {1: "step1_dual_encoder", 2: "step2_cross_encoder", 3: "step3_denoise", 4: "step4_augment"}
Progress = Callable[[float, str], None]


class PipelineError(RuntimeError):
    """A run cannot proceed (missing step, foreign run directory, no data); the message says why."""


@dataclass(frozen=True)
class StepResult:
    step: int
    name: str
    skipped: bool  # True: found DONE, nothing was run
    seconds: float
    metrics: dict = field(default_factory=dict)


@dataclass
class Run:
    """An opened run directory with its data loaded."""

    directory: Path
    config: PipelineConfig
    dataset: Dataset
    data: str
    eval_test: bool = False
    progress: Progress | None = None

    @property
    def run_id(self) -> str:
        return self.directory.name

    @property
    def corpus(self) -> Corpus:
        return self.dataset.corpus

    def step_dir(self, step: int) -> Path:
        return self.directory / STEP_DIRS[step]

    def done(self, step: int) -> bool:
        return (self.step_dir(step) / "DONE").is_file()

    def report(self, fraction: float, message: str) -> None:
        log.info("%s", message)
        if self.progress:
            self.progress(fraction, message)


# --- opening a run ------------------------------------------------------------------------


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def _normalise(d: dict) -> dict:
    return json.loads(json.dumps(d))  # tuples -> lists, as stored


# config fields added after runs were made, with the value that reproduces what those runs did: a
# run directory whose config.json lacks one reopens as if it held that value
ADDED_FIELDS = {
    ("step2", "loss"): "pointwise",
    ("inverse_cloze",): _normalise(asdict(InverseClozeConfig())),
    ("ce_sampling", "inverse_cloze"): 0,
    ("ce_sampling", "bm25_negatives_per_positive"): 0,
}


def _with_added_fields(stored: dict) -> dict:
    out = json.loads(json.dumps(stored))
    for (*parents, key), value in ADDED_FIELDS.items():
        node = out
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return out


def open_run(
    data: str | Path,
    directory: str | Path,
    config: PipelineConfig,
    dataset: Dataset | None = None,
    eval_test: bool = False,
    progress: Progress | None = None,
) -> Run:
    """Create a run directory, or reopen one after checking corpus and config are the same."""
    if dataset is None:
        from engine.readers import load_any

        dataset = load_any(str(data))
    d = Path(directory)
    fingerprint = dataset.corpus.fingerprint()
    cfg_file = d / "config.json"
    if cfg_file.is_file():
        stored = json.loads(cfg_file.read_text())
        if stored.get("corpus_fingerprint") != fingerprint:
            raise PipelineError(
                f"{d} was made for another corpus (fingerprint {stored.get('corpus_fingerprint')}, "
                f"{stored.get('corpus_size')} passages from {stored.get('data')}); this corpus is {fingerprint} "
                f"({len(dataset.corpus)} passages from {data}). Use a new run directory."
            )
        differences = _diff(_with_added_fields(stored.get("config", {})), _normalise(config.to_dict()))
        if differences:
            raise PipelineError(
                f"{d} was made with another config ({'; '.join(differences[:6])}"
                f"{' ...' if len(differences) > 6 else ''}). Use a new run directory or the same preset/options."
            )
        log.info("resuming run %s", d)
    else:
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "config": config.to_dict(),
            "data": str(data),
            "corpus_fingerprint": fingerprint,
            "corpus_size": len(dataset.corpus),
            "run_id": d.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with (d / "corpus.jsonl.tmp").open("w", encoding="utf-8") as f:
            for p in dataset.corpus:
                f.write(json.dumps({"_id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
        (d / "corpus.jsonl.tmp").replace(d / "corpus.jsonl")
        _write_json(cfg_file, meta)  # written last: a directory with config.json has its corpus copy
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    return Run(d, config, dataset, str(data), eval_test, progress)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


# --- step bookkeeping -----------------------------------------------------------------------


def _begin(run: Run, step: int) -> Path:
    """Empty the step directory and invalidate later steps."""
    d = run.step_dir(step)
    if d.exists():
        log.info("redoing %s from scratch", d.name)
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for later in range(step + 1, 5):
        done = run.step_dir(later) / "DONE"
        if done.is_file():
            log.warning("%s is redone: %s will be redone too", d.name, STEP_DIRS[later])
            done.unlink()
    return d


def _finish(run: Run, step: int, config: dict, metrics: dict) -> None:
    d = run.step_dir(step)
    _write_json(d / "config.json", config)
    _write_json(d / "metrics.json", metrics)
    _write_json(d / "DONE", {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _require(run: Run, step: int, needed: int) -> None:
    if not run.done(needed):
        raise PipelineError(
            f"step {step} needs step {needed} ({STEP_DIRS[needed]}) to be finished first in {run.directory}"
        )


# --- shared helpers -------------------------------------------------------------------------


def labelled_examples(ds: Dataset, split: str) -> list[TrainExample]:
    """One example per question of a split with >= 1 relevant passage; others are skipped with a warning."""
    questions, qrels = ds.split(split)
    out, skipped = [], []
    for q in questions:
        positives = tuple(pid for pid, grade in qrels[q.id].items() if grade > 0)
        if positives:
            out.append(TrainExample(q.id, q.text, positives))
        else:
            skipped.append(q.id)
    if skipped:
        log.warning(
            "split %r: %d questions have no positive passage and are skipped, e.g. %r", split, len(skipped), skipped[0]
        )
    if not out:
        raise PipelineError(f"split {split!r} has no question with a positive passage: nothing to train on")
    check_examples(out, ds.corpus)
    return out


def dense_index(run: Run, model: DualEncoder) -> DenseIndex:
    from engine.cache import cached_index

    return cached_index(model, run.corpus, root=run.directory / "cache", show_progress=False)


def model_version(run: Run, path: Path, model: DualEncoder | CrossEncoder | None) -> str:
    """`<path relative to the run>@<weights fingerprint>`, the version written into decision records."""
    if model is None:
        return "none"
    rel = path.relative_to(run.directory) if path.is_relative_to(run.directory) else path
    if isinstance(model, DualEncoder):
        return f"{run.run_id}/{rel}@{model.fingerprint()}"
    cfg = (path / "config.json").read_bytes() if (path / "config.json").is_file() else b""
    weights = path / "model.safetensors"
    import hashlib

    h = hashlib.sha256(cfg + json.dumps([model.config.scale, model.config.bias]).encode())
    if weights.is_file():
        h.update(str(weights.stat().st_size).encode())
    return f"{run.run_id}/{rel}@{h.hexdigest()[:16]}"


def evaluate_dual(run: Run, model: DualEncoder, index: DenseIndex | None = None) -> dict:
    """Retrieval metrics of a dual-encoder on the dev split (and test with run.eval_test)."""
    index = index or dense_index(run, model)
    splits = [run.config.dev_split] + ([run.config.test_split] if run.eval_test else [])
    out = {}
    for split in splits:
        if split not in run.dataset.qrels:
            log.warning("no %r split: not evaluated", split)
            continue
        questions, qrels = run.dataset.split(split)
        rankings = retrieve(model, index, questions, run.config.eval_k)
        ranked = {q.id: r.ids for q, r in zip(questions, rankings)}
        answers = {q.id: q.answers for q in questions if q.answers}
        result = evaluate_rankings(ranked, qrels, run.corpus, answers or None)
        out[split] = {k: round(v, 2) for k, v in result.metrics.items()}
        log.info("%s: %s", split, result.summary())
    return out


def _train_summary(result) -> dict:
    losses = list(result.losses)
    n = max(1, len(losses) // 10)
    return {
        "steps": result.steps,
        "examples_seen": result.examples_seen,
        "seconds": round(result.seconds, 1),
        "examples_per_second": round(result.examples_per_second, 2),
        "loss_start": round(sum(losses[:n]) / n, 4) if losses else None,
        "loss_end": round(sum(losses[-n:]) / n, 4) if losses else None,
        "extra": result.extra,
    }


def _dual_model(run: Run, init: str, previous: int, loaded: DualEncoder | None = None) -> DualEncoder:
    """The model a step trains: the base model, or the previous step's (`loaded` = already in memory)."""
    if init == "previous":
        return copy.deepcopy(loaded) if loaded is not None else DualEncoder.load(run.step_dir(previous) / "model")
    if init == "base":
        return DualEncoder.build(run.config.dual)
    raise PipelineError(f"init must be 'base' or 'previous', got {init!r}")


def freeze_word_embeddings(model: torch.nn.Module) -> int:
    """Stop training every word-embedding matrix of a model (the CPU lever); returns the frozen count."""
    frozen = 0
    for module in model.modules():
        weight = getattr(module, "word_embeddings", None)
        if isinstance(weight, torch.nn.Embedding) and weight.weight.requires_grad:
            weight.weight.requires_grad_(False)
            frozen += weight.weight.numel()
    return frozen


def _train_dual(run: Run, model: DualEncoder, examples: list[TrainExample], config, step: int) -> dict:
    from engine.train_dual import train_dual_encoder

    if run.config.freeze_word_embeddings:
        freeze_word_embeddings(model)

    def progress(fraction: float, message: str) -> None:
        run.report(fraction, f"step {step}: {message}")

    result = train_dual_encoder(model, examples, run.corpus, config, progress=progress)
    return _train_summary(result)


# --- the four steps -------------------------------------------------------------------------


def step1_dual_encoder(run: Run) -> dict:
    """M_D0: in-batch (one process) or cross-batch (torchrun) negatives, no hard negatives; with
    `inverse_cloze.per_passage` > 0 also inverse-cloze pseudo-queries (engine.inverse_cloze)."""
    d = _begin(run, 1)
    t0 = time.perf_counter()
    examples = labelled_examples(run.dataset, run.config.train_split)
    pseudo = inverse_cloze_examples(run.corpus, examples, run.config.inverse_cloze)
    if pseudo:
        log.info("step 1: %d inverse-cloze pseudo-queries added to %d questions", len(pseudo), len(examples))
    model = DualEncoder.build(run.config.dual)
    train = _train_dual(run, model, examples + pseudo, run.config.step1, 1)
    model.save(d / "model")
    t1 = time.perf_counter()
    metrics = evaluate_dual(run, model)
    seconds = {
        "train": round(t1 - t0, 1),
        "eval": round(time.perf_counter() - t1, 1),
        "total": round(time.perf_counter() - t0, 1),
    }
    out = {
        "step": 1,
        "model": "M_D0",
        "train_questions": len(examples),
        "pseudo_queries": len(pseudo),
        **metrics,
        "train": train,
        "seconds": seconds,
    }
    config = {"dual": asdict(run.config.dual), "train": asdict(run.config.step1)}
    _finish(run, 1, config | {"inverse_cloze": asdict(run.config.inverse_cloze)}, out)
    return out


def step2_cross_encoder(run: Run) -> dict:
    """M_C on (question, positive) and (question, random negative from M_D0's top-k) pairs;
    `ce_sampling.inverse_cloze` > 0 adds inverse-cloze pseudo-queries, sampled alike, never held out."""
    from engine.train_cross import train_cross_encoder

    _require(run, 2, 1)
    d = _begin(run, 2)
    cfg = run.config.ce_sampling
    t0 = time.perf_counter()
    examples = labelled_examples(run.dataset, run.config.train_split)
    rng = random.Random(cfg.seed)
    if 0 < cfg.max_questions < len(examples):
        examples = sorted(rng.sample(examples, cfg.max_questions), key=lambda e: e.question_id)
    # inverse-cloze pseudo-queries (not in the paper), from the labelled questions' passages in scope
    pseudo = inverse_cloze_examples(
        run.corpus, examples, replace(run.config.inverse_cloze, per_passage=cfg.inverse_cloze)
    )
    m0 = DualEncoder.load(run.step_dir(1) / "model")
    index = dense_index(run, m0)
    both = [*examples, *pseudo]
    rankings = retrieve(m0, index, [Question(e.question_id, e.question) for e in both], cfg.top_k)
    sampled, excluded = sample_ce_negatives(run, both, rankings, rng)
    sampled, bm25_excluded = add_bm25_negatives(run, sampled)
    ce_examples, ce_pseudo = sampled[: len(examples)], sampled[len(examples) :]
    write_examples(sampled, d / "train.jsonl")
    t1 = time.perf_counter()
    ce = CrossEncoder.build(run.config.cross)
    if run.config.freeze_word_embeddings:
        freeze_word_embeddings(ce)

    def progress(fraction: float, message: str) -> None:
        run.report(fraction, f"step 2: {message}")

    # the sampling config decides how many negatives each positive gets; the trainer takes them all
    train_cfg = replace(
        run.config.step2,
        negatives_per_positive=cfg.negatives_per_positive
        + cfg.random_negatives_per_positive
        + cfg.bm25_negatives_per_positive,
    )
    result = train_cross_encoder(ce, ce_examples, run.corpus, train_cfg, progress=progress, train_only=ce_pseudo)
    ce.save(d / "model")
    seconds = {
        "sample": round(t1 - t0, 1),
        "train": round(time.perf_counter() - t1, 1),
        "total": round(time.perf_counter() - t0, 1),
    }
    out = {
        "step": 2,
        "model": "M_C",
        "train_questions": len(ce_examples),
        "pseudo_queries": len(ce_pseudo),
        "train_pairs": sum(len(e.positives) + len(e.negatives) for e in sampled),
        "answer_bearing_negatives_excluded": excluded,
        "bm25_negatives": {
            "per_positive": cfg.bm25_negatives_per_positive,
            "answer_bearing_excluded": bm25_excluded,
        },
        "heldout": result.extra,
        "calibration": {"scale": ce.config.scale, "bias": ce.config.bias},
        "train": _train_summary(result),
        "seconds": seconds,
    }
    config = {"cross": asdict(run.config.cross), "sampling": asdict(cfg), "train": asdict(run.config.step2)}
    if cfg.inverse_cloze:
        config["inverse_cloze"] = asdict(replace(run.config.inverse_cloze, per_passage=cfg.inverse_cloze))
    _finish(run, 2, config, out)
    return out


def sample_ce_negatives(
    run: Run, examples: Sequence[TrainExample], rankings: Sequence[Ranking], rng: random.Random
) -> tuple[list[TrainExample], int]:
    """Step 2's negatives per example (`engine.train_cross.sample_negatives` with `config.ce_sampling`):
    from M_D0's top-k, without answer-bearing paragraphs when `exclude_answer_negatives`, then random ones.
    Returns the examples and how many top-k passages were excluded for containing an answer."""
    from engine.train_cross import sample_negatives

    cfg = run.config.ce_sampling
    answers = {}
    if cfg.exclude_answer_negatives:
        answers = {q.id: q.answers for q in run.dataset.split(run.config.train_split)[0] if q.answers}
    try:
        out, excluded = sample_negatives(
            examples, [r.ids for r in rankings], run.corpus, rng, cfg.negatives_per_positive,
            cfg.random_negatives_per_positive, answers,
        )  # fmt: skip
    except ValueError as e:
        raise PipelineError(f"step 2: {e}") from None
    if excluded:
        log.info("step 2: %d top-%d negatives contain an answer string and were excluded", excluded, cfg.top_k)
    return out, excluded


def add_bm25_negatives(run: Run, examples: Sequence[TrainExample]) -> tuple[list[TrainExample], int]:
    """`ce_sampling.bm25_negatives_per_positive` more negatives per positive from BM25's top-k
    (`engine.train_cross.add_ranked_negatives`), with their own seeded draw so the dense and random
    negatives stay those of a run without them. Returns the examples and how many BM25 passages were
    excluded for containing an answer; with 0 per positive, the examples unchanged."""
    from engine.sparse import BM25Index
    from engine.train_cross import add_ranked_negatives

    cfg = run.config.ce_sampling
    if cfg.bm25_negatives_per_positive == 0:
        return list(examples), 0
    answers = {}
    if cfg.exclude_answer_negatives:
        answers = {q.id: q.answers for q in run.dataset.split(run.config.train_split)[0] if q.answers}
    found = BM25Index.build(run.corpus).search([e.question for e in examples], cfg.top_k)
    out, excluded = add_ranked_negatives(
        examples, found.ids, run.corpus, random.Random(f"bm25-{cfg.seed}"), cfg.bm25_negatives_per_positive, answers
    )
    log.info(
        "step 2: %d BM25 top-%d negatives per positive added (%d answer-bearing skipped)",
        cfg.bm25_negatives_per_positive, cfg.top_k, excluded,
    )  # fmt: skip
    return out, excluded


def check_cross_encoder(run: Run, ce: CrossEncoder, step: int) -> None:
    """Refuse a cross-encoder whose held-out AUC (recorded by step 2) is below `min_ce_auc`."""
    floor = run.config.min_ce_auc
    if floor <= 0:
        return
    held = (ce.config.provenance or {}).get("heldout") or {}
    auc = (held.get("after_calibration") or {}).get("auc")
    if auc is None:
        log.warning("step %d: the cross-encoder has no held-out AUC on record; its decisions are unchecked", step)
        return
    if not auc >= floor:
        raise PipelineError(
            f"step {step}: the cross-encoder's held-out ROC AUC is {auc:.3f}, below min_ce_auc={floor}: its "
            "probabilities would keep or drop passages nearly at random. Train it longer or on cleaner negatives "
            "(step2, ce_sampling), or set min_ce_auc=0 to go on anyway"
        )


def _decision_record(
    run: Run, step: str, q: Question, d, neg: float, pos: float, versions: tuple[str, str]
) -> DecisionRecord:
    return DecisionRecord(
        run_id=run.run_id,
        step=step,
        question_id=q.id,
        question_text=q.text,
        passage_id=d.passage_id,
        dense_rank=d.dense_rank,
        dense_score=round(d.dense_score, 6) if d.dense_score is not None else None,
        ce_prob=round(float(d.ce_prob), 6) if d.ce_prob is not None else None,
        neg_threshold=neg,
        pos_threshold=pos,
        decision=d.decision,
        is_labelled_positive=d.is_positive,
        dual_encoder=versions[0],
        cross_encoder=versions[1],
    )


def step3_denoise(run: Run) -> dict:
    """M_D1 on denoised hard negatives from M_D0's top-k (or undenoised ones with denoise=False)."""
    _require(run, 3, 1)
    cfg = run.config.denoise
    if cfg.denoise:
        _require(run, 3, 2)
    d = _begin(run, 3)
    t0 = time.perf_counter()
    examples = labelled_examples(run.dataset, run.config.train_split)
    questions = [Question(e.question_id, e.question) for e in examples]
    m0_path = run.step_dir(1) / "model"
    m0 = DualEncoder.load(m0_path)
    rankings = retrieve(m0, dense_index(run, m0), questions, max(cfg.top_k, cfg.fill_depth))
    t_retrieve = time.perf_counter()
    ce, ce_path = None, run.step_dir(2) / "model"
    probs: list[dict[str, float]] = [{} for _ in examples]
    if cfg.denoise:
        ce = CrossEncoder.load(ce_path)
        check_cross_encoder(run, ce, 3)
        pairs, owners = [], []
        for i, (ex, ranking) in enumerate(zip(examples, rankings)):
            for pid in ranking.ids[: cfg.top_k]:
                if cfg.score_positives or pid not in ex.positives:
                    pairs.append((ex.question, pid))
                    owners.append(i)
        run.report(0.0, f"step 3: scoring {len(pairs):,} pairs with the cross-encoder")
        scores = score(ce, pairs, run.corpus, batch_size=run.config.ce_batch_size, progress=run.progress)
        for (_, pid), i, p in zip(pairs, owners, scores):
            probs[i][pid] = float(p)
    t_score = time.perf_counter()
    versions = (model_version(run, m0_path, m0), model_version(run, ce_path, ce))
    rng = random.Random(cfg.seed)
    records, denoised = [], []
    for ex, q, ranking, prob in zip(examples, questions, rankings, probs):
        top, deeper = split_ranking(ranking, set(ex.positives), cfg.top_k, prob)
        res = denoise_question(q, ex.positives, top, deeper, cfg, rng)
        denoised.append(res.example)
        records += [
            _decision_record(run, "denoise", q, x, cfg.neg_threshold, run.config.augment.pos_threshold, versions)
            for x in res.decisions
        ]
    write_decisions(records, d / "decisions.jsonl")
    write_examples(denoised, d / "train.jsonl")
    t_decide = time.perf_counter()
    model = _dual_model(run, run.config.init_step3, 1, m0)
    train = _train_dual(run, model, denoised, run.config.step3, 3)
    model.save(d / "model")
    t_train = time.perf_counter()
    metrics = evaluate_dual(run, model)
    counts = Counter(r.decision for r in records)
    short = sum(1 for e in denoised if len(e.negatives) < cfg.num_negatives)
    out = {
        "step": 3,
        "model": "M_D1",
        "denoised": cfg.denoise,
        "train_questions": len(denoised),
        "decisions": dict(counts),
        "questions_short_of_negatives": short,
        **metrics,
        "train": train,
        "seconds": {
            "retrieve": round(t_retrieve - t0, 1),
            "score": round(t_score - t_retrieve, 1),
            "decide": round(t_decide - t_score, 1),
            "train": round(t_train - t_decide, 1),
            "eval": round(time.perf_counter() - t_train, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }
    cfg_out = {"denoise": asdict(cfg), "train": asdict(run.config.step3), "init": run.config.init_step3}
    _finish(run, 3, cfg_out, out)
    return out


def unlabeled_questions(run: Run) -> list[Question]:
    """Questions of the unlabeled split (if present) plus the extra question files, capped by max_questions."""
    from engine.readers import read_questions

    out: list[Question] = []
    split = run.config.unlabeled_split
    if split and split in run.dataset.qrels:
        out += run.dataset.split(split)[0]
    elif split:
        log.warning("the data has no %r split", split)
    for path in run.config.extra_unlabeled:
        extra = read_questions(path)
        log.info("%d extra unlabeled questions from %s", len(extra), path)
        out += extra
    seen, unique = set(), []
    for q in out:
        if q.id in seen:
            raise DataError(f"unlabeled question id {q.id!r} occurs twice (split {split!r} and extra files)")
        seen.add(q.id)
        unique.append(q)
    cap = run.config.augment.max_questions
    if 0 < cap < len(unique):
        unique = random.Random(run.config.augment.seed).sample(unique, cap)
    return unique


def dev_pos_threshold(run: Run, m1: DualEncoder, index: DenseIndex, ce: CrossEncoder) -> dict:
    """Step 4's positive threshold chosen on the dev split (`engine.augment.choose_pos_threshold`).

    The dev questions go through exactly what unlabeled ones do (M_D1's top-k, scored by M_C, the
    top passage chosen as `decide` does); their gold paragraphs and answers, never used for
    training, judge each candidate threshold. Nothing of the test split is read.
    """
    cfg = run.config.augment
    split = run.config.dev_split
    if split not in run.dataset.qrels:
        raise PipelineError(f"choosing the positive threshold on dev needs a {split!r} split in the data")
    questions, qrels = run.dataset.split(split)
    rankings = retrieve(m1, index, questions, cfg.top_k)
    pairs = [(q.text, pid) for q, r in zip(questions, rankings) for pid in r.ids]
    run.report(0.0, f"step 4: scoring {len(pairs):,} dev pairs to choose the positive threshold")
    probs = iter(score(ce, pairs, run.corpus, batch_size=run.config.ce_batch_size).tolist())
    best = []
    for q, r in zip(questions, rankings):
        candidates = [Candidate(pid, rank, s, next(probs)) for rank, (pid, s) in enumerate(zip(r.ids, r.scores), 1)]
        if not candidates:
            continue
        # the top passage exactly as `decide` picks it (every question passes a threshold of -inf)
        top = next(d for d in augment_decide(candidates, float("-inf"), 0.0) if d.decision == PSEUDO_POSITIVE)
        gold = {p for p, g in qrels[q.id].items() if g > 0}
        answer = bool(q.answers) and has_answer(run.corpus[top.passage_id].text, q.answers)
        best.append((top.ce_prob, top.passage_id in gold, answer))
    choice = choose_pos_threshold(
        best, cfg.pos_threshold_grid, cfg.pos_precision_target, cfg.pos_min_support, cfg.pos_threshold
    )
    choice["split"] = split
    row = next(x for x in choice["table"] if x["pos_threshold"] == choice["pos_threshold"])
    if choice["reached"]:
        log.info(
            "positive threshold %.3f chosen on %s: %d of %d questions, gold precision %.3f",
            choice["pos_threshold"],
            split,
            row["pseudo_positives"],
            len(best),
            row["precision_gold"],
        )
    else:
        log.warning(
            "no positive threshold reaches gold precision %.2f on %s with %d pseudo-positives: keeping %.2f",
            cfg.pos_precision_target,
            split,
            cfg.pos_min_support,
            cfg.pos_threshold,
        )
    return choice


def step4_augment(run: Run) -> dict:
    """M_D2 on labelled (step 3's denoised examples) + pseudo-labelled unlabeled questions."""
    cfg = run.config.augment
    questions = unlabeled_questions(run)
    if not questions:
        raise PipelineError(
            f"step 4 needs unlabeled questions: the data has no (or an empty) {run.config.unlabeled_split!r} split "
            "and no extra_unlabeled question files were given"
        )
    _require(run, 4, 2)
    _require(run, 4, 3)
    d = _begin(run, 4)
    t0 = time.perf_counter()
    m1_path, ce_path = run.step_dir(3) / "model", run.step_dir(2) / "model"
    m1, ce = DualEncoder.load(m1_path), CrossEncoder.load(ce_path)
    check_cross_encoder(run, ce, 4)
    index = dense_index(run, m1)
    threshold_choice = None
    if cfg.pos_precision_target > 0:
        threshold_choice = dev_pos_threshold(run, m1, index, ce)
        cfg = replace(cfg, pos_threshold=threshold_choice["pos_threshold"])
    rankings = retrieve(m1, index, questions, cfg.top_k)
    t_retrieve = time.perf_counter()
    pairs = [(q.text, pid) for q, r in zip(questions, rankings) for pid in r.ids]
    run.report(0.0, f"step 4: scoring {len(pairs):,} pairs with the cross-encoder")
    scores = iter(score(ce, pairs, run.corpus, batch_size=run.config.ce_batch_size, progress=run.progress).tolist())
    t_score = time.perf_counter()
    versions = (model_version(run, m1_path, m1), model_version(run, ce_path, ce))
    records, pseudo = [], []
    for q, r in zip(questions, rankings):
        candidates = [Candidate(pid, rank, s, next(scores)) for rank, (pid, s) in enumerate(zip(r.ids, r.scores), 1)]
        decisions = augment_decide(candidates, cfg.pos_threshold, cfg.neg_threshold)
        records += [
            _decision_record(run, "augment", q, x, cfg.neg_threshold, cfg.pos_threshold, versions) for x in decisions
        ]
        ex = pseudo_example(q, decisions, cfg.max_negatives)
        if ex is not None:
            pseudo.append(ex)
    if not pseudo:
        log.warning(
            "no unlabeled question got a pseudo-positive (threshold %.2f): M_D2 trains on labelled data only",
            cfg.pos_threshold,
        )
    labelled = read_examples(run.step_dir(3) / "train.jsonl")
    examples = labelled + pseudo
    check_examples(examples, run.corpus)
    write_decisions(records, d / "decisions.jsonl")
    write_examples(examples, d / "train.jsonl")
    t_decide = time.perf_counter()
    model = _dual_model(run, run.config.init_step4, 3, m1)
    train = _train_dual(run, model, examples, run.config.step4, 4)
    model.save(d / "model")
    t_train = time.perf_counter()
    metrics = evaluate_dual(run, model)
    out = {
        "step": 4,
        "model": "M_D2",
        "unlabeled_questions": len(questions),
        "pseudo_labelled_questions": len(pseudo),
        "labelled_questions": len(labelled),
        "decisions": dict(Counter(r.decision for r in records)),
        "pos_threshold": cfg.pos_threshold,
        "pos_threshold_choice": threshold_choice,
        "pseudo_label_quality": _pseudo_quality(run, records, {q.id: q.answers for q in questions if q.answers}),
        **metrics,
        "train": train,
        "seconds": {
            "retrieve": round(t_retrieve - t0, 1),
            "score": round(t_score - t_retrieve, 1),
            "decide": round(t_decide - t_score, 1),
            "train": round(t_train - t_decide, 1),
            "eval": round(time.perf_counter() - t_train, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }
    _finish(run, 4, {"augment": asdict(cfg), "train": asdict(run.config.step4), "init": run.config.init_step4}, out)
    return out


def _pseudo_quality(run: Run, records: Sequence[DecisionRecord], extra_answers: dict[str, tuple[str, ...]]) -> dict:
    """Pseudo-positive precision against held-back gold / answers (measurement only, never training)."""
    gold, answers = gold_and_answers(run.dataset)
    answers = {**extra_answers, **answers}
    summary = summarize(records, run.corpus, gold, answers)
    out = {}
    for s in summary.steps.get("augment", []):
        if s.decision in ("pseudo_positive", "pseudo_negative"):
            out[s.decision] = {"count": s.count, "gold_fraction": s.gold_fraction, "answer_fraction": s.answer_fraction}
    return out


def gold_and_answers(ds: Dataset) -> tuple[dict[str, set[str]], dict[str, tuple[str, ...]]]:
    """Gold passages (all splits' qrels, grade > 0) and answer strings per question id."""
    gold: dict[str, set[str]] = {}
    for qrels in ds.qrels.values():
        for qid, rels in qrels.items():
            gold.setdefault(qid, set()).update(pid for pid, g in rels.items() if g > 0)
    answers = {qid: q.answers for qid, q in ds.questions.items() if q.answers}
    return gold, answers


# --- driver -------------------------------------------------------------------------------

STEP_FUNCTIONS = {1: step1_dual_encoder, 2: step2_cross_encoder, 3: step3_denoise, 4: step4_augment}


def run_pipeline(run: Run, steps: Sequence[int] = (1, 2, 3, 4)) -> list[StepResult]:
    """Run the listed steps in order; a step with DONE is skipped (its stored metrics are returned)."""
    bad = [s for s in steps if s not in STEP_FUNCTIONS]
    if bad:
        raise PipelineError(f"unknown steps {bad}: steps are 1, 2, 3, 4")
    results = []
    for step in sorted(set(steps)):
        name = STEP_DIRS[step]
        if step == 2 and not run.config.denoise.denoise and 4 not in steps:
            log.info("step 2 skipped: undenoised step 3 needs no cross-encoder")
            continue
        if run.done(step):
            log.info("%s: DONE, skipped", name)
            metrics = json.loads((run.step_dir(step) / "metrics.json").read_text())
            results.append(StepResult(step, name, True, 0.0, metrics))
            continue
        run.report(0.0, f"running {name}")
        t0 = time.perf_counter()
        metrics = STEP_FUNCTIONS[step](run)
        results.append(StepResult(step, name, False, time.perf_counter() - t0, metrics))
        log.info("%s finished in %.0f s", name, time.perf_counter() - t0)
    return results


def load_run_corpus(directory: str | Path) -> Corpus:
    """The corpus copy of a run (for displaying decision records without the source data)."""
    from engine.data import read_beir_corpus

    return read_beir_corpus(Path(directory) / "corpus.jsonl")


def run_summary(directory: str | Path, dataset: Dataset | None = None) -> dict:
    """Decision summary of a run's steps 3 and 4 (correctness where gold / answers exist)."""
    d = Path(directory)
    meta_file = d / "config.json"
    if not meta_file.is_file():
        raise PipelineError(f"{d} is not a pipeline run directory (no config.json)")
    meta = json.loads(meta_file.read_text())
    corpus = load_run_corpus(d)
    records = []
    for step in (3, 4):
        path = d / STEP_DIRS[step] / "decisions.jsonl"
        if path.is_file():
            records += read_decisions(path)
    if not records:
        raise PipelineError(f"{d} has no decision records yet (steps 3 and 4 write them)")
    gold: dict[str, set[str]] = {}
    answers: dict[str, tuple[str, ...]] = {}
    notes = []
    if dataset is None and meta.get("data") and Path(meta["data"]).exists():
        from engine.readers import load_any

        dataset = load_any(meta["data"])
    if dataset is not None:
        if dataset.corpus.fingerprint() != meta.get("corpus_fingerprint"):
            raise PipelineError(f"the data given is another corpus than the one of run {d}")
        gold, answers = gold_and_answers(dataset)
    else:
        notes.append("source data not found: counts only")
    from engine.readers import read_questions

    for path in meta.get("config", {}).get("extra_unlabeled", []):
        if Path(path).is_file():
            answers.update({q.id: q.answers for q in read_questions(path) if q.answers})
    summary = summarize(records, corpus, gold, answers)
    summary = replace(summary, notes=summary.notes + notes)
    return {"run": str(d), "summary": summary, "steps": _step_status(d)}


def _step_status(d: Path) -> dict:
    out = {}
    for name in STEP_DIRS.values():
        m = d / name / "metrics.json"
        out[name] = {
            "done": (d / name / "DONE").is_file(),
            "metrics": json.loads(m.read_text()) if m.is_file() else None,
        }
    return out
