"""Settings of `python -m engine bench` and the models and data its sections share.

`BenchConfig` holds every size and repeat count (`BenchConfig.quick()` the small ones);
`BenchContext` loads the dataset, the fp32 and int8 dual- and cross-encoders and the corpus
vectors once, on first use, so sections can run in any order or alone.

Data: the SQuAD v1.1 dev split of ../shared/data (or $ROCKETQA_SHARED_DATA, or `--data`); when
it is absent the embedded demo/sample_data is used and every result says so.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import Corpus, Dataset, Question
from engine.dual_encoder import DualEncoder, DualEncoderConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("encode", "cross", "quality", "latency", "train", "index", "app", "pipeline")


def default_data() -> str:
    """SQuAD in the shared data directory if present, else the embedded sample."""
    shared = Path(os.environ.get("ROCKETQA_SHARED_DATA") or ROOT.parent / "shared" / "data") / "squad-v1.1-dev"
    return str(shared) if (shared / "corpus.jsonl").is_file() else str(ROOT / "demo" / "sample_data")


@dataclass(frozen=True)
class BenchConfig:
    data: str = ""  # BEIR directory; "" = default_data()
    model: str = ""  # dual-encoder; "" = the packaged all-MiniLM-L6-v2
    cross_encoder: str = ""  # cross-encoder; "" = the packaged MiniLM with a fresh head (speed only)
    output: str = "bench-out"
    quick: bool = False
    sections: tuple[str, ...] = SECTIONS
    repeats: int = 5  # timed repeats of each side, alternated with the baseline
    threads: int = 0  # torch.set_num_threads for both sides; 0 = torch's default (all cores)
    passage_max_length: int = 128  # the and RocketQA's 128 tokens (MiniLM itself declares 256)
    encode_passages: int = 256  # passages per encoding repeat (max length 128)
    encode_batch: int = 64
    ce_pairs: int = 160  # (question, passage) pairs per cross-encoder repeat
    ce_batch: int = 32
    quality_questions: int = 0  # test questions for MRR@10 fp32 vs int8; 0 = the whole split
    quality_split: str = "test"
    # seeded sample of quality-split questions whose fp32 dense top-`rerank_depth` is re-ranked by
    # the fp32 and the int8 cross-encoder (re-ranking MRR@10 loss of the int8 path); 0 = skip
    rerank_quality_questions: int = 300
    int8_skip_ffn_output: bool = False  # QuantizeConfig.skip_ffn_output for the int8 models
    int8_backend: str = "auto"  # QuantizeConfig.backend ("auto": engine.quantize.AUTO_BACKEND per model)
    quick_corpus: bool = False  # quality/latency over the passages of the split's articles only
    latency_queries: int = 50
    rerank_depth: int = 20  # the goal's "re-rank top-20"
    train_steps: int = 4  # timed optimiser steps per training repeat
    train_batch: int = 32
    train_repeats: int = 3
    index_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    index_queries: int = 200
    index_dim: int = 384
    index_factories: tuple[str, ...] = ("HNSW32,Flat", "IVF1024,Flat")  # HNSW: efConstruction 40
    index_max_build_s: float = 600.0  # skip a factory whose extrapolated build time exceeds this
    app_questions: int = 50
    app_clients: int = 8
    app_rounds: int = 5
    pipeline_run: str = ""  # a finished pipeline run directory: its per-step times are reported
    ablation: str = ""  # an ablation output directory: its table is copied next to the speed table
    seed: int = 13

    @classmethod
    def quick_preset(cls, **overrides) -> BenchConfig:
        small = dict(
            quick=True,
            repeats=3,
            encode_passages=128,
            ce_pairs=64,
            quality_questions=300,
            rerank_quality_questions=50,
            quick_corpus=True,
            latency_queries=20,
            train_steps=2,
            train_repeats=2,
            index_sizes=(10_000, 100_000),
            index_queries=100,
            app_questions=10,
            app_rounds=2,
        )
        return replace(cls(**small), **overrides)

    def resolved_data(self) -> str:
        return self.data or default_data()


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "sentence_transformers", "faiss", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            versions[name] = None
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "versions": versions,
    }


@dataclass
class BenchContext:
    """Lazily loaded shared state (mutable on purpose: a cache, not configuration)."""

    config: BenchConfig
    _cache: dict = field(default_factory=dict)

    def _get(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def dataset(self) -> Dataset:
        from engine.readers import load_any

        return self._get("dataset", lambda: load_any(self.config.resolved_data()))

    @property
    def data_label(self) -> str:
        d = self.config.resolved_data()
        return Path(d).name + ("" if "squad" in d.lower() else " (SQuAD not found: embedded sample)")

    def split(self) -> tuple[list[Question], dict]:
        """Questions and qrels of the quality split (the first `quality_questions` when set)."""
        questions, qrels = self.dataset.split(self.config.quality_split)
        if self.config.quality_questions:
            questions = questions[: self.config.quality_questions]
        return questions, {q.id: qrels[q.id] for q in questions if q.id in qrels}

    @property
    def corpus(self) -> Corpus:
        """The retrieval corpus: the whole corpus, or (quick) the passages of the split's articles."""

        def make() -> Corpus:
            full = self.dataset.corpus
            if not self.config.quick_corpus:
                return full
            _, qrels = self.dataset.split(self.config.quality_split)
            titles = {full[pid].title for rel in qrels.values() for pid in rel if pid in full}
            return Corpus([p for p in full.passages if p.title in titles])

        return self._get("corpus", make)

    def passage_texts(self, n: int) -> list[str]:
        """n passage texts ("title. text"), cycling through the corpus if it is smaller."""
        ps = self.dataset.corpus.passages
        return [ps[i % len(ps)].full_text for i in range(n)]

    def pairs(self, n: int) -> tuple[list[str], list]:
        """n (question, passage) pairs: each split question with `rerank_depth` passages, as in re-ranking."""
        questions, _ = self.dataset.split(self.config.quality_split)
        rng = np.random.default_rng(self.config.seed)
        ps = self.dataset.corpus.passages
        qs, out = [], []
        for i in range(n):
            qs.append(questions[(i // self.config.rerank_depth) % len(questions)].text)
            out.append(ps[int(rng.integers(len(ps)))])
        return qs, out

    @property
    def dual(self) -> DualEncoder:
        def make() -> DualEncoder:
            length = self.config.passage_max_length
            if self.config.model:
                return DualEncoder.load(self.config.model, passage_max_length=length)
            return DualEncoder.build(DualEncoderConfig(passage_max_length=length))

        return self._get("dual", make)

    @property
    def quantize_config(self):
        from engine.quantize import QuantizeConfig

        return QuantizeConfig(skip_ffn_output=self.config.int8_skip_ffn_output, backend=self.config.int8_backend)

    def int8_name(self, model: str) -> str:
        """How the int8 `model` ("dual" or "cross") runs, for row labels."""
        backend = self.quantize_config.resolved_backend(model)
        return {"onnx": "ONNX Runtime int8", "torch": "PyTorch dynamic int8"}[backend]

    @property
    def dual_int8(self) -> DualEncoder:
        from engine.quantize import quantize_dual_encoder

        return self._get("dual_int8", lambda: quantize_dual_encoder(self.dual, self.quantize_config))

    @property
    def dual_onnx(self) -> DualEncoder | None:
        """The fp32 dual-encoder run by ONNX Runtime (None without onnxruntime)."""
        from engine.onnx_int8 import available
        from engine.quantize import onnx_dual_encoder

        return self._get("dual_onnx", lambda: onnx_dual_encoder(self.dual) if available() else None)

    @property
    def cross(self) -> CrossEncoder:
        def make() -> CrossEncoder:
            if self.config.cross_encoder:
                return CrossEncoder.load(self.config.cross_encoder)
            torch.manual_seed(self.config.seed)  # the fresh head is random: make it reproducible
            return CrossEncoder.build(CrossEncoderConfig())

        return self._get("cross", make)

    @property
    def cross_int8(self) -> CrossEncoder:
        from engine.quantize import quantize_cross_encoder

        return self._get("cross_int8", lambda: quantize_cross_encoder(self.cross, self.quantize_config))

    @property
    def cross_onnx(self) -> CrossEncoder | None:
        """The fp32 cross-encoder run by ONNX Runtime (None without onnxruntime)."""
        from engine.onnx_int8 import available
        from engine.quantize import onnx_cross_encoder

        return self._get("cross_onnx", lambda: onnx_cross_encoder(self.cross) if available() else None)

    def corpus_vectors(self, int8: bool = False) -> np.ndarray:
        """(n_passages, dim) vectors of `self.corpus` from the fp32 or int8 dual-encoder (timed once)."""
        import time

        key = "vectors_int8" if int8 else "vectors"
        if key not in self._cache:
            model = self.dual_int8 if int8 else self.dual
            t0 = time.perf_counter()
            self._cache[key] = model.encode_passages(self.corpus.passages, batch_size=self.config.encode_batch)
            self._cache[key + "_seconds"] = time.perf_counter() - t0
        return self._cache[key]

    def seconds(self, key: str) -> float | None:
        return self._cache.get(key)
