"""Everything the app's handlers use, loaded once: data, retriever, cross-encoder, store, run, jobs.

`load_services(config)` does all the slow work (reading data, loading models, building or
reading the cached index) so that `demo.ui.build_app(services)` loads nothing itself and
handlers are plain functions over a `Services`.

The cross-encoder is whatever is configured (`--cross-encoder`, else the run's step-2 model,
else one this app trained earlier for the same corpus, kept in the cache). When none of these
exists there is *no* cross-encoder: the app says so and offers `start_cross_encoder_training`,
a background job whose result is swapped in when it finishes. An untrained head is never used
for scores.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from annotations.config import DbLocation, resolve_db_path
from annotations.decisions import import_decisions
from annotations.store import Store
from demo.config import SAMPLE_DATA, AppConfig
from demo.jobs import JobRunner, JobState, Progress
from demo.run import RunView
from engine.cache import default_cache_root
from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import DataError, Dataset
from engine.readers import load_any
from engine.retriever import Retriever, build_retriever

log = logging.getLogger(__name__)

CE_JOB = "train-cross-encoder"
IMPORT_JOB = "import-decisions"
PIPELINE_JOB = "pipeline"
SECONDS_PER_CE_STEP = 3.0  # MiniLM-L6, 16 pairs of ~200 tokens: measured 2-5 s per step on 2 (shared) CPU cores


@dataclass
class Services:
    config: AppConfig
    dataset: Dataset
    data_source: str
    retriever: Retriever
    store: Store
    db: DbLocation
    jobs: JobRunner
    run: RunView | None = None
    cross_encoder: CrossEncoder | None = None
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # questions typed in the Ask tab: id -> text (so `judge` can register them); bounded
    asked: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ce_trained(self) -> bool:
        return self.cross_encoder is not None and self.cross_encoder.is_trained

    @property
    def int8_backend(self) -> str:
        """How an int8 cross-encoder runs here: "onnx" (ONNX Runtime) or "torch" (PyTorch dynamic)."""
        from engine.quantize import QuantizeConfig

        return QuantizeConfig(backend=self.config.int8_backend).resolved_backend("cross")

    def set_cross_encoder(self, ce: CrossEncoder | None) -> None:
        """Swap in a (trained) cross-encoder for scoring and re-ranking."""
        if ce is not None and not ce.is_trained:
            raise ValueError("refusing to use a cross-encoder whose head was never trained")
        if ce is not None and self.config.int8_cross_encoder:
            from engine.quantize import QuantizeConfig, quantize_cross_encoder

            ce = quantize_cross_encoder(ce, QuantizeConfig(backend=self.config.int8_backend))
        elif ce is not None and self.config.onnx_cross_encoder:
            from engine.quantize import onnx_cross_encoder

            ce = onnx_cross_encoder(ce)
        with self._lock:
            self.cross_encoder = ce
            self.retriever.reranker = ce

    def remember_question(self, qid: str, text: str, limit: int = 10_000) -> None:
        with self._lock:
            self.asked[qid] = text
            self.asked.move_to_end(qid)
            while len(self.asked) > limit:
                self.asked.popitem(last=False)

    def trained_ce_dir(self) -> Path:
        """Where a cross-encoder trained by this app for this corpus is kept."""
        root = Path(self.config.cache) if self.config.cache else default_cache_root()
        return root / f"app-cross-encoder-{self.dataset.corpus.fingerprint()}"

    def train_split(self) -> str:
        for name in ("train", *sorted(self.dataset.qrels)):
            if name in self.dataset.qrels:
                return name
        return ""


def _load_data(config: AppConfig, run: RunView | None, notices: list[str]) -> tuple[Dataset, str]:
    source = config.resolved_data()
    if not config.data and run is not None and run.data_path():
        source = run.data_path()
    try:
        return load_any(source), source
    except (DataError, OSError, ImportError) as e:
        if config.data or source == str(SAMPLE_DATA):
            raise
        notices.append(f"Could not load {source} ({e}); serving the embedded sample data instead.")
        log.warning(notices[-1])
        return load_any(SAMPLE_DATA), str(SAMPLE_DATA)


def _find_cross_encoder(config: AppConfig, run: RunView | None, saved: Path) -> str:
    if config.cross_encoder:
        return config.cross_encoder
    if run is not None and run.cross_encoder_dir() is not None:
        return str(run.cross_encoder_dir())
    if (saved / "cross_encoder.json").is_file():
        return str(saved)
    return ""


def _same_model(a: str, b: str) -> bool:
    """Two model arguments name the same model: equal ids, or paths to the same directory."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _shares_notices(config: AppConfig, model: str, cross_encoder: str) -> list[str]:
    """What the app says when the weights of `--rerank-shares` were chosen for other models than it
    serves (shares belong to one dual-encoder and cross-encoder); logged as well."""
    named = dict(config.rerank_shares_models)
    served = {"model": model or "packaged all-MiniLM-L6-v2", "reranker": cross_encoder or "none"}
    notes = []
    for key, what in (("model", "dual-encoder"), ("reranker", "cross-encoder")):
        if key in named and not _same_model(named[key], served[key]):
            notes.append(
                f"The re-ranking weights from {config.rerank_shares_file} were chosen for the {what} "
                f"{named[key]}, but the app serves {served[key]}: they may not suit it."
            )
    for note in notes:
        log.warning(note)
    log.info(
        "re-ranking weights %g (dense), %g (BM25) from %s (chosen on a %s first stage)",
        config.rerank_weight,
        config.rerank_bm25_weight,
        config.rerank_shares_file,
        named.get("retriever", "unnamed"),
    )
    return notes


def load_services(config: AppConfig, import_run: bool = True) -> Services:
    """Load data, models, index (from the cache) and the store; start the decision import."""
    t0 = time.perf_counter()
    notices: list[str] = []
    run = RunView(config.run) if config.run else None
    dataset, source = _load_data(config, run, notices)
    t_data = time.perf_counter()

    model = config.model
    if not model and run is not None and run.dual_encoder_dir() is not None:
        model = str(run.dual_encoder_dir())
    cache_root = config.cache or None
    if cache_root is None and run is not None and (run.dir / "cache").is_dir():
        cache_root = str(run.dir / "cache")  # the pipeline's own index cache (engine.cache layout): warm start
    retriever = build_retriever(dataset.corpus, model=model, bm25=True, cache_root=cache_root)
    retriever.rerank_weight, retriever.rerank_bm25_weight = config.rerank_weight, config.rerank_bm25_weight
    t_index = time.perf_counter()

    env = dict(os.environ)
    if config.db:
        env["ROCKETQA_DB"] = config.db
    db = resolve_db_path(env)
    if config.on_space and db.ephemeral:
        notices.append(db.notice)
    services = Services(
        config, dataset, source, retriever, Store(db.store_config()), db, JobRunner(), run, notices=notices
    )
    services.store.read(lambda _db: None)  # create / migrate now: a bad database file fails at start-up, clearly

    ce_path = _find_cross_encoder(config, run, services.trained_ce_dir())
    if ce_path:
        ce = CrossEncoder.load(ce_path)
        if ce.is_trained:
            services.set_cross_encoder(ce)
        else:
            notices.append(f"The cross-encoder at {ce_path} has an untrained head; it is not used for scores.")
    if config.rerank_shares_file:
        notices.extend(_shares_notices(config, model, ce_path))
    t_ce = time.perf_counter()
    services.timings = {
        "data_s": t_data - t0,
        "index_s": t_index - t_data,
        "cross_encoder_s": t_ce - t_index,
        "total_s": t_ce - t0,
    }
    log.info(
        "services loaded in %.1f s (%s)", t_ce - t0, ", ".join(f"{k}={v:.1f}" for k, v in services.timings.items())
    )
    if import_run and run is not None and run.decision_files():
        start_decision_import(services)
    return services


# --- background jobs ----------------------------------------------------------------------


def start_decision_import(services: Services) -> JobState:
    """Import the run's decision files into the annotation store (idempotent), in the background."""
    run = services.run
    if run is None:
        raise ValueError("no pipeline run is loaded")
    corpus = run.corpus_path() or _corpus_file(services)

    def job(progress: Progress) -> int:
        files = run.decision_files()
        n = 0
        for i, path in enumerate(files):
            progress(i / max(len(files), 1), f"importing {path.name} of {path.parent.name}")
            n += import_decisions(services.store, path, corpus).n_inserted
        return n

    return services.jobs.start(IMPORT_JOB, job)


def _corpus_file(services: Services) -> Path | None:
    path = Path(services.data_source) / "corpus.jsonl"
    return path if path.is_file() else None


def estimate_ce_minutes(config: AppConfig) -> float:
    return config.ce_train_steps * SECONDS_PER_CE_STEP / 60


def ce_training_examples(services: Services, seed: int = 13) -> list:
    """Training questions with their labelled positives, negatives sampled from the dense top-k
    (without passages that contain one of the question's answers) and random negatives."""
    from engine.examples import examples_from_split
    from engine.train_cross import sample_negatives

    split = services.train_split()
    if not split:
        raise ValueError("the data has no labelled split to train a cross-encoder on")
    examples = examples_from_split(services.dataset, split)
    if not examples:
        raise ValueError(f"split {split!r} has no question with a positive passage")
    mode = "dense" if "dense" in services.retriever.modes else services.retriever.modes[0]
    depth = services.config.ce_train_depth
    rankings = services.retriever.search_batch([ex.question for ex in examples], k=depth, mode=mode)
    questions = services.dataset.split(split)[0]
    answers = {q.id: q.answers for q in questions if q.answers}
    out, _ = sample_negatives(
        examples,
        [[h.passage.id for h in hits] for hits in rankings],
        services.dataset.corpus,
        random.Random(seed),
        services.config.ce_train_negatives,
        services.config.ce_train_random_negatives,
        answers,
    )
    return out


def reranking_check(services: Services, ce: CrossEncoder, k: int = 10, limit: int = 200) -> dict:
    """MRR@k of the dense top-k and of its cross-encoder re-ranking on a held-out split (dev, else test).

    Shown next to the cross-encoder so that a weak one (few training steps on little data) is
    presented as what it is.
    """
    split = next((s for s in ("dev", "test") if s in services.dataset.qrels), "")
    if not split:
        return {}
    questions, qrels = services.dataset.split(split)
    questions = questions[:limit]
    mode = "dense" if "dense" in services.retriever.modes else services.retriever.modes[0]
    rankings = services.retriever.search_batch([q.text for q in questions], k=k, mode=mode)

    def rr(ids: list[str], gold: dict[str, int]) -> float:
        return next((1.0 / r for r, pid in enumerate(ids, 1) if gold.get(pid, 0) > 0), 0.0)

    dense = reranked = 0.0
    for q, hits in zip(questions, rankings):
        probs = ce.score(q.text, [h.passage for h in hits])
        order = sorted(range(len(hits)), key=lambda i: -probs[i])
        dense += rr([h.passage.id for h in hits], qrels[q.id])
        reranked += rr([hits[i].passage.id for i in order], qrels[q.id])
    n = max(len(questions), 1)
    return {"split": split, "questions": len(questions), "k": k, "dense_mrr": dense / n, "reranked_mrr": reranked / n}


def start_cross_encoder_training(services: Services) -> JobState:
    """Train a cross-encoder from the packaged MiniLM in the background; swap it in when done."""
    from engine.train_cross import CrossTrainConfig, train_cross_encoder

    config = services.config

    def job(progress: Progress) -> CrossEncoder:
        progress(0.0, "sampling negatives from the dense top-k")
        examples = ce_training_examples(services)
        progress(0.02, "loading the base model")
        ce = CrossEncoder.build(CrossEncoderConfig(model=config.ce_base_model))
        batch = CrossTrainConfig().batch_size
        negatives = config.ce_train_negatives + config.ce_train_random_negatives
        steps_per_epoch = max(1, len(examples) * (1 + negatives) // batch)
        train_config = CrossTrainConfig(
            max_steps=config.ce_train_steps,
            negatives_per_positive=negatives,
            learning_rate=config.ce_train_learning_rate,
            epochs=max(1, math.ceil(config.ce_train_steps / steps_per_epoch)),
        )
        result = train_cross_encoder(ce, examples, services.dataset.corpus, train_config, progress=progress)
        log.info("cross-encoder trained: %d steps in %.0f s", result.steps, result.seconds)
        progress(0.99, "checking it on the dev split")
        check = reranking_check(services, ce)
        ce.config = replace(ce.config, provenance={**ce.config.provenance, "app_check": check})
        if ce.is_trained:
            ce.save(services.trained_ce_dir())
        return ce

    def done(ce: CrossEncoder) -> None:
        services.set_cross_encoder(ce)

    return services.jobs.start(CE_JOB, job, on_done=done)
